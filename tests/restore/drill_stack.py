"""The restore drill's stack (tests/restore): the smallest stack that has backups.

One database host (a one-member Patroni cluster with its own etcd) and the backup repository
host, no app tier: provision, common, database and backup playbooks only, on the real local
inventory (tests/e2e/stack.py Stack) with the host kinds cut down in group_vars/all/95-drill.yml.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from stack import Stack, default_stack  # noqa: E402

# A stack of this checkout (`restore-<4 hex>` on 10.<100-199>.x), like the e2e test's, so a CI
# workspace and a working copy on one machine never share it.
_DEFAULT_NAME, _DEFAULT_OCTET = default_stack("restore")
NAME = os.environ.get("RESTORE_STACK", _DEFAULT_NAME)
OCTET = int(os.environ.get("RESTORE_OCTET", str(_DEFAULT_OCTET)))
PLAYBOOKS = ["playbooks/provision.yml", "playbooks/common.yml", "playbooks/database.yml", "playbooks/backup.yml"]

DRILL_VARS = """---
# tests/restore: only the database host(s) and the backup repository host.
local_platform_hosts:
  - name: db
    count: "{{ db_node_count }}"
    groups: [db, etcd, monitored]
    networks: [db]
    first_address: 11
    data_volume: true
  - name: backup
    groups: [backup_repo, monitored]
    networks: [db]
    first_address: 9
    data_volume: true
"""


def drill_stack(workdir: Path | None = None) -> Stack:
    kwargs = {"workdir": workdir} if workdir else {}
    s = Stack(NAME, OCTET, app_instances=0, db_nodes=1, **kwargs)
    (s.inventory / "group_vars" / "all" / "95-drill.yml").write_text(DRILL_VARS)
    return s

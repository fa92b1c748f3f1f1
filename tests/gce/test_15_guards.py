"""Changes that would touch data are refused with a clear message and no write (runs before
the resize test, on the provisioned double; only the roles up to gce_db_vms, to keep it short)."""
from __future__ import annotations

import pytest
from gce_harness import HERE, run_playbook

READ_ONLY_POSTS = (":getIamPolicy", "/listInstances", "/getHealth")
CASES = {
    "data disk type": ({"db_data_disk_type": "pd-balanced"}, "type and key cannot change"),
    "smaller data disk": ({"db_data_disk_size_gb": 100}, "it cannot shrink"),
    "zones reordered": ({"gce_zones": ["europe-west1-c", "europe-west1-b", "europe-west1-d"]},
                        "Moving a database node to another zone is not automatic"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_without_writes(provisioned, case):
    double = provisioned["double"]
    override, message = CASES[case]
    start = len(double.calls())
    run = run_playbook(double, extra={**provisioned["extra"], **override}, playbook=HERE / "playbooks" / "db_only.yml")
    assert run.rc != 0
    assert message in " ".join(run.out.split()), run.out[-3000:]
    writes = [f"{c['method']} {c['path']}" for c in double.calls()[start:]
              if c["method"] not in ("GET", "CONNECT") and not c["path"].endswith(READ_ONLY_POSTS)]
    assert writes == []

"""The app's data seen from the allowlisted client, through the database endpoint: shared by the
tests that must prove an operation lost nothing (tests/patch, tests/upgrade).

`stack` is a tests/e2e Stack; the client container needs psycopg2 (ensure_psycopg2) and the CA
copied in (tests/failover Stack does that, at `ca_in_client`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


def _e2e():
    name = "vpcstack_e2e_stack"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("stack.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


CA_IN_CLIENT = "/tmp/vpcstack-ca.crt"   # where tests/failover's Stack copies the CA


def ensure_psycopg2(stack) -> None:
    """python3-psycopg2 in the allowlisted client (a test client, not a patched host)."""
    _e2e().sh("docker", "exec", stack.client_allowed, "sh", "-c",
              "python3 -c 'import psycopg2' 2>/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update -qq && "
              "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "
              "--no-install-recommends python3-psycopg2; }", timeout=900)


def client_python(stack, code: str, timeout: float = 120) -> str:
    """Run Python (psycopg2) in the client container as the schema owner, through the endpoint."""
    pw = (stack.secrets / "postgresql" / "exposure_owner.password").read_text().strip()
    dsn = (f"host={stack.container('db-lb')} port=5432 dbname=exposure user=exposure_owner "
           f"sslmode=verify-full sslrootcert={CA_IN_CLIENT} connect_timeout=3")
    prog = ("import psycopg2, json, sys\n"
            f"conn = psycopg2.connect({dsn!r})\nconn.autocommit = True\ncur = conn.cursor()\n" + code)
    return _e2e().sh("docker", "exec", "-i", "-e", f"PGPASSWORD={pw}", stack.client_allowed, "python3", "-",
                     input=prog, timeout=timeout).stdout


def data_checksum(stack) -> dict:
    """Row count and md5 of every row of the app's data table, in a fixed order."""
    out = client_python(stack, (
        "cur.execute(\"SELECT count(*), md5(coalesce(string_agg(f::text, '|' ORDER BY f::text), '')) "
        "FROM exposure.flows f\")\nprint(json.dumps(cur.fetchone()))\n"))
    rows, md5 = json.loads(out)
    return {"rows": rows, "md5": md5}


def probe_table(stack, table: str) -> None:
    """A fresh table for the writer probe (tests/failover/writer.py)."""
    client_python(stack, f"cur.execute('DROP TABLE IF EXISTS {table}')\n"
                         f"cur.execute('CREATE TABLE {table} "
                         "(id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())')\n")


def stored_ids(stack, table: str) -> set[int]:
    return set(json.loads(client_python(stack, f"cur.execute('SELECT id FROM {table}')\n"
                                               "print(json.dumps([r[0] for r in cur.fetchall()]))\n")))

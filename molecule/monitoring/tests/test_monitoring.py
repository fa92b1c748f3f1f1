"""Monitoring and the Redis example on two stand-ins, checked from the control node.

mmon-mon-1: Prometheus, Redis and their exporters; mmon-db-1: a one-member Patroni cluster with
postgres_exporter. Prometheus is queried over TLS with the stack's CA; hosts are entered with
`docker exec` only to look at files, processes and the database catalog.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

REPO = pathlib.Path(os.environ["VPCSTACK_REPO"])
STACK = os.environ.get("VPCSTACK_STACK", "mmon")
EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
INVENTORY = os.environ.get("VPCSTACK_TEST_INVENTORY", os.path.join(EPHEMERAL, "inventory"))
SECRETS = pathlib.Path.home() / ".local/share/vpcstack" / STACK
CA = str(SECRETS / "pki/ca.crt")
MON, DB = f"{STACK}-mon-1", f"{STACK}-db-1"
MON_APP_ADDRESS, MON_DB_ADDRESS, DB_ADDRESS = "10.46.1.7", "10.46.2.7", "10.46.2.11"
PROMETHEUS = f"https://{MON_APP_ADDRESS}:9090"

sys.path.insert(0, str(REPO / "tests" / "monitoring"))
import check_targets  # noqa: E402


def sh(container: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", "exec", container, "sh", "-c", command], capture_output=True, text=True,
                          timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"{container}: {command} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def api(path: str, **params) -> dict:
    context = ssl.create_default_context(cafile=CA)
    url = f"{PROMETHEUS}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return json.load(response)["data"]


def query(expr: str) -> list[dict]:
    return api("/api/v1/query", query=expr)["result"]


def wait_for(expr: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = query(expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(3)


def test_every_target_is_up_and_matches_the_inventory(capsys):
    ok = check_targets.check([INVENTORY], [], timeout=120, stack=STACK)
    print(capsys.readouterr().out)
    assert ok


def test_all_rule_files_are_loaded():
    groups = api("/api/v1/rules")["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"}
    import yaml
    defined = {rule["alert"] for path in (REPO / "monitoring/rules").glob("*.yml")
               for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule}
    assert loaded == defined
    assert all(group["rules"] and all(r["health"] == "ok" for r in group["rules"]) for group in groups)


def test_no_unexpected_alert_and_the_missing_backup_is_noticed():
    # No pgBackRest stanza is configured in this scenario (that is issue 7's role): the expected
    # stanza is reported missing (-1), and BackupStanzaNotOk is on its way (15 minutes "for").
    status = wait_for(f'pgbackrest_stanza_status_code{{host="{DB}", stanza="{STACK}"}}')
    assert [float(s["value"][1]) for s in status] == [-1.0]
    alerts = api("/api/v1/alerts")["alerts"]
    names = {a["labels"]["alertname"] for a in alerts}
    assert names <= {"BackupStanzaNotOk"}, alerts
    assert "BackupStanzaNotOk" in names


def test_database_metrics_from_patroni_and_postgres_exporter():
    assert [float(s["value"][1]) for s in wait_for(f'patroni_primary{{host="{DB}"}}')] == [1.0]
    assert [float(s["value"][1]) for s in wait_for(f'pg_up{{host="{DB}"}}')] == [1.0]
    assert [float(s["value"][1]) for s in wait_for(f'pg_wal_receiver_in_recovery{{host="{DB}"}}')] == [0.0]
    assert wait_for(f'pg_stat_database_xact_commit{{host="{DB}", datname="postgres"}}')
    # The recording rule exists (empty with no replica).
    assert query("vpcstack:patroni_replication_lag:bytes") == []


def test_certificate_expiry_metrics_cover_the_pki_files():
    series = wait_for("vpcstack_tls_certificate_not_after_timestamp_seconds")
    paths = {(s["metric"]["host"], s["metric"]["path"]) for s in series}
    assert (DB, "/etc/vpcstack/pki/ca.crt") in paths
    assert (DB, "/etc/vpcstack/pki/postgresql.crt") in paths
    assert (MON, "/etc/vpcstack/pki/prometheus.crt") in paths
    host_certs = [s for s in series if not s["metric"]["path"].endswith("/ca.crt")]
    days_left = [(float(s["value"][1]) - time.time()) / 86400 for s in host_certs]
    assert all(300 < d <= 366 for d in days_left), days_left
    assert [float(s["value"][1]) for s in query("vpcstack_tls_certificate_read_errors")] == [0.0, 0.0]


def test_exporters_serve_tls_only():
    # Plain HTTP to a TLS port: the exporter answers 400, it never serves metrics without TLS.
    for port in (9100, 9121):
        proc = sh(MON, f"python3 -c \"import urllib.request,urllib.error\n"
                       f"try: urllib.request.urlopen('http://localhost:{port}/metrics', timeout=5)\n"
                       f"except urllib.error.HTTPError as e: print(e.code)\"")
        assert proc.stdout.strip() == "400", (port, proc.stdout, proc.stderr)


def test_firewall_admits_only_the_monitoring_host_to_the_exporters():
    def reachable(container: str, address: str, port: int) -> bool:
        code = (f"import socket\ns=socket.socket()\ns.settimeout(3)\n"
                f"print(s.connect_ex(('{address}', {port})))")
        return sh(container, f"python3 -c \"{code}\"").stdout.strip() == "0"

    assert reachable(MON, DB_ADDRESS, 9100)
    assert reachable(MON, DB_ADDRESS, 9187)
    # The control node reaches sshd and Prometheus (its UI), not the exporters.
    with pytest.raises(OSError):
        socket.create_connection((DB_ADDRESS, 9100), timeout=3).close()
    socket.create_connection((MON_APP_ADDRESS, 9090), timeout=3).close()
    # The database host is not the monitoring host: it cannot scrape the monitoring host's exporter.
    assert not reachable(DB, MON_DB_ADDRESS, 9100)


def test_postgres_exporter_role_is_least_privilege_and_its_password_never_plain():
    row = sh(DB, "su postgres -c \"psql -XAtc \\\"SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
                 "rolconnlimit, pg_has_role('postgres_exporter', 'pg_monitor', 'MEMBER'), "
                 "left(rolpassword, 14) FROM pg_authid WHERE rolname = 'postgres_exporter'\\\"\"").stdout.strip()
    assert row == "f|f|f|f|3|t|SCRAM-SHA-256$", row
    secret = (SECRETS / "monitoring/postgres_exporter.password")
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    password = secret.read_text().strip()
    on_host = sh(DB, "stat -c '%U %a' /etc/prometheus/postgres_exporter.password").stdout.split()
    assert on_host == ["prometheus", "600"]
    env = sh(DB, "cat /etc/default/prometheus-postgres-exporter").stdout
    assert password not in env and "sslmode=verify-full" in env
    logs = sh(DB, "journalctl --no-pager -q; cat /var/log/postgresql/* 2>/dev/null; "
                  "cat /data/*/log/* /data/*/*/log/* 2>/dev/null", check=False).stdout
    assert password not in logs


def redis_session(address: str, server_name: str, commands: list[list[str]]) -> list[bytes]:
    """RESP over TLS (the certificate verified against the CA); one reply line per command."""
    context = ssl.create_default_context(cafile=CA)
    with socket.create_connection((address, 6379), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as conn:
            replies = []
            for command in commands:
                payload = f"*{len(command)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in command)
                conn.sendall(payload.encode())
                replies.append(conn.recv(4096).split(b"\r\n")[0])
            return replies


def test_redis_is_tls_only_with_acl_users():
    app = (SECRETS / "redis/app.password").read_text().strip()
    exporter = (SECRETS / "redis/exporter.password").read_text().strip()
    # The control node is on the app subnet (its gateway): admitted by the firewall.
    replies = redis_session(MON_APP_ADDRESS, MON, [
        ["PING"],                                   # before AUTH: refused
        ["AUTH", "app", app], ["SET", "k", "v"], ["GET", "k"], ["CONFIG", "GET", "maxmemory"], ["FLUSHALL"],
    ])
    assert replies[0].startswith(b"-NOAUTH")
    assert replies[1:4] == [b"+OK", b"+OK", b"$1"]
    assert replies[4].startswith(b"-NOPERM") and replies[5].startswith(b"-NOPERM")
    replies = redis_session(MON_APP_ADDRESS, MON, [["AUTH", "exporter", exporter], ["INFO", "server"], ["GET", "k"]])
    assert replies[0] == b"+OK" and replies[1].startswith(b"$") and replies[2].startswith(b"-NOPERM")
    replies = redis_session(MON_APP_ADDRESS, MON, [["AUTH", "default", "nopass"]])
    assert replies[0].startswith(b"-WRONGPASS")
    # Plain text is not spoken on the port.
    with socket.create_connection((MON_APP_ADDRESS, 6379), timeout=5) as raw:
        raw.sendall(b"*1\r\n$4\r\nPING\r\n")
        raw.settimeout(5)
        try:
            assert not raw.recv(64).startswith(b"+PONG")
        except (ConnectionResetError, socket.timeout):
            pass
    conf = sh(MON, "cat /etc/redis/redis.conf").stdout
    assert app not in conf and exporter not in conf and "port 0" in conf


def test_redis_refuses_the_database_subnet():
    code = f"import socket\ns=socket.socket()\ns.settimeout(3)\nprint(s.connect_ex(('{MON_DB_ADDRESS}', 6379)))"
    assert sh(DB, f"python3 -c \"{code}\"").stdout.strip() != "0"


def test_redis_metrics_reach_prometheus():
    assert [float(s["value"][1]) for s in wait_for(f'redis_up{{host="{MON}"}}')] == [1.0]
    assert wait_for(f'redis_memory_max_bytes{{host="{MON}"}}')[0]["value"][1] == str(128 * 1024 * 1024)

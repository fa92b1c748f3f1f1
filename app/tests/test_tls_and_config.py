"""TLS is verify-full and mandatory; configuration is validated at start-up."""

import dataclasses
import os
import subprocess
import sys

import psycopg2
import pytest

from exposure_api import db
from exposure_api.config import ConfigError, Settings


def test_plaintext_connection_is_refused(pg):
    with pytest.raises(psycopg2.OperationalError, match="no encryption|pg_hba"):
        pg.connect("exposure_app", "exposure", pg.app_password, sslmode="disable")


def test_wrong_ca_is_refused(pg):
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        pg.connect("exposure_app", "exposure", pg.app_password, sslrootcert=str(pg.wrong_ca_file))


def test_hostname_mismatch_is_refused(pg):
    # The server listens on 127.0.0.2 too, but its certificate names only localhost/127.0.0.1.
    with pytest.raises(psycopg2.OperationalError, match="does not match|server certificate"):
        pg.connect("exposure_app", "exposure", pg.app_password, host="127.0.0.2")


def test_wrong_password_is_refused(pg):
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        pg.connect("exposure_app", "exposure", "not-the-password")


def test_app_connections_use_verified_tls_and_scram(seeded, settings, pg):
    kwargs = settings.dsn_kwargs()
    assert kwargs["sslmode"] == "verify-full"
    conn = psycopg2.connect(**kwargs)
    with conn.cursor() as cur:
        cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl, version = cur.fetchone()
        assert ssl is True and version.startswith("TLSv1.")
    conn.close()
    admin = pg.superuser("postgres")
    with admin.cursor() as cur:
        cur.execute("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'exposure_app'")
        assert cur.fetchone()[0] is True
    admin.close()


def test_app_with_wrong_ca_is_not_ready_and_answers_503(seeded, settings, pg):
    from exposure_api.web import create_app
    bad = dataclasses.replace(settings, db_sslrootcert=str(pg.wrong_ca_file))
    db.reset_pool()
    try:
        client = create_app(bad).test_client()
        assert client.get("/readyz").status_code == 503
        resp = client.get("/address/exposure/direct?address=1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez")
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    finally:
        db.reset_pool()


def test_missing_configuration_is_reported_all_at_once():
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"EXPOSURE_DB_PORT": "abc", "EXPOSURE_BIND": "nope"})
    text = str(exc.value)
    for name in ("EXPOSURE_DB_HOST", "EXPOSURE_DB_SSLROOTCERT", "EXPOSURE_DB_PASSWORD_FILE",
                 "EXPOSURE_DB_PORT", "EXPOSURE_BIND"):
        assert name in text


def test_world_readable_password_file_is_refused(pg, tmp_path):
    p = tmp_path / "pw"
    p.write_text("secret\n")
    p.chmod(0o644)
    with pytest.raises(ConfigError, match="world-readable"):
        Settings.from_env(pg.env(EXPOSURE_DB_PASSWORD_FILE=str(p)))


def test_defaults(pg):
    s = Settings.from_env(pg.env())
    assert (s.db_port, s.db_name, s.db_user, s.db_migration_user, s.bind) == (
        pg.port, "exposure", "exposure_app", "exposure_owner", "0.0.0.0:8080")
    env = {k: v for k, v in pg.env().items() if k not in ("EXPOSURE_DB_PORT",)}
    assert Settings.from_env(env).db_port == 5432
    assert s.worker_count(cpu_count=2) == 5
    assert "password" not in repr(s).lower() or "password_file" in repr(s)
    assert pg.app_password not in repr(s)


def test_cli_exits_2_with_a_clear_message_and_no_secret(pg):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPOSURE_")}
    env.update(pg.env(EXPOSURE_DB_PORT="99999"))
    r = subprocess.run([sys.executable, "-m", "exposure_api.cli", "serve"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "EXPOSURE_DB_PORT must be between 1 and 65535" in r.stderr
    assert pg.app_password not in r.stderr + r.stdout


def test_statement_timeout_gives_503_and_keeps_the_connection(seeded, settings, owner_conn):
    from exposure_api.web import create_app
    quick = dataclasses.replace(settings, db_statement_timeout_ms=300)
    db.reset_pool()
    try:
        client = create_app(quick).test_client()
        url = "/address/exposure/direct?address=1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez"
        assert client.get(url).status_code == 200
        owner_conn.autocommit = False
        with owner_conn.cursor() as cur:
            cur.execute("LOCK TABLE exposure.flows IN ACCESS EXCLUSIVE MODE")
        try:
            resp = client.get(url)
            assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
        finally:
            owner_conn.rollback()
            owner_conn.autocommit = True
        assert client.get(url).status_code == 200
        assert db.get_pool(quick).stats()["idle"] == 1  # the timed-out connection was kept
    finally:
        db.reset_pool()

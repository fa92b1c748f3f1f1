"""A throwaway PostgreSQL 15 for tests and the benchmark.

initdb in a temporary directory, TLS with a CA generated here (server certificate for
localhost/127.0.0.1), SCRAM passwords, pg_hba with `hostssl` lines only, on a free loopback port.
postgres refuses to run as root: when we are root, every server command runs as the `postgres`
system user through `runuser`, and the directory is handed to that user.

Creates the roles `exposure_owner` (owns database `exposure`) and `exposure_app` (LOGIN only),
and writes their passwords to 0600 files, like the Ansible database role does on real hosts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("EXPOSURE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _make_server_cert(ca_key, ca_cert, hosts: list[str]):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class PgCluster:
    base: Path
    port: int
    host: str = "localhost"
    superuser_password: str = ""
    owner_password: str = ""
    app_password: str = ""
    extra_conf: str = ""
    _as_postgres: bool = False

    # ---- paths -----------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def ca_file(self) -> Path:
        return self.base / "client" / "ca.pem"

    @property
    def wrong_ca_file(self) -> Path:
        return self.base / "client" / "wrong-ca.pem"

    @property
    def owner_password_file(self) -> Path:
        return self.base / "client" / "owner.password"

    @property
    def app_password_file(self) -> Path:
        return self.base / "client" / "app.password"

    # ---- lifecycle -------------------------------------------------------------------------
    @classmethod
    def create(cls, extra_conf: str = "") -> "PgCluster":
        base = Path(tempfile.mkdtemp(prefix="exposure-pg-"))
        self = cls(base=base, port=free_port(), superuser_password=secrets.token_urlsafe(24),
                   owner_password=secrets.token_urlsafe(24), app_password=secrets.token_urlsafe(24),
                   extra_conf=extra_conf, _as_postgres=os.geteuid() == 0)
        try:
            self._init()
        except BaseException:
            self.destroy()
            raise
        return self

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)

    def _chown(self, path: Path) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _init(self) -> None:
        server = self.base / "server"
        client = self.base / "client"
        for d in (server, client):
            d.mkdir(mode=0o700)
        self._chown(self.base)
        self._chown(server)
        ca_key, ca_cert = _make_ca("exposure test CA")
        srv_key, srv_cert = _make_server_cert(ca_key, ca_cert, ["localhost", "127.0.0.1"])
        _, wrong_ca = _make_ca("some other CA")
        (client / "ca.pem").write_bytes(_pem_cert(ca_cert))
        (client / "wrong-ca.pem").write_bytes(_pem_cert(wrong_ca))
        for name, value in (("owner.password", self.owner_password), ("app.password", self.app_password)):
            p = client / name
            p.write_text(value + "\n")
            p.chmod(0o600)
        for name, data in (("server.crt", _pem_cert(srv_cert)), ("server.key", _pem_key(srv_key))):
            p = server / name
            p.write_bytes(data)
            p.chmod(0o600)
            self._chown(p)
        pwfile = server / "superuser.password"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
                  "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        (self.data / "pg_hba.conf").write_text(
            "# TLS only, SCRAM only; anything else has no matching line and is rejected.\n"
            "hostssl all all 127.0.0.0/8 scram-sha-256\n"
            "hostssl all all ::1/128 scram-sha-256\n")
        (self.data / "postgresql.auto.conf").write_text(f"""
listen_addresses = '127.0.0.1,127.0.0.2'
port = {self.port}
unix_socket_directories = '{server}'
ssl = on
ssl_cert_file = '{server / "server.crt"}'
ssl_key_file = '{server / "server.key"}'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = '256MB'
logging_collector = off
log_min_messages = warning
{self.extra_conf}
""")
        self._chown(self.data / "pg_hba.conf")
        self._chown(self.data / "postgresql.auto.conf")
        self.start()
        admin = self.connect("postgres", "postgres", self.superuser_password)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("CREATE ROLE exposure_owner LOGIN PASSWORD %s", (self.owner_password,))
            cur.execute("CREATE ROLE exposure_app LOGIN PASSWORD %s", (self.app_password,))
            cur.execute("CREATE DATABASE exposure OWNER exposure_owner")
            cur.execute("REVOKE ALL ON DATABASE exposure FROM PUBLIC")
            cur.execute("GRANT CONNECT ON DATABASE exposure TO exposure_app")
        admin.close()

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server" / "log"),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- clients ---------------------------------------------------------------------------
    def connect(self, user: str, dbname: str, password: str, **kw):
        import psycopg2
        params = dict(host=self.host, port=self.port, user=user, dbname=dbname, password=password,
                      sslmode="verify-full", sslrootcert=str(self.ca_file), connect_timeout=5)
        params.update(kw)
        return psycopg2.connect(**params)

    def superuser(self, dbname: str = "exposure"):
        return self.connect("postgres", dbname, self.superuser_password)

    def env(self, **overrides: str) -> dict[str, str]:
        """EXPOSURE_* variables pointing at this cluster."""
        env = {
            "EXPOSURE_DB_HOST": self.host,
            "EXPOSURE_DB_PORT": str(self.port),
            "EXPOSURE_DB_NAME": "exposure",
            "EXPOSURE_DB_USER": "exposure_app",
            "EXPOSURE_DB_PASSWORD_FILE": str(self.app_password_file),
            "EXPOSURE_DB_SSLROOTCERT": str(self.ca_file),
            "EXPOSURE_DB_MIGRATION_USER": "exposure_owner",
            "EXPOSURE_DB_MIGRATION_PASSWORD_FILE": str(self.owner_password_file),
        }
        env.update(overrides)
        return env

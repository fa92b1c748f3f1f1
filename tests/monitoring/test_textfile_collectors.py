"""The textfile collectors' scripts on the control node: certificate expiry and pgBackRest info."""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from conftest import REPO, run
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_SCRIPT = REPO / "roles/node_exporter/files/vpcstack-cert-metrics"
PGBR_SCRIPT = REPO / "roles/postgres_exporter/files/vpcstack-pgbackrest-metrics"
FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def certificate(name: str, days: int) -> tuple[bytes, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), int((now + datetime.timedelta(days=days)).timestamp())


def samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def check_metrics(promtool: str, path: pathlib.Path) -> None:
    result = run([promtool, "check", "metrics"], input=path.read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_certificate_metrics(tmp_path, promtool):
    pki = tmp_path / "pki"
    pki.mkdir()
    host_pem, host_expiry = certificate("vpcstack-db-1", 20)
    ca_pem, ca_expiry = certificate("vpcstack internal CA", 3650)
    (pki / "host.crt").write_bytes(host_pem)
    (pki / "chain.crt").write_bytes(host_pem + ca_pem)
    (pki / "broken.crt").write_text("not a certificate\n")
    (pki / "host.key").write_text("-----BEGIN PRIVATE KEY-----\nnever read\n")
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    out = out_dir / "tls_certificates.prom"
    result = run([sys.executable, str(CERT_SCRIPT), str(out), f"{pki}/*.crt"])
    assert result.returncode == 0, result.stderr
    assert "broken.crt" in result.stderr
    values = samples(out.read_text())
    name = "vpcstack_tls_certificate_not_after_timestamp_seconds"
    assert values[f'{name}{{path="{pki}/host.crt",subject="CN=vpcstack-db-1",index="0"}}'] == host_expiry
    assert values[f'{name}{{path="{pki}/chain.crt",subject="CN=vpcstack-db-1",index="0"}}'] == host_expiry
    assert values[f'{name}{{path="{pki}/chain.crt",subject="CN=vpcstack internal CA",index="1"}}'] == ca_expiry
    assert values["vpcstack_tls_certificate_read_errors"] == 1
    assert values["vpcstack_tls_certificate_files"] == 3
    assert not any("host.key" in k for k in values)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in out_dir.iterdir()] == ["tls_certificates.prom"], "no temporary file left behind"
    check_metrics(promtool, out)


EXPECTED = {
    "pgbackrest-info-backups.json": {
        "pgbackrest_info_success": 1,
        'pgbackrest_stanza_status_code{stanza="main"}': 0,
        'pgbackrest_stanza_status_code{stanza="vpcstack"}': -1,
        'pgbackrest_backups{stanza="main"}': 3,
        'pgbackrest_backup_last_completion_timestamp_seconds{stanza="main",type="full"}': 1795611173,
        'pgbackrest_backup_last_completion_timestamp_seconds{stanza="main",type="incr"}': 1795611176,
        'pgbackrest_backup_last_completion_timestamp_seconds{stanza="main",type="diff"}': 1795611179,
        'pgbackrest_backup_last_duration_seconds{stanza="main",type="full"}': 4,
        'pgbackrest_backup_last_size_bytes{stanza="main",type="full"}': 23177582,
        'pgbackrest_backup_last_repository_size_bytes{stanza="main",type="incr"}': 208329,
    },
    "pgbackrest-info-no-backup.json": {
        "pgbackrest_info_success": 1,
        'pgbackrest_stanza_status_code{stanza="main"}': 2,
        'pgbackrest_backups{stanza="main"}': 0,
    },
    "pgbackrest-info-missing-stanza.json": {
        "pgbackrest_info_success": 1,
        'pgbackrest_stanza_status_code{stanza="other"}': 1,
        'pgbackrest_stanza_status_code{stanza="main"}': -1,
    },
    "pgbackrest-info-permission-error.json": {
        "pgbackrest_info_success": 1,
        'pgbackrest_stanza_status_code{stanza="[invalid]"}': 99,
        'pgbackrest_stanza_status_code{stanza="main"}': -1,
    },
}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_pgbackrest_metrics_from_recorded_output(fixture, tmp_path, promtool):
    out = tmp_path / "pgbackrest.prom"
    result = run([sys.executable, str(PGBR_SCRIPT), "--output", str(out), "--stanza", "main", "--stanza", "vpcstack",
                  "--input-json", str(FIXTURES / fixture)])
    assert result.returncode == 0, result.stderr
    values = samples(out.read_text())
    for key, value in EXPECTED[fixture].items():
        assert values.get(key) == value, (key, values)
    if fixture != "pgbackrest-info-backups.json":
        assert not any(k.startswith("pgbackrest_backup_last") for k in values)
    check_metrics(promtool, out)


def test_pgbackrest_metrics_report_failure_not_silence(tmp_path, promtool):
    out = tmp_path / "pgbackrest.prom"
    for args in (["--pgbackrest", str(tmp_path / "missing")], ["--input-json", str(tmp_path / "missing.json")]):
        result = run([sys.executable, str(PGBR_SCRIPT), "--output", str(out), *args])
        assert result.returncode == 0
        assert samples(out.read_text()) == {"pgbackrest_info_success": 0}
        check_metrics(promtool, out)
    (tmp_path / "garbage.json").write_text("{not json")
    run([sys.executable, str(PGBR_SCRIPT), "--output", str(out), "--input-json", str(tmp_path / "garbage.json")])
    assert samples(out.read_text()) == {"pgbackrest_info_success": 0}


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_pgbackrest_runs_as_the_given_user_with_a_clean_environment(tmp_path):
    # A directory the unprivileged user can enter (pytest's own is root-only).
    shared = pathlib.Path(tempfile.mkdtemp(prefix="vpcstack-pgbr-"))
    shared.chmod(0o777)
    fake = shared / "pgbackrest"
    log = shared / "calls"
    fixture = shared / "info.json"
    fixture.write_text((FIXTURES / "pgbackrest-info-backups.json").read_text())
    fixture.chmod(0o644)
    fake.write_text(f"#!/bin/sh\necho \"$(id -un) $* HOME=$HOME SECRET=${{SECRET:-}}\" >> {log}\n"
                    f"cat {fixture}\n")
    fake.chmod(0o755)
    out = tmp_path / "pgbackrest.prom"
    user = "nobody"
    try:
        result = subprocess.run([sys.executable, str(PGBR_SCRIPT), "--output", str(out), "--user", user,
                                 "--pgbackrest", str(fake), "--stanza", "main"],
                                capture_output=True, text=True, env={**os.environ, "SECRET": "leak"}, timeout=60)
        assert result.returncode == 0, result.stderr
        call = log.read_text().strip()
    finally:
        shutil.rmtree(shared)
    assert call.startswith(f"{user} --output=json") and call.endswith("info HOME=/nonexistent SECRET=")
    assert samples(out.read_text())["pgbackrest_info_success"] == 1

"""roles/postgres_exporter/files/scram_verifier.py: a verifier PostgreSQL's SCRAM exchange accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys

from conftest import REPO, run

SCRIPT = REPO / "roles/postgres_exporter/files/scram_verifier.py"


def verifier(password: str, role: str) -> str:
    result = run([sys.executable, str(SCRIPT), role], input=password)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_client_that_knows_the_password_proves_it_against_the_verifier():
    text = verifier("Secret123abc", "postgres_exporter")
    method, rest = text.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert method == "SCRAM-SHA-256" and iterations == "4096" and len(base64.b64decode(salt)) == 16
    # What a SCRAM client computes from the password and the server's salt and iteration count.
    salted = hashlib.pbkdf2_hmac("sha256", b"Secret123abc", base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.new(salted, b"Server Key", hashlib.sha256).digest() == server_key


def test_stable_per_role_and_password_and_refuses_an_empty_one():
    assert verifier("pw-one", "a") == verifier("pw-one", "a")
    assert verifier("pw-one", "a") != verifier("pw-one", "b")
    assert verifier("pw-one", "a") != verifier("pw-two", "a")
    assert run([sys.executable, str(SCRIPT), "a"], input="").returncode != 0

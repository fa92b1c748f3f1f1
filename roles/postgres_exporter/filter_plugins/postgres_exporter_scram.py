"""SCRAM-SHA-256 verifier of the exporter's password, computed on the control node.

PostgreSQL only receives the verifier (what it stores in pg_authid), so CREATE/ALTER ROLE
statements that pgaudit or log_statement record carry no plaintext. The salt is derived from the
password and the role name (HMAC), so the verifier is the same on every run (idempotent) and
differs between roles and passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ansible.errors import AnsibleFilterError

ITERATIONS = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def postgres_exporter_scram(password, role, iterations=ITERATIONS):
    """Return 'SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>'."""
    if not password or not role:
        raise AnsibleFilterError("postgres_exporter_scram needs a password and a role name")
    if not str(password).isascii():
        raise AnsibleFilterError("postgres_exporter_scram only handles ASCII passwords (no SASLprep)")
    secret = str(password).encode("utf-8")
    salt = hmac.new(secret, b"vpcstack-scram-salt:" + str(role).encode("utf-8"), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", secret, salt, int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${int(iterations)}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


class FilterModule:
    def filters(self):
        return {"postgres_exporter_scram": postgres_exporter_scram}

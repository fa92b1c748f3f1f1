"""SCRAM-SHA-256 verifiers computed on the control node.

PostgreSQL only ever receives the verifier (the form it stores in pg_authid), never the
password: CREATE/ALTER ROLE statements, which pgaudit's ROLE class and log_statement record,
then carry no plaintext. The salt is derived from a per-stack random seed and the role name, so
the verifier is stable across runs (idempotent) and differs between roles and stacks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ansible.errors import AnsibleFilterError

ITERATIONS = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_sha256_verifier(password, salt_seed, role, iterations=ITERATIONS):
    """Return 'SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>' for password."""
    if not password or not salt_seed or not role:
        raise AnsibleFilterError("scram_sha256_verifier needs a password, a salt seed and a role name")
    if not str(password).isascii():
        # SASLprep of non-ASCII passwords is not implemented here; generated passwords are ASCII.
        raise AnsibleFilterError("scram_sha256_verifier only handles ASCII passwords")
    salt = hmac.new(str(salt_seed).encode(), ("scram-salt:" + str(role)).encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", str(password).encode(), salt, int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${int(iterations)}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


class FilterModule:
    def filters(self):
        return {"scram_sha256_verifier": scram_sha256_verifier}

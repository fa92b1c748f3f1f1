"""Print the SCRAM-SHA-256 verifier of the password read from stdin, for the role named in argv[1].

Run by roles/postgres_exporter on the control node (python3 -c, password on stdin, never in an
argument or a log). PostgreSQL receives only the verifier (what it stores in pg_authid), so
CREATE/ALTER ROLE statements that pgaudit or log_statement record carry no plaintext. The salt is
derived from the password and the role name (HMAC), so the verifier is the same on every run
(idempotent) and differs between roles and passwords. ASCII passwords only (no SASLprep).
"""
import base64
import hashlib
import hmac
import sys

ITERATIONS = 4096
role = sys.argv[1].encode("utf-8")
secret = sys.stdin.read().strip()
if not secret or not secret.isascii():
    sys.exit("scram_verifier: an ASCII password is required on stdin")
password = secret.encode("utf-8")
salt = hmac.new(password, b"vpcstack-scram-salt:" + role, hashlib.sha256).digest()[:16]
salted = hashlib.pbkdf2_hmac("sha256", password, salt, ITERATIONS)
stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
print(f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}")

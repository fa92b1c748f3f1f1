"""Print the SCRAM-SHA-256 verifier for the role named in argv[1].

stdin: two lines, the per-stack salt seed and the password (never in an argument or a log).
Run by the patroni role on the control node: PostgreSQL only ever receives the verifier (what it
stores in pg_authid), so CREATE/ALTER ROLE statements that pgaudit's ROLE class records carry no
plaintext. The salt is an HMAC of the role name keyed by the stack's random seed: stable across
runs (idempotent), different for every role and stack. ASCII passwords only (no SASLprep).
"""
import base64
import hashlib
import hmac
import sys

ITERATIONS = 4096
lines = sys.stdin.read().splitlines()
if len(lines) < 2 or not lines[0] or not lines[1] or not lines[1].isascii() or len(sys.argv) != 2:
    sys.exit("scram_verifier: usage: scram_verifier.py ROLE < 'SEED\\nPASSWORD' (ASCII)")
seed, password = lines[0].encode(), lines[1].encode()
salt = hmac.new(seed, b"scram-salt:" + sys.argv[1].encode(), hashlib.sha256).digest()[:16]
salted = hashlib.pbkdf2_hmac("sha256", password, salt, ITERATIONS)
stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


print(f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}")

"""Versioned SQL migrations, safe to run from every instance at once.

Rules (see docs/app.md, "Migrations"):

* Files are `NNNN_name.sql` in `exposure_api/migrations`, applied in version order, each in its
  own transaction together with its row in `exposure.schema_migrations` (version, checksum).
* The first line says `-- phase: expand` or `-- phase: contract`. Expand migrations only add
  (tables, nullable columns, indexes, grants), so the previous app version keeps working; they run
  on every deploy before the new version starts. Contract migrations remove what the previous
  version needed; `migrate` applies them only with `--contract`, after every instance runs the new
  version. Without `--contract`, migration stops before the first pending contract migration.
* A session-level advisory lock serialises concurrent runs; the losers wait, then find nothing to
  do. An applied migration whose file changed is an error. Versions in the database that this
  code does not know (a newer release ran first) are reported and left alone.
* `{app_role}` in a file is replaced by the quoted application role (psycopg2.sql composition);
  other literal braces must be doubled.
* After the files, when the citus extension is installed in the database, `exposure.flows` is
  distributed by `address` (idempotent). Without Citus, plain PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg2
from psycopg2 import sql

log = logging.getLogger("exposure_api.migrate")

LOCK_KEY = 0x6578706F73757265  # "exposure" as a bigint: the advisory lock of this schema
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PHASE = re.compile(r"^--\s*phase:\s*(expand|contract)\s*$", re.MULTILINE)
FLOWS_TABLE = "exposure.flows"


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    phase: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    if directory is None:
        files = [(p.name, p.read_text(encoding="utf-8"))
                 for p in resources.files("exposure_api.migrations").iterdir() if p.name.endswith(".sql")]
    else:
        files = [(p.name, p.read_text(encoding="utf-8")) for p in Path(directory).glob("*.sql")]
    out = []
    for fname, text in sorted(files):
        m = _NAME.match(fname)
        if not m:
            raise MigrationError(f"migration file name {fname!r} does not match NNNN_name.sql")
        first = text.splitlines()[0] if text else ""
        phase = _PHASE.match(first)
        if not phase:
            raise MigrationError(f"{fname}: first line must be '-- phase: expand' or '-- phase: contract'")
        out.append(Migration(int(m[1]), m[2], phase[1], text))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError("duplicate migration versions")
    return out


def plan(migrations: list[Migration], applied: dict[int, str], *, contract: bool) -> tuple[list[Migration], list[Migration]]:
    """(to apply now, left pending). Raises when an applied file changed."""
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise MigrationError(f"migration {m.version:04d}_{m.name} changed after it was applied")
    todo: list[Migration] = []
    pending: list[Migration] = []
    for m in migrations:
        if m.version in applied:
            continue
        if pending or (m.phase == "contract" and not contract):
            pending.append(m)
        else:
            todo.append(m)
    return todo, pending


def citus_action(*, installed: bool, available: bool, distributed: bool) -> str:
    """What the migration does about Citus; pure so that every branch is unit-tested."""
    if installed and distributed:
        return "already-distributed"
    if installed:
        return "distribute"
    if available:
        return "available-not-installed"
    return "plain"


def _acquire_lock(cur, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        if cur.fetchone()[0]:
            return
        if time.monotonic() > deadline:
            raise MigrationError(f"could not take the migration lock within {timeout:.0f}s")
        time.sleep(0.2)


def _ensure_distribution(conn) -> str:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus'),"
                    " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citus')")
        installed, available = cur.fetchone()
        distributed = False
        if installed:
            cur.execute("SELECT EXISTS (SELECT 1 FROM pg_dist_partition"
                        " WHERE logicalrelid = %s::regclass)", (FLOWS_TABLE,))
            distributed = cur.fetchone()[0]
        action = citus_action(installed=installed, available=available, distributed=distributed)
        if action == "distribute":
            cur.execute("SELECT create_distributed_table(%s, 'address')", (FLOWS_TABLE,))
            log.info("distributed %s by address (citus)", FLOWS_TABLE)
        elif action == "available-not-installed":
            log.warning("citus is available but not installed in this database: plain table")
    return action


def migrate(conn, app_role: str, *, contract: bool = False, directory: Path | None = None,
            lock_timeout: float = 300.0) -> dict:
    """Apply pending migrations on `conn` (the owner role). Returns a summary."""
    migrations = load_migrations(directory)
    conn.autocommit = True
    with conn.cursor() as cur:
        # DDL may take long on big tables but must not queue the app's reads behind it for long.
        cur.execute("SET statement_timeout = 0")
        cur.execute("SET lock_timeout = '10s'")
        _acquire_lock(cur, lock_timeout)
    try:
        conn.autocommit = False
        with conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA IF NOT EXISTS exposure")
            cur.execute("""CREATE TABLE IF NOT EXISTS exposure.schema_migrations (
                               version    integer PRIMARY KEY,
                               name       text NOT NULL,
                               phase      text NOT NULL,
                               checksum   text NOT NULL,
                               applied_at timestamptz NOT NULL DEFAULT now())""")
            cur.execute("SELECT version, checksum FROM exposure.schema_migrations")
            applied = dict(cur.fetchall())
        todo, pending = plan(migrations, applied, contract=contract)
        known = {m.version for m in migrations}
        unknown = sorted(v for v in applied if v not in known)
        if unknown:
            log.warning("database has migrations this release does not know: %s (newer release?)", unknown)
        for m in todo:
            with conn, conn.cursor() as cur:
                cur.execute(sql.SQL(m.text).format(app_role=sql.Identifier(app_role)))
                cur.execute("INSERT INTO exposure.schema_migrations (version, name, phase, checksum)"
                            " VALUES (%s, %s, %s, %s)", (m.version, m.name, m.phase, m.checksum))
            log.info("applied migration %04d_%s (%s)", m.version, m.name, m.phase)
        citus = _ensure_distribution(conn)
    finally:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return {
        "applied": [f"{m.version:04d}_{m.name}" for m in todo],
        "pending": [f"{m.version:04d}_{m.name}" for m in pending],
        "unknown": unknown,
        "citus": citus,
    }


def connect_owner(settings) -> "psycopg2.extensions.connection":
    return psycopg2.connect(**settings.dsn_kwargs(migration=True))

"""Configuration from environment variables (12-factor), validated once at start-up.

Every setting has one environment variable; secrets are read from files whose *paths* come from
the environment, never from the command line. `Settings.from_env()` raises `ConfigError` with
a message naming every bad variable, so a misconfigured instance fails at start with a clear line
instead of on its first request.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Mapping

PREFIX = "EXPOSURE_"


class ConfigError(Exception):
    """One or more configuration variables are missing or invalid."""


@dataclass(frozen=True)
class Settings:
    db_host: str
    db_sslrootcert: str
    db_password_file: str
    db_port: int = 5432
    db_name: str = "exposure"
    db_user: str = "exposure_app"
    db_migration_user: str = "exposure_owner"
    db_migration_password_file: str | None = None
    db_connect_timeout: int = 3
    db_statement_timeout_ms: int = 5000
    db_pool_max: int = 4
    db_pool_acquire_timeout: float = 2.0
    db_retry_window: float = 8.0
    db_keepalives_idle: int = 10
    db_keepalives_interval: int = 3
    db_keepalives_count: int = 3
    drain_file: str | None = None
    bind: str = "0.0.0.0:8080"
    workers: int = 0  # 0 = from CPU count
    threads: int = 4
    max_requests: int = 5000
    max_requests_jitter: int = 500
    graceful_timeout: int = 20
    timeout: int = 30
    keepalive: int = 5
    metrics_dir: str | None = None
    log_level: str = "INFO"

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, for_migrations: bool = False) -> "Settings":
        env = os.environ if env is None else env
        errors: list[str] = []

        def get(name: str, default: str | None = None, *, required: bool = False) -> str | None:
            value = env.get(PREFIX + name)
            if value is None or value == "":
                if required:
                    errors.append(f"{PREFIX}{name} is required")
                return default
            return value

        def get_int(name: str, default: int, lo: int, hi: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw, 10)
            except ValueError:
                errors.append(f"{PREFIX}{name} must be an integer, got {raw!r}")
                return default
            if not lo <= value <= hi:
                errors.append(f"{PREFIX}{name} must be between {lo} and {hi}, got {value}")
            return value

        def get_float(name: str, default: float, lo: float, hi: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                errors.append(f"{PREFIX}{name} must be a number, got {raw!r}")
                return default
            if not lo <= value <= hi:
                errors.append(f"{PREFIX}{name} must be between {lo} and {hi}, got {value}")
            return value

        def readable_file(name: str, value: str | None, *, secret: bool) -> None:
            if value is None:
                return
            try:
                st = os.stat(value)
            except OSError as exc:
                errors.append(f"{PREFIX}{name}: cannot read {value}: {exc.strerror}")
                return
            if not stat.S_ISREG(st.st_mode):
                errors.append(f"{PREFIX}{name}: {value} is not a regular file")
            elif not os.access(value, os.R_OK):
                errors.append(f"{PREFIX}{name}: {value} is not readable")
            elif secret and st.st_mode & stat.S_IROTH:
                errors.append(f"{PREFIX}{name}: {value} is world-readable; use mode 0600 or 0640")

        db_host = get("DB_HOST", required=True)
        sslrootcert = get("DB_SSLROOTCERT", required=True)
        readable_file("DB_SSLROOTCERT", sslrootcert, secret=False)
        pw_file = get("DB_PASSWORD_FILE", required=not for_migrations)
        readable_file("DB_PASSWORD_FILE", pw_file, secret=True)
        mig_pw_file = get("DB_MIGRATION_PASSWORD_FILE", required=for_migrations)
        readable_file("DB_MIGRATION_PASSWORD_FILE", mig_pw_file, secret=True)

        bind = get("BIND", "0.0.0.0:8080")
        host, sep, port = bind.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            errors.append(f"{PREFIX}BIND must be HOST:PORT, got {bind!r}")

        log_level = (get("LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            errors.append(f"{PREFIX}LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")

        settings = cls(
            db_host=db_host or "",
            db_sslrootcert=sslrootcert or "",
            db_password_file=pw_file or "",
            db_port=get_int("DB_PORT", 5432, 1, 65535),
            db_name=get("DB_NAME", "exposure"),
            db_user=get("DB_USER", "exposure_app"),
            db_migration_user=get("DB_MIGRATION_USER", "exposure_owner"),
            db_migration_password_file=mig_pw_file,
            db_connect_timeout=get_int("DB_CONNECT_TIMEOUT", 3, 1, 60),
            db_statement_timeout_ms=get_int("DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600000),
            db_pool_max=get_int("DB_POOL_MAX", 4, 1, 64),
            db_pool_acquire_timeout=get_float("DB_POOL_ACQUIRE_TIMEOUT", 2.0, 0.05, 60.0),
            db_retry_window=get_float("DB_RETRY_WINDOW", 8.0, 0.0, 60.0),
            db_keepalives_idle=get_int("DB_KEEPALIVES_IDLE", 10, 1, 7200),
            db_keepalives_interval=get_int("DB_KEEPALIVES_INTERVAL", 3, 1, 600),
            db_keepalives_count=get_int("DB_KEEPALIVES_COUNT", 3, 1, 100),
            drain_file=get("DRAIN_FILE"),
            bind=bind,
            workers=get_int("WORKERS", 0, 0, 256),
            threads=get_int("THREADS", 4, 1, 64),
            max_requests=get_int("MAX_REQUESTS", 5000, 0, 10_000_000),
            max_requests_jitter=get_int("MAX_REQUESTS_JITTER", 500, 0, 1_000_000),
            graceful_timeout=get_int("GRACEFUL_TIMEOUT", 20, 1, 600),
            timeout=get_int("TIMEOUT", 30, 1, 600),
            keepalive=get_int("KEEPALIVE", 5, 0, 600),
            metrics_dir=get("METRICS_DIR"),
            log_level=log_level,
        )
        # A read may retry for the window, then make one more attempt (connect, then the
        # statement): all of it must end before gunicorn kills the worker as silent. (The load
        # balancers' server timeouts, 60 s in the roles, are longer than gunicorn's.)
        worst = (settings.db_retry_window + settings.db_connect_timeout
                 + settings.db_statement_timeout_ms / 1000)
        if worst >= settings.timeout:
            errors.append(
                f"{PREFIX}DB_RETRY_WINDOW ({settings.db_retry_window:g} s) + {PREFIX}DB_CONNECT_TIMEOUT "
                f"({settings.db_connect_timeout} s) + {PREFIX}DB_STATEMENT_TIMEOUT_MS "
                f"({settings.db_statement_timeout_ms / 1000:g} s) must stay below {PREFIX}TIMEOUT "
                f"({settings.timeout} s)")
        if errors:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
        return settings

    # ---- derived values -----------------------------------------------------------------
    def worker_count(self, cpu_count: int | None = None) -> int:
        if self.workers:
            return self.workers
        cpus = cpu_count or os.cpu_count() or 1
        return 2 * cpus + 1

    def dsn_kwargs(self, *, migration: bool = False) -> dict:
        """Keyword arguments for psycopg2.connect. Contains the password: never log this."""
        user = self.db_migration_user if migration else self.db_user
        pw_file = self.db_migration_password_file if migration else self.db_password_file
        if not pw_file:
            raise ConfigError(
                f"{PREFIX}{'DB_MIGRATION_PASSWORD_FILE' if migration else 'DB_PASSWORD_FILE'} is required"
            )
        return {
            "host": self.db_host,
            "port": self.db_port,
            "dbname": self.db_name,
            "user": user,
            "password": read_secret(pw_file),
            "sslmode": "verify-full",  # always: there is no setting to weaken it
            "sslrootcert": self.db_sslrootcert,
            "connect_timeout": self.db_connect_timeout,
            "keepalives": 1,
            "keepalives_idle": self.db_keepalives_idle,
            "keepalives_interval": self.db_keepalives_interval,
            "keepalives_count": self.db_keepalives_count,
            # Bounds a request's wait for a dead peer that still holds the socket open.
            "tcp_user_timeout": (self.db_keepalives_idle
                                 + self.db_keepalives_interval * self.db_keepalives_count) * 1000,
            "application_name": "exposure-api-migrate" if migration else "exposure-api",
            "options": f"-c statement_timeout={self.db_statement_timeout_ms}"
                       " -c idle_in_transaction_session_timeout=60000",
        }


def read_secret(path: str) -> str:
    """Read a one-line secret; a trailing newline is not part of it."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"secret file {path} is empty")
    return value

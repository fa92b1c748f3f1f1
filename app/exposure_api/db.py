"""A small, thread-safe psycopg2 connection pool: one per process (gunicorn worker).

* Created lazily in the process that uses it (after gunicorn forks), re-created if the pid
  changes, so no socket is ever shared between workers.
* Bounded: at most `max_size` connections; a caller waits up to `acquire_timeout` for one, then
  gets `PoolTimeout` (the HTTP layer answers 503).
* Self-healing: a connection that raised OperationalError/InterfaceError is closed, not
  returned; the idle connections opened before it are dropped too (after a failover or a
  restart they are all dead).
* Riding out a switchover: `run_readonly` (idempotent reads only) retries a read on a NEW
  connection when the error means "the database is not available right now" (the connection
  broke, connection refused, the server is shutting down or starting up, a connect timeout):
  at once after a dead pooled connection, then with short jittered backoff until
  `retry_window` seconds have passed since the request started. Anything else (a bad query, a
  statement timeout, a refused password or certificate) would fail the same way again and is
  raised at once. The pool stays bounded: a retrying request holds no connection while it
  waits.
* Readiness across a blip: every successful read stamps the time in a value shared by all the
  gunicorn workers of the instance. While a read succeeded less than `retry_window` seconds ago,
  `/readyz` keeps answering ready although its own check failed with an availability error
  (requests are waiting the outage out meanwhile), so the load balancer does not take every
  instance out during a switchover. An instance that never reached the database gets no grace.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, TypeVar

import psycopg2
import psycopg2.extensions

from . import metrics

T = TypeVar("T")
log = logging.getLogger("exposure_api.db")
# Errors after which the connection may be gone; `conn.closed` tells whether it is.
DISCONNECT_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# Backoff between retries of a read: first pause, cap (seconds); each pause is jittered
# (50-100 %) so that the waiting requests of all workers do not reconnect in lockstep.
RETRY_FIRST_PAUSE = 0.1
RETRY_MAX_PAUSE = 0.5

# What "the database is not available" looks like to libpq/psycopg2 during a restart, a
# switchover or a failover, directly or through the endpoint's HAProxy (which refuses or closes
# new connections while no member passes its check, and shuts down sessions of a member marked
# down). Connect failures carry no SQLSTATE, so libpq's messages are matched (lower case; the
# first match wins, specific ones first). The label is the `reason` of the retry metric.
_UNAVAILABLE_MESSAGES = (
    ("the database system is shutting down", "shutting_down"),
    ("terminating connection due to administrator command", "shutting_down"),
    ("the database system is starting up", "starting_up"),
    ("the database system is in recovery mode", "starting_up"),
    ("the database system is not yet accepting connections", "starting_up"),
    ("the database system is not accepting connections", "starting_up"),
    ("connection refused", "refused"),
    ("timeout expired", "timeout"),  # libpq's connect_timeout
    ("connection timed out", "timeout"),
    ("no route to host", "unreachable"),
    ("server closed the connection unexpectedly", "connection_lost"),
    ("ssl syscall error", "connection_lost"),  # EOF detected / reset, under TLS
    ("ssl connection has been closed unexpectedly", "connection_lost"),
    ("connection reset by peer", "connection_lost"),
    ("could not receive data from server", "connection_lost"),
    ("could not send data to server", "connection_lost"),
    ("no connection to the server", "connection_lost"),
    ("connection already closed", "connection_lost"),
)
# SQLSTATEs of a server going away: admin_shutdown (fast shutdown of the old primary),
# crash_shutdown, cannot_connect_now; class 08 is "connection exception".
# When a read last succeeded in any worker of this instance (time.monotonic(), a system-wide
# clock; 0 = never). Allocated in shared memory at import, which `exposure-api serve` does in the
# gunicorn master: the workers inherit it at fork. A lone process (tests) has its own.
_last_success = multiprocessing.RawValue("d", 0.0)

_UNAVAILABLE_PGCODES = {"57P01": "shutting_down", "57P02": "shutting_down", "57P03": "starting_up"}


def unavailable_reason(exc: BaseException, connection_closed: bool = False) -> str | None:
    """The retry reason if `exc` means the database is not available right now, else None.

    Not retried, because they would fail the same way again: a statement timeout
    (QueryCanceledError), errors of the query itself (ProgrammingError, DataError, ...), a
    refused password or certificate, too many connections, an unknown host name."""
    if not isinstance(exc, DISCONNECT_ERRORS):
        return None
    if isinstance(exc, psycopg2.extensions.QueryCanceledError):
        return None
    text = str(exc).lower()
    for fragment, reason in _UNAVAILABLE_MESSAGES:
        if fragment in text:
            return reason
    pgcode = getattr(exc, "pgcode", None) or ""
    if pgcode in _UNAVAILABLE_PGCODES:
        return _UNAVAILABLE_PGCODES[pgcode]
    if pgcode.startswith("08"):
        return "connection_lost"
    if connection_closed:
        # The query's connection broke with a message not listed above: the server went away.
        return "connection_lost"
    return None


class PoolTimeout(Exception):
    pass


class Pool:
    def __init__(self, connect: Callable[[], "psycopg2.extensions.connection"], max_size: int,
                 acquire_timeout: float, retry_window: float = 0.0):
        self._connect = connect
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.retry_window = retry_window
        self._idle: deque = deque()
        self._in_use = 0
        self._cond = threading.Condition()
        self._generation = 0  # bumped on every disconnect error; older connections are stale
        self._gen_of: dict[int, int] = {}

    # ---- acquire / release --------------------------------------------------------------
    def _acquire(self):
        """(connection, fresh): fresh is True when it was opened for this caller."""
        deadline = time.monotonic() + self.acquire_timeout
        started = time.perf_counter()
        with self._cond:
            while True:
                while self._idle:
                    conn = self._idle.pop()  # LIFO: the warmest connection
                    if conn.closed or self._gen_of.get(id(conn)) != self._generation:
                        self._discard(conn)
                        continue
                    self._in_use += 1
                    self._observe_wait(started)
                    return conn, False
                if self._in_use + len(self._idle) < self.max_size:
                    self._in_use += 1
                    generation = self._generation
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    metrics.DB_POOL_TIMEOUTS.inc()
                    raise PoolTimeout(f"no database connection free within {self.acquire_timeout}s")
                self._cond.wait(remaining)
        # Connect outside the lock: it can take up to connect_timeout.
        try:
            conn = self._connect()
            conn.set_session(readonly=True, autocommit=True)
        except BaseException:
            with self._cond:
                self._in_use -= 1
                self._cond.notify()
            metrics.DB_CONNECT_ERRORS.inc()
            raise
        metrics.DB_CONNECTS.inc()
        with self._cond:
            self._gen_of[id(conn)] = generation
        self._observe_wait(started)
        return conn, True

    def _observe_wait(self, started: float) -> None:
        metrics.DB_POOL_WAIT.observe(time.perf_counter() - started)
        metrics.DB_POOL_IN_USE.set(self._in_use)
        metrics.DB_POOL_IDLE.set(len(self._idle))

    def _discard(self, conn) -> None:
        self._gen_of.pop(id(conn), None)
        try:
            conn.close()
        except Exception:  # pragma: no cover - closing a broken socket
            pass

    def _release(self, conn, broken: bool) -> None:
        with self._cond:
            self._in_use -= 1
            if broken or conn.closed:
                # After a failover or restart every connection opened before is dead too:
                # bump the generation so that idle and in-flight ones are closed, not reused.
                self._generation += 1
                self._discard(conn)
                while self._idle:
                    self._discard(self._idle.pop())
            elif self._gen_of.get(id(conn)) != self._generation:
                self._discard(conn)
            else:
                self._idle.append(conn)
            metrics.DB_POOL_IN_USE.set(self._in_use)
            metrics.DB_POOL_IDLE.set(len(self._idle))
            self._cond.notify()

    @contextmanager
    def connection(self):
        conn, _fresh = self._acquire()
        broken = False
        try:
            yield conn
        except DISCONNECT_ERRORS:
            broken = bool(conn.closed)  # a statement timeout leaves the connection usable
            raise
        finally:
            self._release(conn, broken)

    # ---- running reads ------------------------------------------------------------------
    def run_readonly(self, fn: Callable[["psycopg2.extensions.cursor"], T],
                     retry_window: float | None = None) -> T:
        """Run an idempotent read; ride out a short unavailability of the database.

        A read that failed because the database was not available (`unavailable_reason`) is
        retried on a new connection: at once when a reused connection turned out dead (the
        server restarted or failed over since it was opened), otherwise after a jittered pause
        (0.1 s doubling up to 0.5 s), until `retry_window` seconds (default: the pool's) have
        passed since the first attempt. Then, or for any other error, the error propagates.
        A read on a dead pooled connection is retried once even with a window of 0."""
        window = self.retry_window if retry_window is None else retry_window
        started = time.monotonic()
        pause = RETRY_FIRST_PAUSE
        attempt = 0
        while True:
            attempt += 1
            conn, fresh, broken = None, True, False
            try:
                conn, fresh = self._acquire()
                with conn.cursor() as cur:
                    result = fn(cur)
            except DISCONNECT_ERRORS as exc:
                broken = conn is not None and bool(conn.closed)  # a statement timeout keeps it
                reason = unavailable_reason(exc, broken)
                if reason is None:
                    raise
                elapsed = time.monotonic() - started
                if not fresh and broken and attempt == 1:
                    wait = 0.0  # stale pooled connection: a new one may well work right away
                else:
                    wait = pause * random.uniform(0.5, 1.0)
                    pause = min(pause * 2, RETRY_MAX_PAUSE)
                    if elapsed + wait > window:
                        if window > 0:  # /readyz (window 0) logs its own line
                            log.warning("database unavailable, giving up", extra={
                                "reason": reason, "attempts": attempt, "error": type(exc).__name__,
                                "pgcode": getattr(exc, "pgcode", None),
                                "elapsed_ms": round(elapsed * 1000), "retry_window_s": window})
                        raise
                metrics.retried(reason)
                # Class, SQLSTATE and our label only: no server message, no connection string.
                log.warning("database read retried", extra={
                    "reason": reason, "attempt": attempt, "error": type(exc).__name__,
                    "pgcode": getattr(exc, "pgcode", None), "elapsed_ms": round(elapsed * 1000),
                    "retry_in_ms": round(wait * 1000)})
            else:
                _last_success.value = time.monotonic()  # one store into shared memory
                return result
            finally:
                if conn is not None:
                    self._release(conn, broken)
            if wait:
                time.sleep(wait)

    # ---- availability (for /readyz) -----------------------------------------------------
    def within_grace(self) -> bool:
        """True while a read of this instance succeeded less than the retry window ago: an
        outage younger than that is a blip that requests wait out, the instance stays useful."""
        last = _last_success.value
        return last > 0 and time.monotonic() - last < self.retry_window

    def close(self) -> None:
        with self._cond:
            while self._idle:
                self._discard(self._idle.pop())

    def stats(self) -> dict:
        with self._cond:
            return {"in_use": self._in_use, "idle": len(self._idle), "max": self.max_size}


_pool: Pool | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def get_pool(settings) -> Pool:
    """The pool of this process, created on first use after fork."""
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is None or _pool_pid != pid:
        with _pool_lock:
            if _pool is None or _pool_pid != pid:
                # dsn_kwargs() reads the password file at every connect: a rotated password is
                # picked up without a restart.
                _pool = Pool(lambda: psycopg2.connect(**settings.dsn_kwargs()), settings.db_pool_max,
                             settings.db_pool_acquire_timeout, settings.db_retry_window)
                _pool_pid = pid
    return _pool


def reset_pool() -> None:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.close()
        _pool, _pool_pid = None, None

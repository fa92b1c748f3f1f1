"""A small, thread-safe psycopg2 connection pool: one per process (gunicorn worker).

* Created lazily in the process that uses it (after gunicorn forks), re-created if the pid
  changes, so no socket is ever shared between workers.
* Bounded: at most `max_size` connections; a caller waits up to `acquire_timeout` for one, then
  gets `PoolTimeout` (the HTTP layer answers 503).
* Self-healing: a connection that raised OperationalError/InterfaceError is closed, not
  returned; the idle connections opened before it are dropped too (after a failover or a
  restart they are all dead). `run_readonly` retries a read once on a fresh connection when the
  failure came from a connection opened before the failure, so a DB restart costs at most the
  requests in flight.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, TypeVar

import psycopg2
import psycopg2.extensions

from . import metrics

T = TypeVar("T")
# Errors after which the connection may be gone; `conn.closed` tells whether it is.
DISCONNECT_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class PoolTimeout(Exception):
    pass


class Pool:
    def __init__(self, connect: Callable[[], "psycopg2.extensions.connection"], max_size: int,
                 acquire_timeout: float):
        self._connect = connect
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
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
    def run_readonly(self, fn: Callable[["psycopg2.extensions.cursor"], T]) -> T:
        """Run an idempotent read. If a *reused* connection turns out dead (the server
        restarted or failed over since it was opened), retry once on a new connection; a new
        connection failing means the database is unavailable, and the error propagates."""
        for attempt in (1, 2):
            conn, fresh = self._acquire()
            broken = False
            try:
                with conn.cursor() as cur:
                    return fn(cur)
            except DISCONNECT_ERRORS:
                broken = bool(conn.closed)  # a statement timeout leaves the connection usable
                if fresh or not broken or attempt == 2:
                    raise
                metrics.DB_RETRIES.inc()
            finally:
                self._release(conn, broken)
        raise AssertionError("unreachable")  # pragma: no cover

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
                             settings.db_pool_acquire_timeout)
                _pool_pid = pid
    return _pool


def reset_pool() -> None:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.close()
        _pool, _pool_pid = None, None

"""Which database errors a read retries (db.unavailable_reason, db.Pool.run_readonly), and that
the retries are bounded in time and leave the pool bounded. The end-to-end cases (a request
riding out a database restart under gunicorn, 503 once the outage outlasts the window) are in
test_server.py."""

import dataclasses
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from exposure_api import db, metrics
from pgcluster import free_port


def _retries(reason: str) -> float:
    return metrics.DB_RETRIES.labels(reason)._value.get()


# Messages as libpq/psycopg2 word them (PostgreSQL 15, through HAProxy or direct).
@pytest.mark.parametrize("message, reason", [
    ('connection to server at "10.51.2.9", port 5432 failed: Connection refused\n\tIs the server '
     'running on that host and accepting TCP/IP connections?', "refused"),
    ('connection to server at "db-lb" (10.51.2.9), port 5432 failed: FATAL:  the database system '
     'is shutting down', "shutting_down"),
    ('connection to server at "db-lb" (10.51.2.9), port 5432 failed: FATAL:  the database system '
     'is starting up', "starting_up"),
    ('connection to server at "db-lb" (10.51.2.9), port 5432 failed: FATAL:  the database system '
     'is not yet accepting connections\nDETAIL:  Consistent recovery state has not been yet reached.',
     "starting_up"),
    ('connection to server at "db-lb" (10.51.2.9), port 5432 failed: server closed the connection '
     'unexpectedly\n\tThis probably means the server terminated abnormally', "connection_lost"),
    ("SSL SYSCALL error: EOF detected\n", "connection_lost"),
    ("SSL connection has been closed unexpectedly\n", "connection_lost"),
    ("could not receive data from server: Connection reset by peer\n", "connection_lost"),
    ('connection to server at "db-lb" (10.51.2.9), port 5432 failed: timeout expired\n', "timeout"),
])
def test_unavailability_errors_are_recognised(message, reason):
    assert db.unavailable_reason(psycopg2.OperationalError(message)) == reason


@pytest.mark.parametrize("exc", [
    psycopg2.OperationalError('connection to server at "db-lb" (10.51.2.9), port 5432 failed: FATAL:  '
                              'password authentication failed for user "exposure_app"'),
    psycopg2.OperationalError('connection to server at "db-lb" (10.51.2.9), port 5432 failed: '
                              'SSL error: certificate verify failed'),
    psycopg2.OperationalError('connection to server at "db-lb" (10.51.2.9), port 5432 failed: FATAL:  '
                              'sorry, too many clients already'),
    psycopg2.OperationalError('could not translate host name "db-lb" to address: Name or service '
                              'not known'),
    psycopg2.extensions.QueryCanceledError("canceling statement due to statement timeout"),
    psycopg2.ProgrammingError('relation "exposure.nope" does not exist'),
    psycopg2.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
    ValueError("not a database error"),
])
def test_other_errors_are_not_retried(exc):
    assert db.unavailable_reason(exc) is None
    # A statement timeout stays unretried even when it came with a closed connection.
    if isinstance(exc, psycopg2.extensions.QueryCanceledError):
        assert db.unavailable_reason(exc, connection_closed=True) is None


def _pool(settings, retry_window: float, connect=None, max_size: int = 2) -> db.Pool:
    return db.Pool(connect or (lambda: psycopg2.connect(**settings.dsn_kwargs())), max_size, 1.0,
                   retry_window)


def test_a_bad_query_runs_once(seeded, settings):
    pool = _pool(settings, retry_window=5)
    calls = []

    def bad(cur):
        calls.append(1)
        cur.execute("SELECT * FROM exposure.no_such_table")

    started = time.monotonic()
    with pytest.raises(psycopg2.ProgrammingError):
        pool.run_readonly(bad)
    assert calls == [1] and time.monotonic() - started < 2
    pool.close()


def test_a_statement_timeout_runs_once(seeded, settings):
    quick = dataclasses.replace(settings, db_statement_timeout_ms=200)
    pool = _pool(quick, retry_window=5)
    calls = []

    def slow(cur):
        calls.append(1)
        cur.execute("SELECT pg_sleep(2)")

    started = time.monotonic()
    with pytest.raises(psycopg2.extensions.QueryCanceledError):
        pool.run_readonly(slow)
    assert calls == [1] and time.monotonic() - started < 1.5
    assert pool.stats()["idle"] == 1  # the connection is kept
    pool.close()


def test_a_wrong_password_is_not_retried(seeded, settings, pg, tmp_path):
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    bad = dataclasses.replace(settings, db_password_file=str(wrong))
    connects = []

    def connect():
        connects.append(1)
        return psycopg2.connect(**bad.dsn_kwargs())

    pool = _pool(bad, retry_window=5, connect=connect)
    started = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        pool.run_readonly(lambda cur: cur.execute("SELECT 1"))
    assert connects == [1] and time.monotonic() - started < 2


def test_an_unavailable_database_is_retried_for_the_window_then_raised(seeded, settings):
    """Nothing listens on the port: connection refused, retried with backoff for the window
    (1 s), then raised; the pool never holds more than its bound."""
    gone = dataclasses.replace(settings, db_port=free_port())
    before = _retries("refused")
    connects = []
    pool = _pool(gone, retry_window=1.0, connect=lambda: connects.append(1) or
                 psycopg2.connect(**gone.dsn_kwargs()))
    started = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match="refused"):
        pool.run_readonly(lambda cur: cur.execute("SELECT 1"))
    took = time.monotonic() - started
    assert 0.5 <= took < 3, took
    assert len(connects) >= 3 and _retries("refused") - before == len(connects) - 1
    assert pool.stats() == {"in_use": 0, "idle": 0, "max": 2}


def test_a_read_succeeds_once_the_database_answers_within_the_window(seeded, settings):
    """The first connects fail as during a switchover (refused, then shutting down); the read
    is retried on new connections and succeeds."""
    real = lambda: psycopg2.connect(**settings.dsn_kwargs())  # noqa: E731
    failures: list = []
    pool = _pool(settings, retry_window=5, connect=lambda: real() if not failures else _raise(failures.pop(0)))
    assert pool.run_readonly(lambda cur: cur.execute("SELECT 1") or 1) == 1
    pool.close()  # no idle connection left: the next read connects
    failures.extend([psycopg2.OperationalError("connection to server failed: Connection refused"),
                     psycopg2.OperationalError("connection to server failed: FATAL:  the database "
                                               "system is shutting down")])
    before = (_retries("refused"), _retries("shutting_down"))
    started = time.monotonic()
    assert pool.run_readonly(lambda cur: cur.execute("SELECT 1") or cur.fetchone()[0]) == 1
    assert (_retries("refused") - before[0], _retries("shutting_down") - before[1]) == (1, 1)
    assert 0.1 <= time.monotonic() - started < 2  # two short pauses (0.05-0.1 s, 0.1-0.2 s)
    pool.close()


def _raise(exc):
    raise exc


def test_readiness_grace_follows_the_last_successful_read(seeded, settings):
    pool = _pool(settings, retry_window=1.0)
    db._last_success.value = 0.0
    assert not pool.within_grace()  # never reached the database: no grace
    pool.run_readonly(lambda cur: cur.execute("SELECT 1"))
    assert pool.within_grace()  # an outage now would be a blip
    db._last_success.value = time.monotonic() - 1.5
    assert not pool.within_grace()  # no read for longer than the window
    pool.close()


def test_the_window_must_end_before_gunicorn_kills_the_worker(pg):
    from exposure_api.config import ConfigError, Settings
    assert Settings.from_env(pg.env()).db_retry_window == 8.0
    with pytest.raises(ConfigError, match="EXPOSURE_DB_RETRY_WINDOW"):
        Settings.from_env(pg.env(EXPOSURE_DB_RETRY_WINDOW="25"))  # 25 + 3 + 5 >= 30
    with pytest.raises(ConfigError, match="EXPOSURE_DB_RETRY_WINDOW must be a number"):
        Settings.from_env(pg.env(EXPOSURE_DB_RETRY_WINDOW="soon"))
    assert Settings.from_env(pg.env(EXPOSURE_DB_RETRY_WINDOW="0")).db_retry_window == 0.0


class RejectingProxy:
    """A TCP proxy in front of PostgreSQL that behaves like the database endpoint's HAProxy
    during a switchover: while rejecting, it closes new connections at once (`tcp-request
    connection reject if { nbsrv(...) eq 0 }`) and has closed the established ones
    (`on-marked-down shutdown-sessions`)."""

    def __init__(self, upstream_port: int):
        import socket
        import threading
        self.upstream = ("127.0.0.1", upstream_port)
        self.rejecting = False
        self.sessions: list = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.rejecting:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self.sessions.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def reject(self):
        import socket
        self.rejecting = True
        for pair in self.sessions:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.sessions.clear()

    def close(self):
        self._stop = True
        self.reject()
        self.listener.close()


def test_a_read_rides_out_an_endpoint_without_primary(seeded, settings, pg):
    """What the app saw through HAProxy on the local stack during patch.yml: pooled connections
    closed, new ones closed at once. The read waits on new connections and succeeds once the
    endpoint forwards again; if that takes longer than the window, it raises, bounded in time."""
    import threading
    proxy = RejectingProxy(pg.port)
    via = dataclasses.replace(settings, db_host="127.0.0.1", db_port=proxy.port)
    try:
        pool = _pool(via, retry_window=6)
        select = lambda cur: cur.execute("SELECT 1") or cur.fetchone()[0]  # noqa: E731
        assert pool.run_readonly(select) == 1  # one pooled connection through the proxy
        before = _retries("connection_lost")
        proxy.reject()
        threading.Timer(1.5, lambda: setattr(proxy, "rejecting", False)).start()
        started = time.monotonic()
        assert pool.run_readonly(select) == 1
        took = time.monotonic() - started
        assert 1.4 <= took < 5, took
        # The dead pooled connection and the refused new ones, all recognised by libpq's text.
        assert _retries("connection_lost") - before >= 3
        # Longer than the window: raised after about the window (1 s), not hanging.
        pool.retry_window = 1.0
        proxy.reject()
        started = time.monotonic()
        with pytest.raises(psycopg2.OperationalError) as exc:
            pool.run_readonly(select)
        assert db.unavailable_reason(exc.value) == "connection_lost", str(exc.value)
        assert 0.5 <= time.monotonic() - started < 3
        assert pool.stats()["in_use"] == 0
        pool.close()
    finally:
        proxy.close()

"""End to end under gunicorn: metrics across workers, JSON logs with request ids, draining,
recovery after a database restart, graceful SIGTERM."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from exposure_api.seed import TOY_ADDRESS
from server_util import Server

pytestmark = pytest.mark.slow
EXPOSURE = f"/address/exposure/direct?address={TOY_ADDRESS}"


@pytest.fixture(scope="module")
def server(seeded, pg):
    srv = Server(pg)
    yield srv
    srv.stop()


def _metric_sum(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_aggregated_across_workers(server):
    n = 60
    with ThreadPoolExecutor(8) as ex:
        statuses = list(ex.map(lambda _: server.get(EXPOSURE)[0], range(n)))
    assert statuses == [200] * n
    files = list(server.metrics_dir.glob("counter_*.db"))
    assert len(files) >= 2, "both workers should have served requests"
    # Scrape a few times: whichever worker answers, the totals are the same and complete.
    for _ in range(4):
        _, body = server.get("/metrics")
        text = body.decode()
        assert _metric_sum(text, "exposure_http_requests_total", route="/address/exposure/direct",
                           status="200") == n
        assert _metric_sum(text, "exposure_http_request_duration_seconds_count",
                           route="/address/exposure/direct", status="200") == n
        assert _metric_sum(text, "exposure_db_query_duration_seconds_count", query="exposure",
                           outcome="ok") == n
        assert "exposure_db_pool_connections_idle" in text


def test_json_logs_carry_the_request_id_and_no_secret(server, pg):
    status, _ = server.get(EXPOSURE, headers={"X-Request-ID": "rid-test-42"})
    assert status == 200
    time.sleep(0.3)
    logs = server.logs()
    assert all("unparsed" not in entry for entry in logs), [e for e in logs if "unparsed" in e][:3]
    mine = [e for e in logs if e.get("request_id") == "rid-test-42"]
    assert mine and mine[0]["route"] == "/address/exposure/direct" and mine[0]["status"] == 200
    text = server.log_path.read_text()
    assert pg.app_password not in text and pg.owner_password not in text


def test_drain_flag_turns_readyz_to_503(server):
    assert server.get("/readyz")[0] == 200
    server.drain_file.touch()
    try:
        assert server.get_json("/readyz") == (503, {"status": "draining"})
        assert server.get(EXPOSURE)[0] == 200  # still serving while the LB drains us
    finally:
        server.drain_file.unlink()
    assert server.get("/readyz")[0] == 200


def test_requests_succeed_again_after_the_database_restarts(server, pg):
    # Warm every worker's pool.
    with ThreadPoolExecutor(4) as ex:
        assert set(ex.map(lambda _: server.get(EXPOSURE)[0], range(20))) == {200}
    # 1. A restart between requests: every pooled connection is dead, none may cost a request.
    pg.restart()
    with ThreadPoolExecutor(4) as ex:
        statuses = list(ex.map(lambda _: server.get(EXPOSURE)[0], range(40)))
    assert statuses == [200] * 40
    _, body = server.get("/metrics")
    assert _metric_sum(body.decode(), "exposure_db_retries_total") >= 1
    # 2. The database stays down for longer than the retry window (2 s here): a request waits
    # the window out, then gets 503 (not a 500, not a hang); /readyz turns to 503 once the
    # outage is older than the window.
    pg.stop("fast")
    try:
        started = time.monotonic()
        status, body = server.get_json(EXPOSURE)
        waited = time.monotonic() - started
        assert status == 503 and body["success"] is False  # unavailable, not a 500
        assert 1.5 <= waited < 8, waited  # the window (2 s), bounded
        time.sleep(2.2)  # every worker's outage is older than the window now
        assert server.get("/readyz")[0] == 503
        assert server.get("/readyz")[0] == 503
    finally:
        pg.start()
    # The pooled connections are all dead now; no request may fail once the server is back.
    with ThreadPoolExecutor(4) as ex:
        statuses = list(ex.map(lambda _: server.get(EXPOSURE)[0], range(40)))
    assert statuses == [200] * 40
    assert server.get("/readyz")[0] == 200
    _, body = server.get("/metrics")
    assert _metric_sum(body.decode(), "exposure_db_connects_total") >= 2
    assert _metric_sum(body.decode(), "exposure_db_retries_total", reason="refused") >= 1


def test_a_request_rides_out_a_database_restart_within_the_retry_window(seeded, pg):
    """A request that arrives while the database is down waits, and succeeds once it is back;
    /readyz stays 200 meanwhile (a blip), and each retry is counted and logged."""
    srv = Server(pg, EXPOSURE_WORKERS="1", EXPOSURE_DB_RETRY_WINDOW="20")
    try:
        assert srv.get(EXPOSURE)[0] == 200  # this process has reached the database
        pg.stop("fast")
        result = {}
        t = threading.Thread(target=lambda: result.update(
            r=srv.get(EXPOSURE, headers={"X-Request-ID": "rid-retry-1"}, timeout=30)))
        started = time.monotonic()
        try:
            t.start()
            time.sleep(1.0)
            ready = srv.get_json("/readyz")  # down for ~1 s: still in the load balancer
        finally:
            pg.start()
        t.join(30)
        waited = time.monotonic() - started
        assert result["r"][0] == 200, result
        assert waited >= 1.0
        assert ready[0] == 200 and ready[1]["status"] == "ready", ready
        assert srv.get("/readyz")[0] == 200
        _, body = srv.get("/metrics")
        text = body.decode()
        assert _metric_sum(text, "exposure_db_retries_total") >= 2
        assert _metric_sum(text, "exposure_http_requests_total", route="/address/exposure/direct",
                           status="200") == 2
        time.sleep(0.3)
        retries = [e for e in srv.logs() if e.get("msg") == "database read retried"]
        mine = [e for e in retries if e.get("request_id") == "rid-retry-1"]
        assert mine and {e["reason"] for e in mine} <= {"refused", "shutting_down", "starting_up",
                                                        "connection_lost"}, retries[:3]
        assert all(e["attempt"] >= 1 and "retry_in_ms" in e for e in mine)
        text = srv.log_path.read_text()
        assert pg.app_password not in text and pg.owner_password not in text
    finally:
        srv.stop()


def test_sigterm_lets_the_in_flight_request_finish(seeded, pg, owner_conn):
    srv = Server(pg, EXPOSURE_WORKERS="1")
    try:
        assert srv.get(EXPOSURE)[0] == 200
        # Hold a lock so that the next request is in flight (waiting in PostgreSQL) at SIGTERM.
        owner_conn.autocommit = False
        with owner_conn.cursor() as cur:
            cur.execute("LOCK TABLE exposure.flows IN ACCESS EXCLUSIVE MODE")
        result = {}
        t = threading.Thread(target=lambda: result.update(r=srv.get(EXPOSURE, timeout=20)))
        t.start()
        time.sleep(1.0)
        started = time.monotonic()
        srv.proc.send_signal(15)
        time.sleep(1.0)
        owner_conn.rollback()  # release: the in-flight request completes
        t.join(20)
        rc = srv.proc.wait(20)
        assert result["r"][0] == 200
        assert rc == 0
        assert time.monotonic() - started < 10 + 5  # graceful_timeout + margin
    finally:
        owner_conn.rollback()
        owner_conn.autocommit = True
        srv.stop()

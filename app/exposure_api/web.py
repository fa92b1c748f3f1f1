"""HTTP layer: Flask routes, error mapping, request ids, access logs and request metrics."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

import psycopg2
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import __version__, db, metrics
from .config import Settings
from .logs import request_id_var
from .openapi import build_spec
from .queries import READY_SQL, fetch_exposure
from .validation import InvalidParameter, parse_exposure_query

log = logging.getLogger("exposure_api.http")
access_log = logging.getLogger("exposure_api.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


def _error(status: int, message: str, parameter: str | None = None, headers: dict | None = None):
    body = {"success": False, "error": {"message": message}}
    if parameter is not None:
        body["error"]["parameter"] = parameter
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _timed_read(settings: Settings, name: str, fn, retry_window: float | None = None):
    pool = db.get_pool(settings)
    started = time.perf_counter()
    outcome = "error"
    try:
        result = pool.run_readonly(fn, retry_window)
        outcome = "ok"
        return result
    finally:
        metrics.observe_query(name, outcome, time.perf_counter() - started)


def create_app(settings: Settings) -> Flask:
    app = Flask("exposure_api")
    app.config["SETTINGS"] = settings
    app.json.sort_keys = False
    app.json.compact = True
    spec = build_spec()
    metrics.BUILD_INFO.labels(__version__).set(1)

    # ---- request bookkeeping ------------------------------------------------------------
    @app.before_request
    def _start():
        g.started = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")
        g.request_id = rid if _REQUEST_ID.fullmatch(rid) else uuid.uuid4().hex
        g.token = request_id_var.set(g.request_id)

    @app.after_request
    def _finish(resp: Response):
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        started = g.get("started")
        elapsed = time.perf_counter() - (started if started is not None else time.perf_counter())
        route = req.url_rule.rule if req.url_rule is not None else "unmatched"
        metrics.observe_request(route, req.method, str(resp.status_code), elapsed)
        resp.headers["X-Request-ID"] = g.get("request_id", "")
        if route != "/metrics":
            access_log.info("request", extra={
                "method": req.method, "route": route, "path": req.path,
                "query": req.query_string[:300].decode("latin-1"), "status": resp.status_code,
                "duration_ms": round(elapsed * 1000, 3), "remote": req.remote_addr})
        return resp

    @app.teardown_request
    def _teardown(_exc):
        token = g.pop("token", None)
        if token is not None:
            request_id_var.reset(token)

    # ---- errors -------------------------------------------------------------------------
    @app.errorhandler(InvalidParameter)
    def _invalid(exc: InvalidParameter):
        return _error(400, exc.message, exc.parameter)

    @app.errorhandler(db.PoolTimeout)
    def _busy(_exc):
        log.warning("no free database connection")
        return _error(503, "database busy, retry", headers={"Retry-After": "1"})

    # The database stayed unavailable for the whole retry window (db.Pool.run_readonly), or a
    # statement timeout: the client may retry later. Any other database
    # error (e.g. a missing privilege) is a bug or a misconfiguration and falls through to 500.
    @app.errorhandler(psycopg2.OperationalError)
    @app.errorhandler(psycopg2.InterfaceError)
    def _db_error(exc: psycopg2.Error):
        log.warning("database unavailable: %s", type(exc).__name__,
                    extra={"pgcode": getattr(exc, "pgcode", None)})
        return _error(503, "database unavailable, retry", headers={"Retry-After": "1"})

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        resp = _error(exc.code or 500, exc.description or exc.name)
        if exc.code == 405:
            resp.headers["Allow"] = ", ".join(exc.valid_methods or [])  # type: ignore[attr-defined]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error("unhandled error", exc_info=exc)
        return _error(500, "internal error")

    # ---- routes -------------------------------------------------------------------------
    @app.get("/address/exposure/direct")
    def exposure():
        q = parse_exposure_query(request.args.items(multi=True))
        rows = _timed_read(settings, "exposure", lambda cur: fetch_exposure(cur, q))
        return {"data": rows, "success": True}

    @app.get("/livez")
    def livez():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        if settings.drain_file and os.path.exists(settings.drain_file):
            return {"status": "draining"}, 503
        try:
            # One attempt (and the one immediate retry after a dead pooled connection): the
            # load balancer's check gives up after 1 s.
            _timed_read(settings, "ready", lambda cur: cur.execute(READY_SQL), retry_window=0.0)
        except (psycopg2.Error, db.PoolTimeout) as exc:
            if db.unavailable_reason(exc) and db.get_pool(settings).within_grace():
                # A blip (a switchover): requests wait it out for the retry window, so keep
                # this instance in the load balancer until the outage outlasts the window.
                log.warning("database unavailable, within the retry window: still ready",
                            extra={"error": type(exc).__name__})
                return {"status": "ready", "database": "unavailable, requests retrying"}
            log.warning("not ready: %s", type(exc).__name__)
            return {"status": "database unavailable"}, 503
        return {"status": "ready"}

    @app.get("/metrics")
    def metrics_view():
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    @app.get("/openapi.json")
    def openapi():
        return spec

    return app

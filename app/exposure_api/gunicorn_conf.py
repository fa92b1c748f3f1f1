"""Gunicorn settings derived from `Settings` (used by `exposure-api serve`).

* workers: EXPOSURE_WORKERS, default 2 x CPUs + 1; gthread worker class with EXPOSURE_THREADS
  threads, each worker with its own DB pool of EXPOSURE_DB_POOL_MAX connections (keep
  pool max >= threads).
* SIGTERM: gunicorn stops accepting, lets in-flight requests finish for at most
  graceful_timeout seconds, then exits. Drain first (EXPOSURE_DRAIN_FILE) so the load balancer
  stops sending before the signal.
* Worker recycling: max_requests with jitter, so workers do not all restart at once.
* timeout: a worker silent for this long is killed and replaced.
"""

from __future__ import annotations

from gunicorn.glogging import Logger

from . import metrics
from .config import Settings
from .logs import logging_dict


class AppLogger(Logger):
    """gunicorn's logger without its access line: the app writes one JSON access line per
    request itself (with the request id and the route). gunicorn would otherwise build its
    access-log atoms for every request, only to drop them (gunicorn.access is at WARNING)."""

    def access(self, resp, req, environ, request_time):
        pass


def _child_exit(server, worker):
    # Drop the dead worker's live gauges from the multiprocess files.
    metrics.mark_worker_dead(worker.pid)


def _post_fork(server, worker):
    # The pool is created lazily per process; make sure nothing inherited is reused.
    from . import db
    db.reset_pool()


def options(settings: Settings) -> dict:
    return {
        "bind": [settings.bind],
        "workers": settings.worker_count(),
        "worker_class": "gthread",
        "threads": settings.threads,
        "max_requests": settings.max_requests,
        "max_requests_jitter": settings.max_requests_jitter,
        "graceful_timeout": settings.graceful_timeout,
        "timeout": settings.timeout,
        "keepalive": settings.keepalive,
        "backlog": 2048,
        "preload_app": False,
        "proc_name": "exposure-api",
        "accesslog": None,
        "logger_class": AppLogger,
        "errorlog": "-",
        "logconfig_dict": logging_dict(settings.log_level),
        "limit_request_line": 4094,
        "limit_request_fields": 50,
        "forwarded_allow_ips": "127.0.0.1",
        "child_exit": _child_exit,
        "post_fork": _post_fork,
    }

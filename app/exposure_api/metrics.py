"""Prometheus metrics, correct across gunicorn workers.

`exposure-api serve` sets PROMETHEUS_MULTIPROC_DIR (a fresh directory) before anything imports
prometheus_client, so every worker writes its samples to mmap files there and /metrics
aggregates all workers (counters and histograms summed, gauges summed over live workers).
Without that variable (unit tests, a single process) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest, multiprocess)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter("exposure_http_requests_total", "HTTP requests answered",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("exposure_http_request_duration_seconds", "HTTP request latency",
                         ["route", "method", "status"], buckets=LATENCY_BUCKETS)
DB_QUERY_LATENCY = Histogram("exposure_db_query_duration_seconds",
                             "Database query latency (successful and failed)", ["query", "outcome"],
                             buckets=LATENCY_BUCKETS)
DB_POOL_IN_USE = Gauge("exposure_db_pool_connections_in_use", "Pooled connections checked out",
                       multiprocess_mode="livesum")
DB_POOL_IDLE = Gauge("exposure_db_pool_connections_idle", "Pooled connections idle",
                     multiprocess_mode="livesum")
DB_POOL_WAIT = Histogram("exposure_db_pool_wait_seconds", "Time to get a pooled connection",
                         buckets=LATENCY_BUCKETS)
DB_POOL_TIMEOUTS = Counter("exposure_db_pool_timeouts_total", "Requests that found no free connection")
DB_CONNECTS = Counter("exposure_db_connects_total", "New database connections opened")
DB_CONNECT_ERRORS = Counter("exposure_db_connect_errors_total", "Failed attempts to connect")
DB_RETRIES = Counter("exposure_db_retries_total",
                     "Reads retried on a new connection because the database was not available, by "
                     "reason (connection_lost, refused, shutting_down, starting_up, timeout, unreachable)",
                     ["reason"])
BUILD_INFO = Gauge("exposure_build_info", "Version of the running app", ["version"],
                   multiprocess_mode="max")


# labels() takes a lock and builds a key on every call; requests reuse a handful of label sets,
# so keep their children (per process, like the samples themselves).
_children: dict[tuple, tuple] = {}


def observe_request(route: str, method: str, status: str, seconds: float) -> None:
    key = ("http", route, method, status)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (HTTP_REQUESTS.labels(route, method, status),
                                     HTTP_LATENCY.labels(route, method, status))
    children[0].inc()
    children[1].observe(seconds)


def observe_query(query: str, outcome: str, seconds: float) -> None:
    key = ("db", query, outcome)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (DB_QUERY_LATENCY.labels(query, outcome),)
    children[0].observe(seconds)


def retried(reason: str) -> None:
    DB_RETRIES.labels(reason).inc()


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def render() -> tuple[bytes, str]:
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)

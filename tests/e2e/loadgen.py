"""Constant-rate HTTP load generator (standard library only; runs inside a client container).

Open loop: request i is scheduled at start + i / rate whatever happened to earlier ones, and its
latency is measured from that scheduled time (a stall shows up as latency, not as fewer
requests). One new TCP connection per request, as many independent clients of a passthrough load
balancer would. A request counts as failed unless it gets HTTP 200 with `"success":true`.

Bounded: stops at --max-seconds or --max-requests, or earlier when a line "stop" (or EOF)
arrives on stdin. Prints "started" when the first request is scheduled, then one JSON summary
line at the end: sent, ok, failed, p50/p99/max latency (ms), seconds, the first errors and the
wall-clock times of every failure (capped).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def request(host: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "vpcstack-loadgen"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 200 and b'"success":true' in body:
            return True, ""
        return False, f"HTTP {resp.status}"
    except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
        return False, f"{type(exc).__name__}: {exc}"[:160]
    finally:
        conn.close()


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--max-requests", type=int, default=20000)
    ap.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    ap.add_argument("--workers", type=int, default=64)
    args = ap.parse_args()
    if not (0 < args.rate <= 500 and 0 < args.max_seconds <= 3600 and 0 < args.max_requests <= 200000):
        print("refusing: rate <= 500/s, max-seconds <= 3600, max-requests <= 200000", file=sys.stderr)
        return 2
    u = urllib.parse.urlsplit(args.url)
    host, port = u.hostname, u.port or 80
    path = u.path + ("?" + u.query if u.query else "")

    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[tuple[float, str]] = []

    def one(scheduled: float) -> None:
        ok, err = request(host, port, path, args.timeout)
        done = time.monotonic()
        with lock:
            latencies.append(done - scheduled)
            if not ok:
                failures.append((time.time() - (done - scheduled), err))

    start = time.monotonic()
    start_wall = time.time()
    sent = 0
    print("started", flush=True)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        while not stop.is_set() and sent < args.max_requests:
            scheduled = start + sent / args.rate
            if scheduled - start > args.max_seconds:
                break
            delay = scheduled - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            pool.submit(one, scheduled)
            sent += 1
    seconds = time.monotonic() - start
    lat = sorted(latencies)
    failures.sort()
    errors: dict[str, int] = {}
    for _, e in failures:
        errors[e] = errors.get(e, 0) + 1
    print(json.dumps({
        "sent": sent, "ok": sent - len(failures), "failed": len(failures),
        "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": (lat[-1] if lat else 0) * 1000, "seconds": seconds, "rate": args.rate,
        "start": start_wall, "errors": errors,
        "failure_times": [t for t, _ in failures[:2000]],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-app`: the exposure endpoint under gunicorn vs the same SQL through psycopg2.

1. Starts a throwaway PostgreSQL 15 (TLS verify-full, SCRAM), migrates, seeds --flows rows.
2. Samples addresses from the data set two ways: uniformly over distinct addresses (most have a
   handful of rows), and weighted by flow rows (the address of a random row: busy addresses
   come up as often as they occur in the data).
3. Starts `exposure-api serve` (gunicorn, production settings) on a loopback port.
4. For each sampling, runs a bounded closed-loop load (CONCURRENCY processes, each one request at a time, at most
   --max-requests in total and --duration seconds) against the endpoint, then the same SQL with
   the same parameters through psycopg2 (one connection per process, same TLS), after a warm-up
   of each.
5. Prints throughput, p50/p99 latency for both, their ratio, the targets, and EXPLAIN ANALYZE of
   the query for a typical and for the busiest address.

Only loopback is ever contacted. Everything is torn down at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pgcluster import PgCluster  # noqa: E402

BENCH_PG_CONF = """
shared_buffers = '1GB'
effective_cache_size = '4GB'
work_mem = '16MB'
maintenance_work_mem = '512MB'
max_parallel_maintenance_workers = 2
jit = off
"""


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# ---- load workers (run in child processes) ---------------------------------------------------
def _http_worker(args) -> tuple[list[float], int, float, float]:
    port, addresses, n_max, deadline, seed = args
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat, errors = [], 0
    first = time.perf_counter()
    while len(lat) + errors < n_max and time.time() < deadline:
        path = "/address/exposure/direct?address=" + urllib.parse.quote(rng.choice(addresses))
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            ok = resp.status == 200 and body.startswith(b'{"data":')
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        if ok:
            lat.append(time.perf_counter() - t0)
        else:
            errors += 1
    last = time.perf_counter()
    conn.close()
    return lat, errors, first, last


def _sql_worker(args) -> tuple[list[float], int, float, float]:
    dsn, addresses, n_max, deadline, seed = args
    import psycopg2

    from exposure_api.queries import EXPOSURE_SQL, exposure_params
    from exposure_api.validation import parse_exposure_query

    rng = random.Random(seed)
    conn = psycopg2.connect(**dsn)
    conn.set_session(readonly=True, autocommit=True)
    lat, errors = [], 0
    first = time.perf_counter()
    with conn.cursor() as cur:
        while len(lat) + errors < n_max and time.time() < deadline:
            params = exposure_params(parse_exposure_query([("address", rng.choice(addresses))]))
            t0 = time.perf_counter()
            try:
                cur.execute(EXPOSURE_SQL, params)
                cur.fetchall()
                lat.append(time.perf_counter() - t0)
            except psycopg2.Error:
                errors += 1
    last = time.perf_counter()
    conn.close()
    return lat, errors, first, last


def run_load(kind: str, target, addresses: list[str], concurrency: int, max_requests: int,
             duration: float, seed: int) -> dict:
    worker = _http_worker if kind == "api" else _sql_worker
    per = max(1, max_requests // concurrency)
    deadline = time.time() + duration
    jobs = [(target, addresses, per, deadline, seed * 1000 + i) for i in range(concurrency)]
    ctx = mp.get_context("fork")
    started = time.perf_counter()
    with ctx.Pool(concurrency) as pool:
        results = pool.map(worker, jobs)
    wall = time.perf_counter() - started
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    span = max(r[3] for r in results) - min(r[2] for r in results)
    return {
        "requests": len(lat), "errors": errors, "seconds": round(span, 2),
        "throughput": len(lat) / span if span > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"), "wall": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=5_000_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per measured phase (bound)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="requests per phase (bound)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per phase")
    ap.add_argument("--sample", type=int, default=5000, help="addresses sampled from the data set")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="gunicorn workers (0: 2 x CPUs + 1)")
    ap.add_argument("--threads", type=int, default=0, help="threads per worker (0: app default)")
    ap.add_argument("--sampling", nargs="+", choices=["uniform", "weighted"],
                    default=["uniform", "weighted"],
                    help="address sampling: uniform over distinct addresses, weighted by flow rows")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    from exposure_api.config import Settings
    from exposure_api.migrate import connect_owner, migrate
    from exposure_api.queries import EXPOSURE_SQL, exposure_params
    from exposure_api.seed import counterparty_stats, load
    from exposure_api.validation import parse_exposure_query
    from server_util import Server

    t0 = time.monotonic()
    pg = PgCluster.create(extra_conf=BENCH_PG_CONF)
    server = None
    try:
        settings = Settings.from_env(pg.env())
        owner = connect_owner(settings)
        migrate(owner, settings.db_user)
        seeded = load(owner, args.flows, args.seed, log=lambda s: None)
        owner.autocommit = True
        with owner.cursor() as cur:
            cur.execute("SELECT pg_size_pretty(pg_table_size('exposure.flows')),"
                        " pg_size_pretty(pg_indexes_size('exposure.flows'))")
            table_size, index_size = cur.fetchone()
            cur.execute("SELECT count(*) FROM (SELECT DISTINCT address FROM exposure.flows) a")
            (n_addresses,) = cur.fetchone()
            # uniform: every address equally likely. weighted: the address of a random flow row,
            # i.e. an address drawn in proportion to how often it occurs in the data set.
            cur.execute("SELECT address FROM (SELECT DISTINCT address FROM exposure.flows) a"
                        " ORDER BY md5(address || %s) LIMIT %s", (str(args.seed), args.sample))
            samples = {"uniform": [r[0] for r in cur.fetchall()]}
            cur.execute("SELECT setseed(%s)", (1.0 / (args.seed + 1),))
            cur.execute("SELECT address FROM exposure.flows TABLESAMPLE BERNOULLI (%s) REPEATABLE (%s)"
                        " LIMIT %s", (min(100.0, 100.0 * 3 * args.sample / max(1, seeded["rows"])),
                                      args.seed, args.sample))
            samples["weighted"] = [r[0] for r in cur.fetchall()]
            rows_per = {}
            for name, addrs in samples.items():
                cur.execute("SELECT a, (SELECT count(*) FROM exposure.flows WHERE address = a)"
                            " FROM unnest(%s::text[]) a", (addrs,))
                rows_per[name] = sorted(c for _, c in cur.fetchall())
            addresses = samples["uniform"]
            cur.execute("SELECT address FROM exposure.flows GROUP BY address ORDER BY count(*) DESC LIMIT 1")
            (busiest,) = cur.fetchone()
            # Warm the cache: the whole index, as a steadily used server would have it.
            cur.execute("SELECT count(*) FROM exposure.flows WHERE address >= ''")
        stats = counterparty_stats(owner)
        print(f"data: {seeded['rows']:,} flow rows, {n_addresses:,} addresses; table {table_size},"
              f" index {index_size}; seeded in {seeded['total_s']} s")
        print(f"counterparties per address: {json.dumps(stats)}")
        for name, rp in rows_per.items():
            print(f"{name} sample of {len(rp)} addresses: flow rows per request p50 {percentile(rp, 50)},"
                  f" p99 {percentile(rp, 99)}, max {rp[-1]}")

        env = {}
        if args.workers:
            env["EXPOSURE_WORKERS"] = str(args.workers)
        if args.threads:
            env["EXPOSURE_THREADS"] = str(args.threads)
        env.setdefault("EXPOSURE_WORKERS", str(settings.worker_count()))
        env.setdefault("EXPOSURE_THREADS", str(settings.threads))
        env["EXPOSURE_DB_POOL_MAX"] = env["EXPOSURE_THREADS"]
        env["EXPOSURE_MAX_REQUESTS"] = "0"     # no recycling in the middle of a measurement
        server = Server(pg, **env)
        print(f"gunicorn: {env['EXPOSURE_WORKERS']} workers x {env['EXPOSURE_THREADS']} threads"
              f" (gthread); load: {args.concurrency} concurrent clients, closed loop,"
              f" at most {args.duration:.0f} s and {args.max_requests:,} requests per phase")

        dsn = settings.dsn_kwargs()
        verdict = {}
        for name in args.sampling:
            addrs = samples[name]
            results = {}
            for kind, target in (("api", server.port), ("direct", dsn)):
                run_load(kind, target, addrs, args.concurrency, 10**9, args.warmup, args.seed + 99)
                results[kind] = run_load(kind, target, addrs, args.concurrency, args.max_requests,
                                         args.duration, args.seed)
            print(f"\n[{name} sampling]")
            print(f"{'':8} {'requests':>9} {'errors':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
            for kind in ("api", "direct"):
                r = results[kind]
                print(f"{kind:8} {r['requests']:>9,} {r['errors']:>6} {r['throughput']:>9.0f}"
                      f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
            ratio = results["api"]["throughput"] / results["direct"]["throughput"]
            print(f"ratio api/direct throughput: {ratio:.2f}")
            ok = {"ratio": ratio >= 0.6, "p99": results["api"]["p99_ms"] < 50,
                  "errors": results["api"]["errors"] == 0 and results["direct"]["errors"] == 0}
            verdict[name] = ok
            print(f"targets: ratio >= 0.6 {'MET' if ok['ratio'] else 'MISSED'};"
                  f" API p99 < 50 ms {'MET' if ok['p99'] else 'MISSED'};"
                  f" zero errors {'MET' if ok['errors'] else 'MISSED'}")
            print("RESULT " + json.dumps({"sampling": name, "api_rps": round(results["api"]["throughput"]),
                                          "direct_rps": round(results["direct"]["throughput"]),
                                          "api_p50_ms": round(results["api"]["p50_ms"], 2),
                                          "api_p99_ms": round(results["api"]["p99_ms"], 2),
                                          "direct_p50_ms": round(results["direct"]["p50_ms"], 2),
                                          "direct_p99_ms": round(results["direct"]["p99_ms"], 2),
                                          "ratio": round(ratio, 3)}))

        conn = pg.connect("exposure_app", "exposure", pg.app_password)
        with conn.cursor() as cur:
            cur.execute("SELECT address FROM exposure.flows WHERE address = ANY(%s) GROUP BY address"
                        " ORDER BY abs(count(*) - %s), address LIMIT 1",
                        (addresses, percentile(rows_per["uniform"], 50)))
            (typical,) = cur.fetchone()
            for label, addr in (("typical", typical), ("busiest", busiest)):
                params = exposure_params(parse_exposure_query([("address", addr)]))
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + EXPOSURE_SQL, params)
                print(f"\nEXPLAIN ANALYZE, {label} address {addr}:")
                for (line,) in cur.fetchall():
                    print("  " + line)
        conn.close()
        print(f"\nbench total {time.monotonic() - t0:.0f} s")
        if args.strict and not all(all(v.values()) for v in verdict.values()):
            return 1
        return 0 if all(v["errors"] for v in verdict.values()) else 1
    finally:
        if server is not None:
            server.stop()
        pg.destroy()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Steady write load through the database endpoint, for the failover bench and tests.

Runs inside a client container (python3 + psycopg2 from Debian). One row per INSERT, autocommit:
an INSERT that returns is a commit the server acknowledged (in synchronous mode: one that a
synchronous standby has too). Every acknowledged row is printed on stdout as

    ack <id> <unix time> <server address>

and every failed attempt as `err <unix time> <message>`. Bounded: stops after --duration
seconds, --max-rows rows, or when --stop-file appears. The password comes from the environment
(PGPASSWORD), never from the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psycopg2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=5432)
    ap.add_argument("--dbname", default="exposure")
    ap.add_argument("--user", default="exposure_owner")
    ap.add_argument("--sslrootcert", required=True)
    ap.add_argument("--table", default="exposure.failover_bench")
    ap.add_argument("--interval", type=float, default=0.05, help="pause between writes (s)")
    ap.add_argument("--duration", type=float, default=600, help="hard limit (s)")
    ap.add_argument("--max-rows", type=int, default=100000)
    ap.add_argument("--stop-file", default="/tmp/failover-writer.stop")
    ap.add_argument("--start-id", type=int, default=1)
    ap.add_argument("--tcp-user-timeout-ms", type=int, default=5000,
                    help="give up on a connection whose sent data stays unacknowledged this long (a frozen "
                         "or vanished server: keepalives do not fire while a query is outstanding)")
    args = ap.parse_args()
    if "PGPASSWORD" not in os.environ:
        print("writer: PGPASSWORD is not set", file=sys.stderr)
        return 2

    dsn = (f"host={args.host} port={args.port} dbname={args.dbname} user={args.user} "
           f"sslmode=verify-full sslrootcert={args.sslrootcert} connect_timeout=2 "
           "keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=2 "
           f"tcp_user_timeout={args.tcp_user_timeout_ms} "
           "application_name=failover-writer")
    deadline = time.monotonic() + args.duration
    conn = None
    next_id = args.start_id
    written = 0
    while time.monotonic() < deadline and written < args.max_rows and not os.path.exists(args.stop_file):
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SET statement_timeout = '5s'")
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {args.table} (id) VALUES (%s) RETURNING host(inet_server_addr())",
                            (next_id,))
                server = cur.fetchone()[0]
            print(f"ack {next_id} {time.time():.3f} {server}", flush=True)
            written += 1
            next_id += 1
            time.sleep(args.interval)
        except psycopg2.Error as exc:
            msg = " ".join(str(exc).split())[:160]
            print(f"err {time.time():.3f} {msg}", flush=True)
            if conn is not None:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
            conn = None
            # The id may or may not have been committed (unknown outcome): skip it so that every
            # acknowledged id is unique, and never count an unacknowledged one.
            next_id += 1
            time.sleep(0.1)
    if conn is not None:
        conn.close()
    print(f"done {written}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Failover bench: under a steady write load through the database endpoint, take the leader away
N times by a clean stop of its host and N times by a hard kill, and print, per run and as
median/maximum, the seconds from the event to the first acknowledged write on a new primary,
and the acknowledged writes that are missing afterwards.

    python3 tests/failover/bench.py --stack mpatroni --runs 5

Clean stop: `docker stop` (systemd shuts the VM stand-in down: Patroni stops PostgreSQL and
releases the leader key). Hard crash: `docker kill` (SIGKILL to everything: the leader key
must expire). After each run the old leader's host is started again and the bench waits until
the cluster is whole (three members running, replicas caught up) before the next event.
Everything is bounded: each event waits at most --event-timeout seconds, each recovery at most
--recover-timeout, and the writer stops after the last run (or its own hard limit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from stack import Acks, Stack, StackError, sh  # noqa: E402

TABLE = "exposure.failover_bench"


def settings(stack: Stack) -> str:
    cfg = stack.rest("/config") or {}
    return (f"ttl={cfg.get('ttl')} loop_wait={cfg.get('loop_wait')} retry_timeout={cfg.get('retry_timeout')} "
            f"synchronous_mode={cfg.get('synchronous_mode')} "
            f"(endpoint checks: inter 1s fall 2 rise 1, on-marked-down shutdown-sessions)")


def one_run(stack: Stack, acks: Acks, kind: str, n: int, event_timeout: float, recover_timeout: float) -> dict:
    stack.wait_healthy(timeout=recover_timeout)
    time.sleep(2)  # a steady state: writes flowing on the current primary
    leader = stack.leader()
    if not leader:
        raise StackError("no leader before the event")
    old_address = stack.address(leader)
    before = acks.count()
    t0 = time.time()
    if kind == "stop":
        sh("docker", "stop", leader, timeout=120)
    else:
        sh("docker", "kill", leader, timeout=60)
    first = stack.wait(f"a write on a new primary after {kind} of {leader}",
                       lambda: acks.first_after(t0, not_server=old_address), event_timeout, 0.05)
    seconds = first[1] - t0
    new_leader = stack.leader()
    print(f"  {kind:<4} #{n}: leader {leader} -> {new_leader or '?'}: first write after {seconds:6.2f} s "
          f"({acks.count() - before} writes acknowledged since)", flush=True)
    sh("docker", "start", leader, timeout=60)
    stack.wait_healthy(timeout=recover_timeout)
    return {"kind": kind, "run": n, "old_leader": leader, "new_leader": new_leader, "seconds": round(seconds, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", default=os.environ.get("VPCSTACK_STACK", "vpcstack"))
    ap.add_argument("--client", help="client container on the app subnet (default: group db_clients, else app)")
    ap.add_argument("--runs", type=int, default=5, help="events of each kind (at least 5)")
    ap.add_argument("--event-timeout", type=float, default=90)
    ap.add_argument("--recover-timeout", type=float, default=240)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.runs < 1 or args.runs > 20:
        ap.error("--runs must be between 1 and 20")

    stack = Stack(args.stack, client=args.client)
    stack.wait_healthy(timeout=args.recover_timeout)
    print(f"failover bench on stack {stack.name}: members {', '.join(stack.members)}, endpoint {stack.endpoint}, "
          f"client {stack.client}")
    print(f"settings: {settings(stack)}")
    stack.sql(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id bigint PRIMARY KEY, ts timestamptz DEFAULT now())")

    # Hard limit for the writer: every run at its worst, plus margin.
    duration = 2 * args.runs * (args.event_timeout + args.recover_timeout + 30) + 60
    writer = stack.start_writer(TABLE, duration=duration, interval=0.05)
    acks = Acks(writer)
    results = []
    try:
        stack.wait("the first acknowledged writes", lambda: acks.count() >= 10, 60, 0.2)
        for kind in ("stop", "kill"):
            print(f"{'clean stop of the leader host (docker stop)' if kind == 'stop' else 'hard crash of the leader host (docker kill)'}:")
            for n in range(1, args.runs + 1):
                results.append(one_run(stack, acks, kind, n, args.event_timeout, args.recover_timeout))
        time.sleep(2)
    finally:
        stack.stop_writer(writer)
        for m in stack.members:       # never leave a member stopped
            if not stack.running(m):
                sh("docker", "start", m, check=False)
    stack.wait_healthy(timeout=args.recover_timeout)

    acked = set(acks.ids())
    present = set(int(x) for x in stack.sql(f"SELECT id FROM {TABLE}").stdout.split())
    lost = sorted(acked - present)
    stack.sql(f"DROP TABLE {TABLE}")

    print()
    print(f"{'event':<12}{'runs':>5}{'median s':>10}{'max s':>8}   per run (s)")
    summary = {}
    for kind, label in (("stop", "clean stop"), ("kill", "hard crash")):
        secs = [r["seconds"] for r in results if r["kind"] == kind]
        summary[kind] = {"runs": len(secs), "median": statistics.median(secs), "max": max(secs), "seconds": secs}
        print(f"{label:<12}{len(secs):>5}{statistics.median(secs):>10.2f}{max(secs):>8.2f}   "
              + " ".join(f"{s:.2f}" for s in secs))
    print(f"acknowledged writes: {len(acked)}; acknowledged but lost: {len(lost)}"
          + (f" (ids {lost[:20]})" if lost else ""))
    print(f"settings: {settings(stack)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"stack": stack.name, "settings": settings(stack), "runs": results, "summary": summary,
                       "acknowledged": len(acked), "lost": lost}, f, indent=2)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())

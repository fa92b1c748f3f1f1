"""`make bench-deploy`: the rolling-deploy and stopped-instance figures as the median of N runs.

On its own stack (default `bench-<hash of the checkout path>`, subnets 10.<100-199>.x; brought
up with site.yml unless it is already running), under a constant request rate through the app load balancer from the
allowlisted client container:
  * N rolling deploys (playbooks/deploy.yml, batch 1), each to a new test release (installed and
    migrated during the deploy): requests sent, failed, p50/p99 latency during each deploy, and
    the deploy's duration;
  * N times one app container stopped (`docker stop`: the unit drains before SIGTERM), then N
    times one killed (`docker kill`: a crash), a different one each time: failed requests, and
    seconds until the load balancer stopped routing to it; then it is started again and waited
    for until it is back UP.
Prints every run, then the medians. Tears the stack down at the end unless --keep.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from stack import (REPO, Stack, StackLock, default_stack, fmt_load, make_release, median,  # noqa: E402
                   source_version)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second (<= 200)")
    name, octet = default_stack("bench")
    ap.add_argument("--stack", default=name, help="stack name (default: bench-<hash of the checkout path>)")
    ap.add_argument("--octet", type=int, default=octet, help="subnets 10.<octet>.{1,2,3}.0/24")
    ap.add_argument("--keep", action="store_true", help="leave the stack up (a later run reuses it)")
    args = ap.parse_args()
    if args.runs < 3 or not 0 < args.rate <= 200 or args.stack == "vpcstack":
        ap.error("--runs >= 3, 0 < --rate <= 200, and not the `make up` stack (vpcstack)")

    with StackLock(args.stack):
        return bench(args)


def bench(args) -> int:
    stack = Stack(args.stack, args.octet)
    t0 = time.monotonic()
    if not stack.exists():
        print(f"bench-deploy: bringing up stack {stack.name} (site.yml) ...", flush=True)
        run = stack.playbook("site.yml", tag="site")
        if run.rc != 0:
            print(f"site.yml failed, see {run.log}", file=sys.stderr)
            return 1
        print(f"  site.yml from nothing: {run.seconds:.0f} s", flush=True)
    try:
        base = source_version()
        root = stack.workdir / "wheelhouse"
        root.mkdir()
        (root / base).symlink_to(REPO / "dist" / "wheelhouse" / base)
        stamp = time.strftime("%H%M%S")
        versions = [f"{base}+bench.{stamp}.{i + 1}" for i in range(args.runs)]
        for v in versions:
            make_release(root / base, v, root)

        deploys = []
        for i in range(args.runs):
            target = versions[i]
            with stack.load(rate=args.rate, max_seconds=600, max_requests=int(args.rate * 600)) as load:
                run = stack.playbook("playbooks/deploy.yml", "-e", f"app_version={target}",
                                     "-e", f"app_wheelhouse_root={root}", tag=f"deploy-{i + 1}")
                r = load.stop()
            if run.rc != 0:
                print(f"deploy {i + 1} failed, see {run.log}", file=sys.stderr)
                return 1
            r["deploy_s"] = run.seconds
            deploys.append(r)
            print(f"deploy {i + 1} -> {target}: {run.seconds:.0f} s; {fmt_load(r)}", flush=True)

        stops: dict[str, list[dict]] = {"stop": [], "kill": []}
        for how in ("stop", "kill"):
            for i in range(args.runs):
                victim = stack.apps[i % len(stack.apps)]
                r = stack.stop_under_load(victim, how, args.rate)
                if r["to_down_s"] is None:
                    r["to_down_s"] = float("nan")
                stops[how].append(r)
                print(f"docker {how} {i + 1} ({victim}): {r['failed']} of {r['sent']} requests failed; "
                      f"LB stopped routing to it after {r['to_down_s']:.1f} s; errors {r['errors']}", flush=True)

        print(f"\n=== bench-deploy: median of {args.runs} runs at {args.rate:g} req/s "
              f"({len(stack.apps)} instances, batch 1)")
        print(f"rolling deploy: requests {median([d['sent'] for d in deploys]):.0f}, "
              f"failed {median([d['failed'] for d in deploys]):.0f} (max {max(d['failed'] for d in deploys)}), "
              f"p50 {median([d['p50_ms'] for d in deploys]):.1f} ms, p99 {median([d['p99_ms'] for d in deploys]):.1f} ms, "
              f"deploy {median([d['deploy_s'] for d in deploys]):.0f} s")
        for how, what in (("stop", "stopped instance (docker stop: shutdown drains first)"),
                          ("kill", "killed instance (docker kill: a crash)")):
            runs = stops[how]
            print(f"{what}: failed requests {median([s['failed'] for s in runs]):.0f} "
                  f"(of {median([s['sent'] for s in runs]):.0f}), LB stopped routing to it after "
                  f"{median([s['to_down_s'] for s in runs]):.1f} s")
        print(f"(bench wall time {time.monotonic() - t0:.0f} s; logs in {stack.logs})")
        return 0
    finally:
        if not args.keep:
            stack.teardown()


if __name__ == "__main__":
    sys.exit(main())

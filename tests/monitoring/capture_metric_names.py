#!/usr/bin/env python3
"""Refresh fixtures/metric-names.txt: every metric name a running stack's Prometheus has seen.

    VPCSTACK_STACK=<stack> python tests/monitoring/capture_metric_names.py -i INVENTORY [--haproxy FILE]

Asks the stack's Prometheus (as check_targets.py finds it) for /api/v1/label/__name__/values and
merges names from an HAProxy /metrics dump (--haproxy; the molecule scenario has no HAProxy).
Names the tests derive themselves (the app's, from its code; pgBackRest's backup metrics, from
the collector run on recorded output) need not be here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import ssl
import urllib.request

import check_targets

OUT = pathlib.Path(__file__).parent / "fixtures" / "metric-names.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--inventory", action="append", required=True)
    parser.add_argument("--haproxy", help="a saved HAProxy /metrics page")
    args = parser.parse_args()
    inv = check_targets.inventory(args.inventory, [])
    mon = check_targets.monitoring_host(inv)
    hostvars = inv["_meta"]["hostvars"][mon]
    stack = os.environ.get("VPCSTACK_STACK") or hostvars.get("vpcstack_stack", "vpcstack")
    ca = os.path.expanduser(f"~/.local/share/vpcstack/{stack}/pki/ca.crt")
    url = f"https://{hostvars.get('ansible_ssh_host', mon)}:9090/api/v1/label/__name__/values"
    with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=ca), timeout=10) as response:
        names = set(json.load(response)["data"])
    if args.haproxy:
        names |= {m.group(1) for m in re.finditer(r"^(haproxy_[a-z0-9_]+)", pathlib.Path(args.haproxy).read_text(), re.M)}
    names = {n for n in names if not n.startswith("vpcstack:")}   # recording rules come from the rule files
    header = [
        "# Metric names seen by the Prometheus of a running stack (node_exporter 1.5, postgres_exporter 0.11,",
        "# Patroni 3.0.2, redis_exporter 1.45, Prometheus 2.42, the textfile collectors) and HAProxy 2.6's",
        f"# exporter; written by tests/monitoring/capture_metric_names.py on {datetime.date.today()}.",
    ]
    OUT.write_text("\n".join(header + sorted(names)) + "\n")
    print(f"{len(names)} names written to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

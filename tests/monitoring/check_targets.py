#!/usr/bin/env python3
"""Every Prometheus target of a running stack is up, and the targets are what the inventory says.

    VPCSTACK_STACK=<stack> python tests/monitoring/check_targets.py -i INVENTORY [-i ...] [-e @vars.yml]
                                                                  [--timeout 180]

The expected targets are computed from the inventory the same way roles/prometheus renders them:
each scrape job (roles/prometheus/defaults/main.yml, or prometheus_scrape_jobs of the monitoring
host, plus its prometheus_extra_scrape_jobs) times the hosts of the job's groups. Prometheus is
asked over TLS (the stack's internal CA, from vpcstack_secrets_dir on the control node) for its
active targets until all expected ones are up or the timeout passes. Prints one line per target
and a summary; exit status 1 when a target is missing, unexpected, or not up.

Used by molecule/monitoring's verifier and by the local stack's end-to-end test.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import ssl
import subprocess
import sys
import time
import urllib.request

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


def unwrap(value):
    """ansible-inventory marks values from dynamic sources as {"__ansible_unsafe": value}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


def inventory(sources: list[str], extra_vars: list[str]) -> dict:
    beside = pathlib.Path(sys.executable).parent / "ansible-inventory"
    cmd = [str(beside) if beside.exists() else "ansible-inventory", "--list"]
    for source in sources:
        cmd += ["-i", source]
    for extra in extra_vars:
        cmd += ["-e", extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return unwrap(json.loads(out))


def group_hosts(inv: dict, group: str, seen: set | None = None) -> set[str]:
    seen = seen or set()
    if group in seen or group not in inv:
        return set()
    seen.add(group)
    hosts = set(inv[group].get("hosts", []))
    for child in inv[group].get("children", []):
        hosts |= group_hosts(inv, child, seen)
    return hosts


def scrape_jobs(hostvars: dict) -> list[dict]:
    defaults = yaml.safe_load((REPO / "roles/prometheus/defaults/main.yml").read_text(encoding="utf-8"))
    jobs = hostvars.get("prometheus_scrape_jobs", defaults["prometheus_scrape_jobs"])
    return list(jobs) + list(hostvars.get("prometheus_extra_scrape_jobs", []))


def expected_targets(inv: dict, jobs: list[dict]) -> set[tuple[str, str]]:
    expected = set()
    for job in jobs:
        for group in job["groups"]:
            expected |= {(job["name"], host) for host in group_hosts(inv, group)}
    return expected


def monitoring_host(inv: dict) -> str:
    hosts = sorted(group_hosts(inv, "monitoring"))
    if not hosts:
        raise SystemExit("check_targets: the inventory has no host in group 'monitoring'")
    return hosts[0]


def prometheus_targets(url: str, ca_file: str) -> list[dict]:
    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", context=context, timeout=10) as response:
        return json.load(response)["data"]["activeTargets"]


def check(sources: list[str], extra_vars: list[str], timeout: float, stack: str | None = None,
          out=sys.stdout) -> bool:
    inv = inventory(sources, extra_vars)
    hostvars_all = inv.get("_meta", {}).get("hostvars", {})
    mon = monitoring_host(inv)
    hostvars = hostvars_all.get(mon, {})
    stack = stack or os.environ.get("VPCSTACK_STACK") or hostvars.get("vpcstack_stack", "vpcstack")
    ca_file = os.path.expanduser(f"~/.local/share/vpcstack/{stack}/pki/ca.crt")
    address = hostvars.get("ansible_ssh_host") or hostvars.get("ansible_host") or mon
    url = f"https://{address}:{hostvars.get('prometheus_port', 9090)}"
    expected = expected_targets(inv, scrape_jobs(hostvars))
    deadline = time.monotonic() + timeout
    while True:
        try:
            active = prometheus_targets(url, ca_file)
            error = None
        except OSError as exc:
            active, error = [], f"{type(exc).__name__}: {exc}"
        seen = {(t["labels"].get("job"), t["labels"].get("host")): t for t in active}
        missing = expected - set(seen)
        unexpected = set(seen) - expected
        down = {key for key, t in seen.items() if key in expected and t.get("health") != "up"}
        ok = not error and not missing and not unexpected and not down
        if ok or time.monotonic() > deadline:
            break
        time.sleep(3)
    print(f"Prometheus {url} ({mon}), CA {ca_file}", file=out)
    if error:
        print(f"  cannot query Prometheus: {error}", file=out)
    for key in sorted(expected | set(seen)):
        target = seen.get(key)
        state = "missing" if target is None else ("UNEXPECTED" if key in unexpected else target.get("health"))
        detail = "" if target is None else f"{target.get('scrapeUrl')} {target.get('lastError', '')[:160]}"
        print(f"  {key[0]:<12} {key[1]:<28} {state:<10} {detail}", file=out)
    print(f"targets: {len(expected)} expected, {len(expected) - len(missing) - len(down)} up, "
          f"{len(missing)} missing, {len(down)} not up, {len(unexpected)} unexpected", file=out)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--inventory", action="append", required=True)
    parser.add_argument("-e", "--extra-vars", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--stack")
    args = parser.parse_args()
    return 0 if check(args.inventory, args.extra_vars, args.timeout, args.stack) else 1


if __name__ == "__main__":
    sys.exit(main())

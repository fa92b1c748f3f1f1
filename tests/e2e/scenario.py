"""What the day-2 scenario tests share (tests/patch, tests/upgrade, tests/scale): the helper
modules loaded once under fixed names, the figures a run prints at its end, and the stack a test
module builds with site.yml and tears down afterwards (unless kept)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

TESTS = Path(__file__).resolve().parents[1]


def load(name: str, path: Path):
    """Import a helper module by path once (the test directories are not packages)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


e2e = load("vpcstack_e2e_stack", TESTS / "e2e" / "stack.py")
appdata = load("vpcstack_e2e_appdata", TESTS / "e2e" / "appdata.py")
failover = load("vpcstack_failover_stack", TESTS / "failover" / "stack.py")


class Figures(list):
    """The figures of a run, printed as they come and again together at the end."""

    def report(self, line: str) -> None:
        self.append(line)
        print(f"\n  {line}", flush=True)


def knobs(prefix: str, name: str, octet: int,
          strict: bool = False) -> tuple[str, int, float, bool, bool, bool]:
    """A scenario's environment knobs: <prefix>_STACK (stack name), _OCTET (its 10.<octet>.x
    networks), _RATE (app requests/s, default 10), _KEEP=1 (leave the stack up), _REUSE=1 (use a
    running stack, skip site.yml), _STRICT=1/0 (zero failed requests whatever the cause; default
    `strict`)."""
    env = os.environ.get
    return (env(f"{prefix}_STACK", name), int(env(f"{prefix}_OCTET", str(octet))),
            float(env(f"{prefix}_RATE", "10")), env(f"{prefix}_KEEP") == "1",
            env(f"{prefix}_REUSE") == "1", env(f"{prefix}_STRICT", "1" if strict else "0") == "1")


def _hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def report_load_and_writes(report, prefix: str, result: dict, acks) -> tuple[list, list]:
    """Print what the app load (through the LB) and the writer probe (through the database
    endpoint) saw during a step; return (windows, failures inside them).

    A write-unavailability window is a gap over 1 s between acknowledged writes. Failed app
    requests inside one (-2 s/+5 s) are attributed to the endpoint having no primary then: the
    app's /readyz fails without the database, so its load balancer has no instance."""
    report(f"{prefix}app requests through the LB: " + e2e.fmt_load(result))
    if result["failed"]:
        report(f"{prefix}failed requests: {result['errors']}; at "
               + ", ".join(_hms(t) for t in result["failure_times"][:50]))
    times = [a[1] for a in acks.acks]
    gaps = sorted(((b - a, a) for a, b in zip(times, times[1:])), reverse=True)
    longest = gaps[0][0] if gaps else float("nan")
    report(f"{prefix}database writes through the endpoint (one INSERT per 0.1 s): {len(times)} acknowledged, "
           f"{len(acks.errors)} failed attempts; write unavailability (longest gap between acknowledged "
           f"writes): {longest:.2f} s; gaps over 1 s: "
           + (", ".join(f"{g:.2f} s at {_hms(t)}" for g, t in gaps if g > 1.0) or "none"))
    if acks.errors:
        kinds: dict[str, int] = {}
        for _, msg in acks.errors:
            kinds[msg[:80]] = kinds.get(msg[:80], 0) + 1
        report(f"{prefix}failed write attempts by error: {kinds}")
    windows = [(t, t + g) for g, t in gaps if g > 1.0]
    in_windows = [t for t in result["failure_times"] if any(a - 2 <= t <= b + 5 for a, b in windows)]
    if result["failed"]:
        report(f"{prefix}failed app requests inside a write-unavailability window (-2 s/+5 s): "
               f"{len(in_windows)} of {result['failed']}")
    return windows, in_windows


def app_retries(stack, since: str) -> dict:
    """The app instances' retry log lines since `since` (journal, which outlives their restarts):
    retries by reason, requests that retried (health checks included), the longest wait before
    the last retry, requests that gave up."""
    reasons: dict[str, int] = {}
    requests: set[str] = set()
    longest_ms, gave_up = 0, 0
    for app in stack.apps:
        out = e2e.sh("docker", "exec", app, "journalctl", "-u", "exposure-api", "--no-pager", "-o", "cat",
                     "--since", since, check=False, timeout=120).stdout
        for line in out.splitlines():
            if "database" not in line or not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "database read retried":
                reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
                requests.add(f"{app}/{entry.get('request_id')}")
                longest_ms = max(longest_ms, entry.get("elapsed_ms", 0) + entry.get("retry_in_ms", 0))
            elif entry.get("msg") == "database unavailable, giving up" and entry.get("request_id"):
                gave_up += 1
    return {"reasons": reasons, "requests": len(requests), "longest_ms": longest_ms, "gave_up": gave_up}


def report_app_retries(report, stack, since: str) -> dict:
    """Print the app's read retries since `since` (see app_retries) and return them."""
    retried = app_retries(stack, since)
    report(f"app reads retried on a new connection (the instances' journals): "
           f"{sum(retried['reasons'].values())} retries of {retried['requests']} requests (health checks "
           f"included), by reason {retried['reasons'] or '{}'}; longest wait before the last retry "
           f"{retried['longest_ms'] / 1000:.2f} s; requests that gave up: {retried['gave_up']}")
    return retried


@contextlib.contextmanager
def site_stack(stack, figures: Figures, *, title: str, site_note: str, reuse: bool,
               keep: bool, env_prefix: str) -> Iterator:
    """Hold the stack's lock, build it from nothing with site.yml (unless `reuse`), and at the
    end print the figures and tear it down (unless `keep`)."""
    if stack.name == "vpcstack":
        pytest.fail(f"{env_prefix}_STACK=vpcstack would tear down the `make up` stack; pick another name")
    lock = e2e.StackLock(stack.name).__enter__()
    try:
        if stack.exists() and not reuse:
            stack.teardown()
        if not reuse:
            run = stack.playbook("site.yml", tag="site", timeout=3600)
            assert run.rc == 0 and not run.failed_hosts, f"site.yml failed, see {run.log}"
            figures.report(f"site.yml from nothing ({site_note}): {run.seconds:.0f} s ({len(run.recap)} hosts)")
        yield stack
    finally:
        lock.__exit__()
        print(f"\n=== {title} figures\n  " + "\n  ".join(figures) + f"\n  (ansible logs: {stack.logs})", flush=True)
        if not keep:
            stack.teardown()

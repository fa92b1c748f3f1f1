"""The local platform end to end (`make test-e2e`): site.yml from nothing on its own stack, a second
run with changed=0, every Prometheus target up, the allowlist on every path (HAProxy's own list
too), a rolling deploy under constant load with zero failed requests through HAProxy, and an
instance stopped and one killed under load. Prints the figures. Tests run in file order and share
one stack. What does not depend on the platform's load balancer (the unhealthy release and its
rollback, the app plays on a release deployed from elsewhere) runs on the customer path
(tests/customer), with the same checks through Google's load balancer.

Knobs (environment): E2E_STACK and E2E_OCTET (default: e2e-<hash of the checkout path> on
subnets 10.<100-199>.{1,2,3}.0/24, so another checkout's run never shares the stack),
E2E_RATE (requests/s, default 20), E2E_KEEP=1 (leave the stack up), E2E_REUSE=1 (use a running
stack instead of starting from nothing; the from-nothing assertion is then skipped),
E2E_ATTEMPTS (default 3, see below).

Under load the zero-failure requirements are about the app tier. When the database endpoint had
no primary during a measurement window (its load balancer counts it: a Patroni failover, or
/primary failing on a starved machine), failed requests in that window are the data layer's.
The test then prints the window's figures with the outage and measures again (a new release for
a deploy), at most E2E_ATTEMPTS times. Failures in a window without such an outage fail the test
at once, and so does the last attempt, whatever the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from stack import REPO, TOY_PATH, VENV_BIN, Stack, StackLock, default_stack, fmt_load, make_release, sh, source_version

NAME = os.environ.get("E2E_STACK", default_stack("e2e")[0])
OCTET = int(os.environ.get("E2E_OCTET", default_stack("e2e")[1]))
RATE = float(os.environ.get("E2E_RATE", "20"))
ATTEMPTS = max(1, int(os.environ.get("E2E_ATTEMPTS", "3")))
REUSE = os.environ.get("E2E_REUSE") == "1"
KEEP = os.environ.get("E2E_KEEP") == "1"
FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)
    print(f"\n  {line}", flush=True)


@pytest.fixture(scope="module")
def stack():
    if NAME == "vpcstack":
        pytest.fail("E2E_STACK=vpcstack would tear down the `make up` stack; pick another name")
    lock = StackLock(NAME).__enter__()
    s = Stack(NAME, OCTET)
    if s.exists() and not REUSE:
        s.teardown()
    s.from_nothing = not s.exists()
    try:
        yield s
    finally:
        lock.__exit__()
        print("\n=== app tier e2e figures\n  " + "\n  ".join(FIGURES)
              + f"\n  (ansible logs: {s.logs})", flush=True)
        if not KEEP:
            s.teardown()
        shutil.rmtree(s.workdir / "wheelhouse", ignore_errors=True)
        shutil.rmtree(s.inventory, ignore_errors=True)


@pytest.fixture(scope="module")
def releases(stack):
    """Wheelhouses of the checkout's release (base) and a new one."""
    base_version = source_version()
    root = stack.workdir / "wheelhouse"
    root.mkdir()
    return {"root": root, "base": base_version, "new": f"{base_version}+e2e.new"}


def db_outage_during(stack, before) -> str | None:
    """What the database endpoint went through since `before` (Stack.db_outages), or None."""
    after = stack.db_outages()
    if before is None or after is None:
        return None
    if after[0] == before[0] and before[2] and after[2]:
        return None
    return (f"the database endpoint had no primary {after[0] - before[0]} time(s), "
            f"{after[1] - before[1]} s in all (data layer, not app tier)")


def again(what: str, attempt: int, failed: int) -> None:
    report(f"  {what}: {failed} failed requests while the database endpoint had no primary; "
           f"measuring again (attempt {attempt + 1} of {ATTEMPTS})")


def deploy(stack, releases, version, *extra):
    return stack.playbook("playbooks/deploy.yml", "-e", f"app_version={version}",
                          "-e", f"app_wheelhouse_root={releases['root']}", *extra, tag=f"deploy-{version}")


def test_site_from_nothing(stack, releases):
    run = stack.playbook("site.yml", tag="site-1")
    assert run.rc == 0 and not run.failed_hosts, f"site.yml failed, see {run.log}"
    what = "from nothing" if stack.from_nothing else "on a running stack (E2E_REUSE)"
    report(f"site.yml {what}: {run.seconds:.0f} s ({len(run.recap)} hosts)")
    assert sorted(h for h in run.recap if h.startswith(f"{NAME}-app-") and "lb" not in h) == stack.apps
    # The test releases sit next to the checkout's (built by the site run when missing).
    base = REPO / "dist" / "wheelhouse" / releases["base"]
    if not base.exists():  # site.yml builds it only when an instance lacks it (E2E_REUSE)
        sh("make", "-C", str(REPO), "wheelhouse", timeout=1200)
    (releases["root"] / releases["base"]).symlink_to(base)
    make_release(base, releases["new"], releases["root"])


def test_second_run_changes_nothing(stack):
    run = stack.playbook("site.yml", tag="site-2")
    assert run.rc == 0, f"second site.yml failed, see {run.log}"
    report(f"site.yml second run: {run.seconds:.0f} s, changed per host: {run.changed or 0}")
    assert run.changed == {}, f"second run changed something: {run.changed}, see {run.log}"


def test_the_api_answers_through_the_load_balancer(stack):
    status, body = stack.curl(stack.client_allowed, stack.lb_url + TOY_PATH)
    assert status == 200 and '"success":true' in body, body
    assert "1FGhgLbMzrUV5mgwX9nkEeqHbKbUK29nbQ" in body and "0.01733177" in body
    servers = stack.lb_servers()
    assert sorted(servers) == stack.apps and all(v["status"] == "UP" for v in servers.values()), servers


def test_every_prometheus_target_is_up(stack):
    """The monitoring host scrapes every endpoint the inventory says it should (tests/monitoring)."""
    proc = subprocess.run([str(VENV_BIN / "python"), str(REPO / "tests/monitoring/check_targets.py"),
                           "-i", str(stack.inventory), "--timeout", "300"],
                          cwd=REPO, env=stack.env(), capture_output=True, text=True, timeout=420)
    summary = [line for line in proc.stdout.splitlines() if "expected" in line]
    report(f"prometheus targets: {summary[-1] if summary else proc.stdout[-300:]}")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_allowlist_on_every_path(stack):
    app1 = f"http://{stack.app_address(stack.apps[0])}:8080/livez"
    lb = stack.lb_url + "/livez"
    # Inside the allowlist: answered through the load balancer and straight at an instance.
    assert stack.curl(stack.client_allowed, lb)[0] == 200
    assert stack.curl(stack.client_allowed, app1)[0] == 200
    # Outside it (the same subnets, another address): no answer on either path.
    assert stack.curl(stack.client_other, lb)[0] == 0
    assert stack.curl(stack.client_other, app1)[0] == 0
    # The control node (this machine, from the subnets' gateways) is not in the allowlist either.
    # (curl from this machine, no proxy: the subnet's bridge route, and no answer.)
    proc = sh("curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
              "--connect-timeout", "3", "--max-time", "5", lb, check=False, timeout=30)
    assert proc.stdout.strip() == "000", f"the control node got an answer: {proc.stdout}"
    # HAProxy's own allowlist, behind the host firewall: a source the firewall lets through
    # (the LB's own address, over loopback) but that is not in the list is reset by HAProxy.
    denied = int(stack.lb_frontend()["dcon"] or 0)
    status, _ = stack.curl(stack.lb, lb, "--interface", f"10.{OCTET}.3.6")
    assert status == 0
    assert int(stack.lb_frontend()["dcon"] or 0) == denied + 1
    report("allowlist: client-allowed answered via LB and direct; client-other refused via LB and "
           "direct; a non-listed source past the firewall is reset by HAProxy")


def test_rolling_deploy_under_load(stack, releases):
    for attempt in range(1, ATTEMPTS + 1):
        if attempt > 1:  # each measurement rolls a release the instances do not run yet
            releases["new"] = f"{releases['base']}+e2e.new{attempt}"
            make_release(releases["root"] / releases["base"], releases["new"], releases["root"])
        before = {a: stack.running_version(a) for a in stack.apps}
        db0 = stack.db_outages()
        with stack.load(rate=RATE, max_seconds=600, max_requests=int(RATE * 600)) as load:
            run = deploy(stack, releases, releases["new"])
            result = load.stop()
        assert run.rc == 0, f"deploy failed, see {run.log}"
        outage = db_outage_during(stack, db0)
        report(f"deploy {set(before.values())} -> {releases['new']} on {len(stack.apps)} instances "
               f"(batch 1) in {run.seconds:.0f} s; load during the deploy: {fmt_load(result)}"
               + (f"; {outage}" if outage else ""))
        if result["failed"] == 0 or not outage or attempt == ATTEMPTS:
            break
        again("deploy", attempt, result["failed"])
    assert result["failed"] == 0, f"failed requests during the deploy: {result['errors']} ({outage or 'no database outage'})"
    assert {a: stack.running_version(a) for a in stack.apps} == {a: releases["new"] for a in stack.apps}
    assert {a: stack.served_version(a) for a in stack.apps} == {a: releases["new"] for a in stack.apps}


def stop_or_kill(stack, victim: str, how: str) -> tuple[dict, str | None]:
    """Stack.stop_under_load, measured again (bounded) when late failures came with a database outage."""
    for attempt in range(1, ATTEMPTS + 1):
        db0 = stack.db_outages()
        r = stack.stop_under_load(victim, how, RATE)
        outage = db_outage_during(stack, db0)
        if not r["late_failures"] or not outage or attempt == ATTEMPTS:
            return r, outage
        report(f"  docker {how} {victim}: {r['failed']} of {r['sent']} requests failed; {outage}")
        again(f"docker {how}", attempt, len(r["late_failures"]))
    raise AssertionError("unreachable")


def check_stop_under_load(stack, victim: str, how: str, what: str) -> None:
    r, outage = stop_or_kill(stack, victim, how)
    assert r["to_down_s"] is not None, f"the load balancer never marked {victim} DOWN"
    report(f"instance {how}{'ped' if how == 'stop' else 'ed'} under load ({victim}, docker {how}: {what}): "
           f"{r['failed']} of {r['sent']} requests failed; the load balancer stopped routing to it "
           f"{r['to_down_s']:.1f} s after the {how}; errors {r['errors']}" + (f"; {outage}" if outage else ""))
    assert not r["late_failures"], "failures after it was marked down"


def test_instance_stopped_under_load(stack):
    check_stop_under_load(stack, stack.apps[1], "stop", "shutdown drains first")


def test_instance_killed_under_load(stack):
    check_stop_under_load(stack, stack.apps[2], "kill", "a crash, no drain")

"""os_patch on one stand-in with the base image's real pending security updates (converge, then
the idempotence run, which has nothing to apply)."""

import json
import os
from pathlib import Path

HELD = "haproxy"
PINNED = ("postgresql-15", "postgresql-client-15")


def security_upgradable(host) -> list[str]:
    out = host.run("LC_ALL=C apt list --upgradable 2>/dev/null").stdout
    return sorted(line.split("/")[0] for line in out.splitlines() if "-security" in line.split(" ")[0])


def installed(host, package: str) -> str:
    return host.check_output(f"dpkg-query -W -f='${{Version}}' {package}")


def candidate(host, package: str) -> str:
    out = host.check_output(f"LC_ALL=C apt-cache policy {package}")
    return next(line.split()[1] for line in out.splitlines() if line.strip().startswith("Candidate:"))


def records() -> list[dict]:
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "evidence" / "patch-molecule.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_only_the_held_package_is_left_pending(host):
    # Every security update applied; the operator's hold is respected (its update still pending).
    assert security_upgradable(host) == [HELD]
    assert HELD in host.check_output("apt-mark showhold").split()


def test_postgresql_moved_to_its_pin_and_held(host):
    holds = host.check_output("apt-mark showhold").split()
    for package in PINNED:
        assert installed(host, package) == candidate(host, package), package
        assert package in holds, f"{package} is no longer held"


def test_rebooted_because_a_package_asked(host):
    before = host.file("/var/tmp/molecule-boot-before").content_string.strip()
    assert host.check_output("awk '{print $22}' /proc/1/stat") != before, "PID 1 did not restart"
    assert not host.file("/run/reboot-required").exists
    assert host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_evidence_of_both_runs():
    first, second = records()
    assert first["run_id"] == second["run_id"] == "molecule"
    assert first["result"] == "ok" and first["rebooted"] is True
    assert first["held_skipped"] == [HELD]
    assert sorted(p["name"] for p in first["pinned"]) == sorted(PINNED)
    before = dict(line.split(" ", 1) for line in first["packages_before"])
    after = dict(line.split(" ", 1) for line in first["packages_after"])
    assert before.keys() == after.keys() and "libssl3" in before
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == sorted(before), f"not every selected package changed version: {sorted(set(before) - set(changed))}"
    assert first["operator"] and first["started_at"] <= first["finished_at"]
    # The idempotence run: nothing to apply, no reboot, no package listed.
    assert second["result"] == "ok: nothing to apply" and second["rebooted"] is False
    assert second["packages_before"] == second["packages_after"] == []

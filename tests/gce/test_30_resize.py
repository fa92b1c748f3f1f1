"""Resizing converges: DB VMs one at a time (primary last), the app through the MIG.

Runs after the other provisioning tests (file order): it changes the provisioned double.
"""
from __future__ import annotations

import pytest
from gce_harness import RUN_TIMES, run_playbook
from helpers import customer_vars, get, kind

V = customer_vars()
NEW = {"db_machine_type": "n2-standard-8", "app_machine_type": "e2-standard-4", "app_instance_count": 4}


@pytest.fixture(scope="module")
def resized(provisioned):
    double = provisioned["double"]
    before = double.state()
    start = len(double.calls())
    extra = {**provisioned["extra"], **NEW}
    run = run_playbook(double, extra=extra)
    calls = double.calls()[start:]
    again = run_playbook(double, extra=extra) if run.rc == 0 else None
    RUN_TIMES["resize run"] = run.seconds
    if again:
        RUN_TIMES["run after the resize (changed=0)"] = again.seconds
    return {"run": run, "again": again, "calls": calls, "before": before, "after": double.state()}


def db_steps(calls):
    """(verb, vm) for stop / setMachineType / start and the Patroni health answers, in order."""
    out = []
    for c in calls:
        if c["method"] == "POST" and "/instances/vpcstack-db-" in c["path"]:
            vm, verb = c["path"].rsplit("/", 2)[-2:]
            if verb in ("stop", "setMachineType", "start"):
                out.append((verb, vm))
        elif c["host"] == "patroni" and c["status"] == 200:
            out.append(("healthy", c["path"].split("/")[1]))
    return out


def test_resize_run_succeeds_and_then_converged(resized):
    assert resized["run"].rc == 0, resized["run"].out[-4000:]
    assert resized["again"].rc == 0 and resized["again"].changed == 0, resized["again"].changed_tasks()


def test_db_vms_resized_one_at_a_time_primary_last(resized):
    steps = db_steps(resized["calls"])
    vms = [vm for verb, vm in steps if verb == "stop"]
    assert sorted(vms) == [f"vpcstack-db-{i}" for i in range(1, V["db_node_count"] + 1)]
    # the double's Patroni stand-in makes the first running member by name the leader: db-1
    assert vms[-1] == "vpcstack-db-1"
    expected = [step for vm in vms for step in
                (("stop", vm), ("setMachineType", vm), ("start", vm), ("healthy", vm))]
    assert steps == expected


def test_db_vms_have_new_type_same_disks_and_addresses(resized):
    before = {n: r for n, r in kind(resized["before"], "instances").items() if r["labels"].get("vpcstack-role") == "db"}
    after = {n: r for n, r in kind(resized["after"], "instances").items() if r["labels"].get("vpcstack-role") == "db"}
    assert before.keys() == after.keys()
    for name, vm in after.items():
        assert vm["machineType"].endswith("/machineTypes/" + NEW["db_machine_type"])
        assert vm["status"] == "RUNNING"
        assert vm["id"] == before[name]["id"]                      # the same VM, not a new one
        assert vm["disks"] == before[name]["disks"]                # data disk untouched
        assert vm["networkInterfaces"] == before[name]["networkInterfaces"]


def test_app_rolled_to_a_new_template_through_the_mig(resized):
    mig_before = kind(resized["before"], "instanceGroupManagers")["vpcstack-app"]
    mig = kind(resized["after"], "instanceGroupManagers")["vpcstack-app"]
    assert mig["instanceTemplate"] != mig_before["instanceTemplate"]
    template = get(resized["after"], mig["instanceTemplate"])["properties"]
    assert template["machineType"] == NEW["app_machine_type"]
    assert all("accessConfigs" not in nic for nic in template["networkInterfaces"])
    assert mig["targetSize"] == NEW["app_instance_count"]
    assert mig["updatePolicy"]["maxUnavailable"]["fixed"] == 0
    members = [r for r in kind(resized["after"], "instances").values() if r.get("_managedBy", "").endswith("/vpcstack-app")]
    assert len(members) == NEW["app_instance_count"]
    assert all(m["machineType"].endswith("/" + NEW["app_machine_type"]) for m in members)
    # the template switch and the update policy went together in one PATCH
    patches = [c for c in resized["calls"] if c["method"] == "PATCH" and c["path"].endswith("/instanceGroupManagers/vpcstack-app")]
    assert patches and "instanceTemplate" in patches[0]["body"] and "updatePolicy" in patches[0]["body"]
    # the count went through the resize method, and the module did not PUT the group
    assert any(c["path"].endswith("/instanceGroupManagers/vpcstack-app/resize") and c["query"] == "size=4"
               for c in resized["calls"])
    assert not [c for c in resized["calls"] if c["method"] == "PUT" and "instanceGroupManagers" in c["path"]]
    # the old template was deleted once unused; only the current one is left
    assert list(kind(resized["after"], "instanceTemplates")) == [mig["instanceTemplate"].rsplit("/", 1)[1]]

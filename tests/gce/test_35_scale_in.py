"""Scaling the database in on Google Cloud (runs after the resize test, on the provisioned double):
provisioning with a smaller db_node_count deletes nothing (the VMs beyond the count stay, and stay
in the load balancer's instance group, until playbooks/scale_in.yml has taken them out of Patroni
and etcd: group retiring); then the last step of scale_in.yml, gce_db_vms tasks_from remove,
deletes one VM (out of the instance group, deletion protection off, deleted, address released)
and keeps its data disk unless gce_db_delete_removed_disks."""
from __future__ import annotations

from gce_harness import HERE, run_playbook
from helpers import kind

READ_ONLY_POSTS = (":getIamPolicy", "/listInstances", "/getHealth")
RETIRED = "vpcstack-db-3"


def writes(calls):
    return [f"{c['method']} {c['path']}" for c in calls
            if c["method"] not in ("GET", "CONNECT") and not c["path"].endswith(READ_ONLY_POSTS)]


def test_fewer_nodes_provision_deletes_nothing(provisioned):
    double = provisioned["double"]
    start = len(double.calls())
    # The machine type the VMs have now (the resize test, when it ran before, changed it).
    vm = kind(double.state(), "instances")["vpcstack-db-1"]
    run = run_playbook(double, extra={**provisioned["extra"], "db_node_count": 1,
                                      "db_machine_type": vm["machineType"].rsplit("/", 1)[-1]},
                       playbook=HERE / "playbooks" / "db_only.yml")
    assert run.rc == 0, run.out[-3000:]
    assert writes(double.calls()[start:]) == []
    assert "vpcstack-db-2" in run.out and RETIRED in run.out


def test_remove_deletes_the_vm_and_keeps_its_disk(provisioned):
    double = provisioned["double"]
    start = len(double.calls())
    run = run_playbook(double, "-e", '{"gce_db_vms_remove": ["%s"]}' % RETIRED,
                       extra=provisioned["extra"], playbook=HERE / "playbooks" / "db_remove.yml")
    assert run.rc == 0, run.out[-3000:]
    done = writes(double.calls()[start:])
    assert any(w.startswith("POST") and w.endswith("/removeInstances") for w in done), done
    assert any(w.startswith("DELETE") and w.endswith(f"/instances/{RETIRED}") for w in done), done
    assert any(w.startswith("DELETE") and w.endswith(f"/addresses/{RETIRED}-ip") for w in done), done
    state = double.state()
    assert RETIRED not in kind(state, "instances")
    assert f"{RETIRED}-data" in kind(state, "disks")
    groups = [g for g in kind(state, "instanceGroups").values()]
    assert not any(RETIRED in str(g) for g in groups), groups

    again = run_playbook(double, "-e", '{"gce_db_vms_remove": ["%s"], "gce_db_delete_removed_disks": true}' % RETIRED,
                         extra=provisioned["extra"], playbook=HERE / "playbooks" / "db_remove.yml")
    assert again.rc == 0, again.out[-3000:]
    assert f"{RETIRED}-data" not in kind(double.state(), "disks")

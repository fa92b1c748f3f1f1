"""gce_create_network: true creates a custom-mode VPC (a fresh project without the customer's)."""
from __future__ import annotations

from gce_harness import HERE, STATIC_INVENTORY, run_playbook, start_double
from helpers import customer_vars, kind

V = customer_vars()
PLAYBOOK = HERE / "playbooks" / "network_only.yml"


def test_create_network_then_no_change(workdir):
    double = start_double(workdir, "create-network")
    try:
        extra = {"gce_create_network": True}
        first = run_playbook(double, inventory=STATIC_INVENTORY, extra=extra, playbook=PLAYBOOK)
        assert first.rc == 0, first.out[-3000:]
        second = run_playbook(double, inventory=STATIC_INVENTORY, extra=extra, playbook=PLAYBOOK)
        assert second.rc == 0 and second.changed == 0, second.changed_tasks()
        state = double.state()
        net = kind(state, "networks")[V["gce_network_name"]]
        assert net["autoCreateSubnetworks"] is False and net["routingConfig"]["routingMode"] == "REGIONAL"
        assert sorted(kind(state, "subnetworks")) == ["vpcstack-app", "vpcstack-db"]
        assert len(kind(state, "routers")["vpcstack-router"]["nats"]) == 1
    finally:
        double.stop()

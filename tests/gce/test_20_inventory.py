"""The customer-x dynamic inventory (gcp_compute plugin) against the provisioned double."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from gce_harness import CUSTOMER_INVENTORY, ROOT, VENV_BIN
from helpers import customer_vars

V = customer_vars()


@pytest.fixture(scope="module")
def inventory(provisioned):
    double = provisioned["double"]
    out = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(CUSTOMER_INVENTORY), "--list"],
                         cwd=ROOT, env=double.env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return unwrap(json.loads(out.stdout))


def unwrap(obj):
    """ansible-inventory marks values from the plugin as unsafe: {"__ansible_unsafe": value}."""
    if isinstance(obj, dict):
        if set(obj) == {"__ansible_unsafe"}:
            return obj["__ansible_unsafe"]
        return {k: unwrap(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unwrap(v) for v in obj]
    return obj


def hosts(inv, group):
    return sorted(inv.get(group, {}).get("hosts", []))


def test_project_agrees_with_group_vars():
    plugin = yaml.safe_load((CUSTOMER_INVENTORY / "01-gcp_compute.yml").read_text())
    assert plugin["projects"] == [V["gce_project"]]


def test_groups_from_labels(inventory):
    assert hosts(inventory, "db") == [f"vpcstack-db-{i}" for i in range(1, V["db_node_count"] + 1)]
    assert hosts(inventory, "etcd") == hosts(inventory, "db")
    app = hosts(inventory, "app")
    assert len(app) == V["app_instance_count"] and all(h.startswith("vpcstack-app-") for h in app)
    assert hosts(inventory, "provisioner_gce") == ["localhost"]
    assert hosts(inventory, "db_endpoint") == []


def test_ssh_through_iap(inventory):
    hostvars = inventory["_meta"]["hostvars"]
    for name in hosts(inventory, "db") + hosts(inventory, "app"):
        hv = hostvars[name]
        assert hv["ansible_host"] == name
        assert hv["gce_instance_zone"] in V["gce_zones"] or hv["gce_instance_zone"].startswith(V["gce_region"] + "-")
    # group_vars: the ProxyCommand is templated per host at connection time
    conn = yaml.safe_load((CUSTOMER_INVENTORY / "group_vars/all/connection.yml").read_text())
    assert "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin" in conn["ansible_ssh_common_args"]
    assert "--zone={{ gce_instance_zone" in conn["ansible_ssh_common_args"]


def test_db_hosts_have_their_fixed_addresses(inventory):
    hostvars = inventory["_meta"]["hostvars"]
    ips = [hostvars[h]["gce_internal_ip"] for h in hosts(inventory, "db")]
    assert len(set(ips)) == len(ips)

"""Validation first: a bad inventory fails with a clear message before any API call."""
from __future__ import annotations

import shutil

import pytest
import yaml
from gce_harness import CUSTOMER_INVENTORY, STATIC_INVENTORY, run_playbook
from helpers import customer_vars

CASES = {
    "bad CIDR in the allowlist": (
        {"app_allowed_sources": ["10.10.0.0/16", "300.1.2.0/24"]},
        "app_allowed_sources entry '300.1.2.0/24' is not a valid CIDR"),
    "allowlist entry with host bits": (
        {"app_allowed_sources": ["10.10.0.1/16"]}, "app_allowed_sources entry '10.10.0.1/16' is not a valid CIDR"),
    "allowlist open to everyone": (
        {"app_allowed_sources": ["0.0.0.0/0"]}, "0.0.0.0/0 is refused"),
    "malformed machine type": (
        {"app_machine_type": "e2-standrad-2"}, "app_machine_type 'e2-standrad-2' is not a machine type name"),
    "machine type given as a URL": (
        {"db_machine_type": "zones/europe-west1-b/machineTypes/n2-standard-4"}, "is not a machine type name"),
    "empty project": ({"gce_project": ""}, "gce_project must be a Google Cloud project ID"),
    "overlapping subnets": ({"gce_db_subnet_cidr": "10.20.1.128/25"}, "overlap"),
    "even database node count": ({"db_node_count": 2}, "db_node_count 1, 3, 5 or 7"),
    "CMEK key in another region": (
        {"db_data_disk_kms_key": "projects/kms-proj/locations/us-east1/keyRings/r/cryptoKeys/k"},
        "db_data_disk_kms_key must be empty or"),
    "zone outside the region": ({"gce_zones": ["europe-west1-b", "us-east1-b"]}, "gce_zones a non-empty list"),
    "wrong type for a count": ({"app_instance_count": "three"}, "app_instance_count"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_value_fails_before_any_api_call(validation_double, case):
    override, message = CASES[case]
    validation_double.reset_calls()
    run = run_playbook(validation_double, inventory=STATIC_INVENTORY, extra=override, timeout=300)
    assert run.rc != 0
    assert message in " ".join(run.out.split()), run.out[-3000:]
    assert validation_double.calls() == []


def test_missing_project_fails_before_any_api_call(validation_double, tmp_path):
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(STATIC_INVENTORY / "hosts.yml", inv / "hosts.yml")
    values = customer_vars()
    del values["gce_project"]
    (inv / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(values))
    validation_double.reset_calls()
    run = run_playbook(validation_double, inventory=inv, timeout=300)
    assert run.rc != 0
    assert "missing required arguments: gce_project" in run.out, run.out[-3000:]
    assert validation_double.calls() == []


def test_missing_token_fails_before_any_api_call(validation_double):
    validation_double.reset_calls()
    run = run_playbook(validation_double, inventory=STATIC_INVENTORY, extra={"gce_access_token": ""}, timeout=300)
    assert run.rc != 0
    assert "No access token" in run.out
    assert validation_double.calls() == []


def test_with_the_dynamic_inventory_only_the_listing_is_sent(validation_double):
    """With inventories/customer-x the inventory plugin lists instances (read-only) first; the
    bad value still stops the play before the roles send anything."""
    validation_double.reset_calls()
    run = run_playbook(validation_double, inventory=CUSTOMER_INVENTORY,
                       extra={"app_allowed_sources": ["10.10.0.0/33"]}, timeout=300)
    assert run.rc != 0
    assert "'10.10.0.0/33' is not a valid CIDR" in " ".join(run.out.split())
    sent = [(c["method"], c["path"]) for c in validation_double.calls() if c["method"] != "CONNECT"]
    assert sent == [("GET", "/compute/v1/projects/customer-x-prod/aggregated/instances")]


def test_missing_existing_network_fails_clearly(validation_double, tmp_path):
    """gce_create_network false and the VPC is not there: a clear failure, nothing created."""
    validation_double.reset_calls()
    run = run_playbook(validation_double, inventory=STATIC_INVENTORY, extra={"gce_network_name": "no-such-vpc"},
                       timeout=300)
    assert run.rc != 0
    assert "VPC network 'no-such-vpc' was not found in project customer-x-prod" in " ".join(run.out.split())
    assert [c["method"] for c in validation_double.calls() if c["method"] not in ("GET", "CONNECT")] == []

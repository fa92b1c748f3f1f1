"""The emulator itself: proxying, authentication, operations, required fields and error shapes."""
from __future__ import annotations

import pytest
import requests
from gce_harness import PROJECT, api_session, start_double, wait_op

C = f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}"


@pytest.fixture(scope="module")
def api(workdir):
    double = start_double(workdir, "selftest", op_delay=0.5)
    yield double, api_session(double)
    double.stop()


def test_refuses_other_hosts(api):
    double, session = api
    with pytest.raises(requests.exceptions.ProxyError):
        session.get("https://example.com/")
    assert double.calls()[-1] == {**double.calls()[-1], "method": "CONNECT", "host": "example.com", "status": 403}


def test_requires_the_token(api):
    _, session = api
    resp = session.get(f"{C}/global/networks/x", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401
    assert resp.json()["error"]["errors"][0]["reason"] == "required"


def test_insert_is_an_operation_and_visible_only_when_done(api):
    _, session = api
    op = session.post(f"{C}/global/networks", json={"name": "net-a", "autoCreateSubnetworks": False}).json()
    assert op["kind"] == "compute#operation" and op["status"] == "RUNNING"
    assert session.get(f"{C}/global/networks/net-a").status_code == 404
    done = wait_op(session, op)
    assert "error" not in done
    net = session.get(f"{C}/global/networks/net-a").json()
    assert net["selfLink"] == done["targetLink"] and net["selfLink"].startswith("https://www.googleapis.com/")
    conflict = session.post(f"{C}/global/networks", json={"name": "net-a", "autoCreateSubnetworks": False})
    assert conflict.status_code == 409 and conflict.json()["error"]["errors"][0]["reason"] == "alreadyExists"


def test_required_fields_names_and_references(api):
    _, session = api
    missing = session.post(f"{C}/regions/europe-west1/subnetworks", json={"name": "s1", "network": "global/networks/net-a"})
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "Required field 'resource.ipCidrRange' not specified"
    bad_name = session.post(f"{C}/global/networks", json={"name": "Bad_Name", "autoCreateSubnetworks": False})
    assert bad_name.status_code == 400 and "resource.name" in bad_name.json()["error"]["message"]
    unknown = session.post(f"{C}/regions/europe-west1/subnetworks",
                           json={"name": "s1", "network": "global/networks/nope", "ipCidrRange": "10.1.0.0/24"})
    assert unknown.status_code == 404


def test_overlapping_subnet_refused(api):
    _, session = api
    wait_op(session, session.post(f"{C}/regions/europe-west1/subnetworks", json={
        "name": "s1", "network": "global/networks/net-a", "ipCidrRange": "10.1.0.0/24"}).json())
    resp = session.post(f"{C}/regions/europe-west1/subnetworks", json={
        "name": "s2", "network": "global/networks/net-a", "ipCidrRange": "10.1.0.128/25"})
    assert resp.status_code == 400 and "conflicts with existing subnetwork 's1'" in resp.json()["error"]["message"]


def test_machine_type_change_needs_a_stopped_vm_and_disks_are_not_shared(api):
    _, session = api
    wait_op(session, session.post(f"{C}/zones/europe-west1-b/disks", json={"name": "d1", "sizeGb": "10"}).json())
    vm = {"name": "vm1", "machineType": "zones/europe-west1-b/machineTypes/e2-small",
          "disks": [{"boot": True, "initializeParams": {"sourceImage": "projects/debian-cloud/global/images/family/debian-12"}},
                    {"source": "zones/europe-west1-b/disks/d1"}],
          "networkInterfaces": [{"subnetwork": "regions/europe-west1/subnetworks/s1"}]}
    wait_op(session, session.post(f"{C}/zones/europe-west1-b/instances", json=vm).json())
    resp = session.post(f"{C}/zones/europe-west1-b/instances/vm1/setMachineType",
                        json={"machineType": "zones/europe-west1-b/machineTypes/e2-medium"})
    assert resp.status_code == 400 and resp.json()["error"]["errors"][0]["reason"] == "resourceNotReady"
    shared = session.post(f"{C}/zones/europe-west1-b/instances", json={**vm, "name": "vm2"})
    assert shared.status_code == 400
    assert shared.json()["error"]["errors"][0]["reason"] == "resourceInUseByAnotherResource"
    bad_type = session.post(f"{C}/zones/europe-west1-b/instances",
                            json={**vm, "name": "vm3", "machineType": "zones/europe-west1-b/machineTypes/e2-huge-9"})
    assert bad_type.status_code == 400 and "does not exist in zone" in bad_type.json()["error"]["message"]


def test_other_apis_error_shapes(api):
    _, session = api
    bucket = session.get("https://storage.googleapis.com/storage/v1/b/no-such-bucket")
    assert bucket.status_code == 404 and bucket.json()["error"]["errors"][0]["reason"] == "notFound"
    sa = session.get(f"https://iam.googleapis.com/v1/projects/{PROJECT}/serviceAccounts/x@{PROJECT}.iam.gserviceaccount.com")
    assert sa.status_code == 404 and sa.json()["error"]["status"] == "NOT_FOUND"
    policy = session.post(f"https://cloudresourcemanager.googleapis.com/v1/projects/{PROJECT}:setIamPolicy",
                          json={"policy": {"etag": "stale", "bindings": []}})
    assert policy.status_code == 409 and policy.json()["error"]["status"] == "ALREADY_EXISTS"

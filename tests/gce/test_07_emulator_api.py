"""Rules the real APIs enforce that the emulator enforces too: each refused, then accepted, in
Google's error shape. Sources: the discovery documents of google-api-python-client (Compute v1,
Resource Manager v1), quoted in the emulator's modules."""
from __future__ import annotations

import base64
import json

import pytest
from gce_harness import PROJECT, api_session, start_double, wait_op

C = f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}"
HC = f"{C}/regions/europe-west1/healthChecks"


@pytest.fixture(scope="module")
def api(workdir):
    emulator = start_double(workdir, "api-rules", op_delay=0.1, health_delay=0)
    yield emulator, api_session(emulator)
    emulator.stop()


def refused(resp, status: int, *words: str) -> str:
    """The error message, after checking the status, Google's shape and the words it names."""
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == status and error["message"]
    assert all(w in error["message"] for w in words), error["message"]
    return error["message"]


@pytest.mark.parametrize("check_type, field, settings", [
    ("HTTP", "httpHealthCheck", {"port": 8080, "requestPath": "/readyz"}),
    ("HTTPS", "httpsHealthCheck", {"port": 8008, "requestPath": "/primary"}),
    ("HTTP2", "http2HealthCheck", {"port": 8443, "requestPath": "/"}),
    ("TCP", "tcpHealthCheck", {"port": 5432}),
    ("SSL", "sslHealthCheck", {"port": 5432}),
])
def test_health_check_takes_the_settings_of_its_type(api, check_type, field, settings):
    _, session = api
    name = f"hc-{check_type.lower()}"
    missing = session.post(HC, json={"name": name, "type": check_type})
    refused(missing, 400, f"resource.{field}", check_type)
    other = "tcpHealthCheck" if field != "tcpHealthCheck" else "httpHealthCheck"
    mixed = session.post(HC, json={"name": name, "type": check_type, field: settings, other: {"port": 80}})
    refused(mixed, 400, f"resource.{other}", check_type)
    assert session.get(f"{HC}/{name}").status_code == 404
    done = wait_op(session, session.post(HC, json={"name": name, "type": check_type, field: settings}).json())
    assert "error" not in done
    check = session.get(f"{HC}/{name}").json()
    assert check["type"] == check_type and check[field]["port"] == settings["port"]
    assert not [k for k in check if k.endswith("HealthCheck") and k != field]


def test_health_check_settings_take_only_their_own_fields_and_default_port(api):
    _, session = api
    resp = session.post(HC, json={"name": "hc-tcp-path", "type": "TCP",
                                  "tcpHealthCheck": {"port": 5432, "requestPath": "/"}})
    refused(resp, 400, 'Unknown name "requestPath"', "resource.tcpHealthCheck")
    wait_op(session, session.post(HC, json={"name": "hc-https-default", "type": "HTTPS",
                                            "httpsHealthCheck": {"requestPath": "/primary"}}).json())
    assert session.get(f"{HC}/hc-https-default").json()["httpsHealthCheck"]["port"] == 443


@pytest.fixture(scope="module")
def groups(api):
    """Two zonal instance groups of one subnetwork, the first holding a running database VM."""
    _, session = api
    for url, body in [
        (f"{C}/global/networks", {"name": "net-lb", "autoCreateSubnetworks": False}),
        (f"{C}/regions/europe-west1/subnetworks", {"name": "sub-lb", "network": "global/networks/net-lb",
                                                    "ipCidrRange": "10.9.0.0/24"}),
        (f"{C}/zones/europe-west1-b/instances", {
            "name": "db-b", "machineType": "zones/europe-west1-b/machineTypes/e2-small",
            "labels": {"vpcstack-role": "db"},
            "disks": [{"boot": True, "initializeParams": {
                "sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
            "networkInterfaces": [{"subnetwork": "regions/europe-west1/subnetworks/sub-lb"}]}),
        (f"{C}/zones/europe-west1-b/instanceGroups", {"name": "ig-b", "network": "global/networks/net-lb"}),
        (f"{C}/zones/europe-west1-c/instanceGroups", {"name": "ig-c", "network": "global/networks/net-lb"}),
        (f"{C}/zones/europe-west1-b/instanceGroups/ig-b/addInstances",
         {"instances": [{"instance": "zones/europe-west1-b/instances/db-b"}]}),
        (HC, {"name": "hc-primary", "type": "HTTPS", "httpsHealthCheck": {"port": 8008, "requestPath": "/primary"}}),
    ]:
        assert "error" not in wait_op(session, session.post(url, json=body).json())
    return [f"{C}/zones/europe-west1-{z}/instanceGroups/ig-{z}" for z in "bc"]


def test_get_health_follows_the_checks_own_protocol_settings(api, groups):
    _, session = api
    bs = {"name": "bs-health", "loadBalancingScheme": "INTERNAL", "protocol": "TCP",
          "healthChecks": [f"{C}/regions/europe-west1/healthChecks/hc-primary"],
          "backends": [{"group": groups[0], "balancingMode": "CONNECTION"}]}
    assert "error" not in wait_op(session, session.post(f"{C}/regions/europe-west1/backendServices", json=bs).json())
    health = session.post(f"{C}/regions/europe-west1/backendServices/bs-health/getHealth",
                          json={"group": groups[0]}).json()
    # the HTTPS check's /primary on the only database VM, the Patroni stand-in's leader
    assert [(h["instance"].rsplit("/", 1)[1], h["port"], h["healthState"]) for h in health["healthStatus"]] == \
        [("db-b", 8008, "HEALTHY")]


def test_failover_policy_needs_a_failover_backend(api, groups):
    _, session = api
    url = f"{C}/regions/europe-west1/backendServices"
    bs = {"name": "bs-db", "loadBalancingScheme": "INTERNAL", "protocol": "TCP",
          "healthChecks": [f"{C}/regions/europe-west1/healthChecks/hc-primary"],
          "backends": [{"group": g, "balancingMode": "CONNECTION"} for g in groups],
          "failoverPolicy": {"dropTrafficIfUnhealthy": True, "disableConnectionDrainOnFailover": True}}
    refused(session.post(url, json=bs), 400, "failoverPolicy", "failover backend")
    assert session.get(f"{url}/bs-db").status_code == 404
    bs["backends"][1]["failover"] = True
    assert "error" not in wait_op(session, session.post(url, json=bs).json())
    created = session.get(f"{url}/bs-db").json()
    assert [b["failover"] for b in created["backends"]] == [False, True]
    assert created["failoverPolicy"]["dropTrafficIfUnhealthy"] is True
    # an update that leaves no failover backend is refused the same way
    refused(session.patch(f"{url}/bs-db", json={"backends": bs["backends"][:1]}), 400, "failoverPolicy")


def test_mig_update_actions_refresh_metadata_and_replace_the_rest(api, groups):
    """A template that differs only in metadata and labels needs REFRESH: the running VMs keep
    their names and take the new metadata. Any other difference needs REPLACE, which a policy
    whose mostDisruptiveAllowedAction is REFRESH does not allow (the VMs stay on their template).
    minimalAction above mostDisruptiveAllowedAction is refused."""
    _, session = api
    mig_url = f"{C}/regions/europe-west1/instanceGroupManagers/mig-actions"

    def template(name: str, release: str, machine: str = "e2-small") -> str:
        body = {"name": name, "properties": {
            "machineType": machine, "labels": {"release": release},
            "metadata": {"items": [{"key": "release", "value": release}]},
            "disks": [{"boot": True, "initializeParams": {
                "sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
            "networkInterfaces": [{"subnetwork": f"{C}/regions/europe-west1/subnetworks/sub-lb"}]}}
        assert "error" not in wait_op(session, session.post(f"{C}/global/instanceTemplates", json=body).json())
        return f"{C}/global/instanceTemplates/{name}"

    def vms() -> dict[str, tuple[str, str]]:
        managed = session.post(f"{mig_url}/listManagedInstances").json()["managedInstances"]
        out = {}
        for m in managed:
            vm = session.get(m["instance"].replace("www.googleapis.com", "compute.googleapis.com")).json()
            out[vm["name"]] = (m["version"]["instanceTemplate"].rsplit("/", 1)[1], vm["metadata"]["items"][0]["value"])
        return out

    refresh = {"minimalAction": "REFRESH", "mostDisruptiveAllowedAction": "REFRESH"}
    assert "error" not in wait_op(session, session.post(f"{C}/regions/europe-west1/instanceGroupManagers", json={
        "name": "mig-actions", "baseInstanceName": "act", "targetSize": 3,
        "instanceTemplate": template("tpl-1", "r1")}).json())
    first = vms()
    assert sorted(first.values()) == [("tpl-1", "r1")] * 3

    refused(session.patch(mig_url, json={"updatePolicy": {"minimalAction": "REPLACE",
                                                           "mostDisruptiveAllowedAction": "REFRESH"}}),
            400, "Minimal action")
    # a new release alone: refreshed in place
    wait_op(session, session.patch(mig_url, json={"instanceTemplate": template("tpl-2", "r2"),
                                                   "updatePolicy": refresh}).json())
    assert vms() == {name: ("tpl-2", "r2") for name in first}
    # another machine type needs REPLACE: not allowed by this policy, the VMs stay as they are
    wait_op(session, session.patch(mig_url, json={"instanceTemplate": template("tpl-3", "r2", "e2-medium")}).json())
    assert vms() == {name: ("tpl-2", "r2") for name in first}
    # allowed again, a proactive update replaces them by new VMs on the group's template
    wait_op(session, session.patch(mig_url, json={"updatePolicy": {"minimalAction": "REPLACE",
                                                                   "mostDisruptiveAllowedAction": "REPLACE"}}).json())
    after = vms()
    assert sorted(after.values()) == [("tpl-3", "r2")] * 3 and not set(after) & set(first)


def test_conditional_binding_needs_policy_version_3(api):
    emulator, session = api
    crm = f"https://cloudresourcemanager.googleapis.com/v1/projects/{PROJECT}"

    def get_policy(options):
        return session.post(f"{crm}:getIamPolicy", json={"options": options} if options is not None else {})

    # without conditions the answer is version 1, whatever was asked
    assert get_policy({"requestedPolicyVersion": 3}).json()["version"] == 1
    refused(get_policy({"requestedPolicyVersion": 2}), 400, "requestedPolicyVersion")
    conditional = {"role": "roles/storage.objectViewer", "members": ["user:auditor@example.test"],
                   "condition": {"title": "until 2030", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}}
    emulator.admin("seed", {"projectIamBindings": [conditional]})
    for options in (None, {}, {"requestedPolicyVersion": 1}):
        resp = get_policy(options)
        refused(resp, 400, "Requested policy version (1)", "existing policy version (3)")
        assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    policy = get_policy({"requestedPolicyVersion": 3}).json()
    assert policy["version"] == 3 and conditional in policy["bindings"]

    grant = {"role": "roles/logging.logWriter", "members": ["user:ops@example.test"]}
    as_v1 = {**policy, "version": 1, "bindings": policy["bindings"] + [grant]}
    refused(session.post(f"{crm}:setIamPolicy", json={"policy": as_v1}), 400, "version (1)", "conditional")
    dropped = {**policy, "version": 1, "bindings": [b for b in policy["bindings"] if "condition" not in b]}
    refused(session.post(f"{crm}:setIamPolicy", json={"policy": dropped}), 400, "existing policy version (3)")
    written = session.post(f"{crm}:setIamPolicy", json={"policy": {**as_v1, "version": 3}})
    assert written.status_code == 200 and written.json()["version"] == 3
    again = get_policy({"requestedPolicyVersion": 3}).json()
    assert conditional in again["bindings"] and grant in again["bindings"]


def test_secret_versions_hold_values_that_never_reach_the_call_log(api):
    emulator, session = api
    sm = f"https://secretmanager.googleapis.com/v1/projects/{PROJECT}/secrets"
    assert session.post(f"{sm}?secretId=s-versions", json={"replication": {"automatic": {}}}).status_code == 200
    refused(session.get(f"{sm}/s-versions/versions/latest:access"), 404, "not found")
    value = base64.b64encode(b"v-secret-1").decode()
    assert session.post(f"{sm}/s-versions:addVersion", json={"payload": {"data": value}}).status_code == 200
    got = session.get(f"{sm}/s-versions/versions/latest:access").json()
    assert got["name"].endswith("/versions/1") and got["payload"]["data"] == value
    assert value not in json.dumps(emulator.calls())

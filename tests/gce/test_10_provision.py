"""Provisioning against the Compute API double: two runs, then the resource graph."""
from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest
from gce_harness import TOKEN
from helpers import ROOT, customer_vars, get, kind

V = customer_vars()
STACK = "vpcstack"
APP_SA = f"{STACK}-app-vm@{V['gce_project']}.iam.gserviceaccount.com"
DB_SA = f"{STACK}-db-vm@{V['gce_project']}.iam.gserviceaccount.com"
HEALTH_CHECK_RANGES = {"35.191.0.0/16", "130.211.0.0/22"}


@pytest.fixture(scope="module")
def state(provisioned):
    return provisioned["double"].state()


def test_first_run_creates_everything(provisioned):
    first = provisioned["first"]
    assert first.rc == 0, first.out[-4000:]
    assert first.failed == 0 and first.changed > 20


def test_second_run_changes_nothing(provisioned):
    second = provisioned["second"]
    assert second is not None and second.rc == 0, (second.out[-4000:] if second else "first run failed")
    assert second.changed == 0, f"changed tasks on the second run: {second.changed_tasks()}"


def test_second_run_only_reads(provisioned):
    """The second run sends no mutating request at all (not just changed=0 in the recap)."""
    read_only_posts = (":getIamPolicy", "/listInstances", "/getHealth")
    writes = [f"{c['method']} {c['path']}" for c in provisioned["second_calls"]
              if c["method"] not in ("GET", "CONNECT") and not c["path"].endswith(read_only_posts)]
    assert writes == []
    first_state, now = provisioned["first_state"], provisioned["double"].state()
    assert first_state["compute"].keys() == now["compute"].keys()
    for path, res in now["compute"].items():
        assert res.get("fingerprint") == first_state["compute"][path].get("fingerprint"), path


def test_every_operation_finished(state):
    assert state["pendingOperations"] == []


def test_token_never_in_output(provisioned):
    for run in (provisioned["first"], provisioned["second"]):
        assert TOKEN not in run.out


def test_network_subnets_nat(state):
    subnets = kind(state, "subnetworks")
    assert subnets[f"{STACK}-app"]["ipCidrRange"] == V["gce_app_subnet_cidr"]
    assert subnets[f"{STACK}-db"]["ipCidrRange"] == V["gce_db_subnet_cidr"]
    assert all(s["privateIpGoogleAccess"] for s in subnets.values())
    assert all(s["network"].endswith("/global/networks/" + V["gce_network_name"]) for s in subnets.values())
    (router,) = kind(state, "routers").values()
    (nat,) = router["nats"]
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert sorted(s["name"].rsplit("/", 1)[1] for s in nat["subnetworks"]) == [f"{STACK}-app", f"{STACK}-db"]
    # the customer's existing VPC was used, not a new one
    assert list(kind(state, "networks")) == [V["gce_network_name"]]


def test_firewall_allowlist_is_exactly_app_allowed_sources(state):
    rules = kind(state, "firewalls")
    clients = rules[f"{STACK}-allow-app-clients"]
    assert clients["sourceRanges"] == V["app_allowed_sources"]
    assert clients["allowed"] == [{"IPProtocol": "tcp", "ports": [str(V["app_port"])]}]
    assert clients["targetServiceAccounts"] == [APP_SA]
    # nothing else admits the app port, except Google's health checkers
    for name, rule in rules.items():
        ports = [p for a in rule.get("allowed", []) for p in a.get("ports", [])]
        if str(V["app_port"]) in ports and name != f"{STACK}-allow-app-clients":
            assert set(rule["sourceRanges"]) == HEALTH_CHECK_RANGES, name


def test_firewall_default_deny_and_narrow_rules(state):
    rules = kind(state, "firewalls")
    deny = rules[f"{STACK}-deny-all-ingress"]
    assert deny["denied"] == [{"IPProtocol": "all"}] and deny["sourceRanges"] == ["0.0.0.0/0"]
    assert all(r["priority"] < deny["priority"] for n, r in rules.items() if n != f"{STACK}-deny-all-ingress")
    assert rules[f"{STACK}-allow-iap-ssh"]["sourceRanges"] == ["35.235.240.0/20"]
    app_to_db = rules[f"{STACK}-allow-app-to-db"]
    assert app_to_db["sourceRanges"] == [V["gce_app_subnet_cidr"]]
    assert app_to_db["allowed"] == [{"IPProtocol": "tcp", "ports": [str(V["postgresql_port"])]}]
    assert app_to_db["targetServiceAccounts"] == [DB_SA]
    assert rules[f"{STACK}-allow-db-health-checks"]["allowed"][0]["ports"] == [str(V["patroni_rest_port"])]
    for rule in rules.values():
        if "allowed" in rule:
            assert "0.0.0.0/0" not in rule["sourceRanges"]
            assert rule["direction"] == "INGRESS" and rule.get("targetServiceAccounts")


def test_mig_template_machine_type_and_no_external_ip(state):
    mig = kind(state, "instanceGroupManagers")[f"{STACK}-app"]
    template = get(state, mig["instanceTemplate"])["properties"]
    assert template["machineType"] == V["app_machine_type"]
    assert all("accessConfigs" not in nic for nic in template["networkInterfaces"])
    assert template["networkInterfaces"][0]["subnetwork"].endswith(f"/subnetworks/{STACK}-app")
    assert template["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableVtpm": True,
                                                  "enableIntegrityMonitoring": True}
    assert template["serviceAccounts"][0]["email"] == APP_SA
    assert template["labels"]["vpcstack-role"] == "app"
    meta = {i["key"]: i["value"] for i in template["metadata"]["items"]}
    assert meta["vpcstack-app-version"] == V["app_version"]
    assert meta["vpcstack-release-bucket"] == V["gce_release_bucket"]
    assert "releases/$VERSION/" in meta["startup-script"] and "--no-index" in meta["startup-script"]
    # the MIG's VMs (the double creates them from the template) have no public address either
    members = [r for r in kind(state, "instances").values() if r.get("_managedBy", "").endswith(f"/{STACK}-app")]
    assert len(members) == V["app_instance_count"]
    assert all("accessConfigs" not in nic for m in members for nic in m["networkInterfaces"])


def test_mig_size_autohealing_update_policy(state):
    mig = kind(state, "instanceGroupManagers")[f"{STACK}-app"]
    assert mig["targetSize"] == V["app_instance_count"]
    assert mig["namedPorts"] == [{"name": "http", "port": V["app_port"]}]
    (policy,) = mig["autoHealingPolicies"]
    check = get(state, policy["healthCheck"])
    # liveness: /readyz fails while the database is down, and would recreate every VM at once
    assert check["httpHealthCheck"]["requestPath"] == "/livez"
    assert check["httpHealthCheck"]["port"] == V["app_port"]
    update = mig["updatePolicy"]
    assert update["type"] == "PROACTIVE" and update["maxUnavailable"]["fixed"] == 0
    assert mig["status"]["isStable"] is True


def test_each_db_vm_has_its_own_data_disk(state):
    vms = {n: r for n, r in kind(state, "instances").items() if r["labels"].get("vpcstack-role") == "db"}
    assert sorted(vms) == [f"{STACK}-db-{i}" for i in range(1, V["db_node_count"] + 1)]
    disks = kind(state, "disks")
    sources = []
    for name, vm in vms.items():
        assert vm["machineType"].endswith("/machineTypes/" + V["db_machine_type"])
        assert all("accessConfigs" not in nic for nic in vm["networkInterfaces"])
        data = [d for d in vm["disks"] if not d["boot"]]
        assert len(data) == 1, name
        (disk,) = data
        assert disk["deviceName"] == "data" and disk["autoDelete"] is False and disk["mode"] == "READ_WRITE"
        boot = [d for d in vm["disks"] if d["boot"]][0]
        assert boot["source"] != disk["source"]
        res = disks[disk["source"].rsplit("/", 1)[1]]
        assert res["type"].endswith("/diskTypes/" + V["db_data_disk_type"])
        assert res["sizeGb"] == str(V["db_data_disk_size_gb"])
        assert res["users"] == [vm["selfLink"]]
        sources.append(disk["source"])
        assert vm["serviceAccounts"][0]["email"] == DB_SA
        assert vm["deletionProtection"] is True
    assert len(set(sources)) == len(sources) == V["db_node_count"]


def test_db_vms_fixed_addresses_spread_over_zones(state):
    vms = {n: r for n, r in kind(state, "instances").items() if r["labels"].get("vpcstack-role") == "db"}
    net = ipaddress.ip_network(V["gce_db_subnet_cidr"])
    addresses = kind(state, "addresses")
    for i in range(1, V["db_node_count"] + 1):
        vm = vms[f"{STACK}-db-{i}"]
        ip = vm["networkInterfaces"][0]["networkIP"]
        assert ip == str(net[10 + i])
        assert addresses[f"{STACK}-db-{i}-ip"]["address"] == ip
        assert addresses[f"{STACK}-db-{i}-ip"]["status"] == "IN_USE"
        assert vm["zone"].endswith(V["gce_zones"][(i - 1) % len(V["gce_zones"])])


def test_db_load_balancer_primary_only_and_drops_when_unhealthy(state):
    bs = kind(state, "backendServices")[f"{STACK}-db"]
    assert bs["loadBalancingScheme"] == "INTERNAL" and bs["protocol"] == "TCP"
    assert bs["failoverPolicy"]["dropTrafficIfUnhealthy"] is True
    # a failover policy needs failover backends: one primary group, the other zones' failover
    assert [b.get("failover", False) for b in bs["backends"]] == [False] + [True] * (len(bs["backends"]) - 1)
    assert len(bs["backends"]) == min(V["db_node_count"], len(V["gce_zones"]))
    # Patroni's REST port is TLS only: a plain HTTP check would mark every member unhealthy
    check = get(state, bs["healthChecks"][0])
    assert check["type"] == "HTTPS" and "httpHealthCheck" not in check
    assert check["httpsHealthCheck"]["requestPath"] == "/primary"
    assert check["httpsHealthCheck"]["port"] == V["patroni_rest_port"]
    members = sorted(m for b in bs["backends"] for m in get(state, b["group"])["_instances"])
    db_vms = sorted(r["selfLink"] for r in kind(state, "instances").values() if r["labels"].get("vpcstack-role") == "db")
    assert members == db_vms
    rule = kind(state, "forwardingRules")[f"{STACK}-db"]
    assert rule["ports"] == [str(V["postgresql_port"])]
    assert rule["IPAddress"] == str(ipaddress.ip_network(V["gce_db_subnet_cidr"])[5])
    assert rule["backendService"] == bs["selfLink"]


def test_app_load_balancer_readyz(state):
    bs = kind(state, "backendServices")[f"{STACK}-app"]
    check = get(state, bs["healthChecks"][0])
    assert check["httpHealthCheck"]["requestPath"] == "/readyz"
    assert check["httpHealthCheck"]["port"] == V["app_port"]
    mig = kind(state, "instanceGroupManagers")[f"{STACK}-app"]
    assert [b["group"] for b in bs["backends"]] == [mig["instanceGroup"]]
    rule = kind(state, "forwardingRules")[f"{STACK}-app"]
    assert rule["ports"] == [str(V["app_port"])] and rule["loadBalancingScheme"] == "INTERNAL"
    assert rule["IPAddress"] == str(ipaddress.ip_network(V["gce_app_subnet_cidr"])[5])


def test_service_accounts_least_privilege(state):
    assert set(state["serviceAccounts"]) == {APP_SA, DB_SA}
    project = state["policies"][f"project:{V['gce_project']}"]
    granted = {(b["role"], m) for b in project["bindings"] for m in b["members"]}
    for sa in (APP_SA, DB_SA):
        roles = {r for r, m in granted if m == f"serviceAccount:{sa}"}
        assert roles == {"roles/logging.logWriter", "roles/monitoring.metricWriter"}
    assert ("roles/owner", "user:owner@example.test") in granted      # nothing was removed
    release = state["policies"][f"bucket:{V['gce_release_bucket']}"]["bindings"]
    backup = state["policies"][f"bucket:{V['gce_backup_bucket']}"]["bindings"]
    assert {"role": "roles/storage.objectViewer", "members": [f"serviceAccount:{APP_SA}"]} in release
    assert {"role": "roles/storage.objectAdmin", "members": [f"serviceAccount:{DB_SA}"]} in backup
    assert f"serviceAccount:{DB_SA}" not in str(release) and f"serviceAccount:{APP_SA}" not in str(backup)


def test_secrets_readable_by_the_app_only(state):
    assert sorted(state["secrets"]) == [f"{STACK}-app-db-password", f"{STACK}-db-ca"]
    for secret in state["secrets"]:
        bindings = state["policies"][f"secret:{secret}"]["bindings"]
        assert bindings == [{"role": "roles/secretmanager.secretAccessor", "members": [f"serviceAccount:{APP_SA}"]}]


def test_buckets_private(state):
    for name in (V["gce_release_bucket"], V["gce_backup_bucket"]):
        bucket = state["buckets"][name]
        assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
        assert bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
        assert bucket["location"] == V["gce_region"].upper()
    assert state["buckets"][V["gce_backup_bucket"]]["versioning"]["enabled"] is True



def test_startup_script_is_valid_bash_and_settings_point_at_the_db_endpoint(state, tmp_path):
    mig = kind(state, "instanceGroupManagers")[f"{STACK}-app"]
    items = get(state, mig["instanceTemplate"])["properties"]["metadata"]["items"]
    meta = {i["key"]: i["value"] for i in items}
    script = tmp_path / "startup.sh"
    script.write_text(meta["startup-script"])
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    env = dict(line.split("=", 1) for line in meta["vpcstack-app-env"].splitlines()
               if line and not line.startswith("#"))
    assert env["EXPOSURE_DB_HOST"] == str(ipaddress.ip_network(V["gce_db_subnet_cidr"])[5])
    assert env["EXPOSURE_DB_PORT"] == str(V["postgresql_port"])
    assert env["EXPOSURE_BIND"] == f"0.0.0.0:{V['app_port']}"
    assert not any("PASSWORD=" in f"{k}={v}" and not k.endswith("_FILE") for k, v in env.items())


def test_mig_instances_run_the_app_roles_unit_verified_and_offline(state):
    """One source: the unit and environment are the app role's (drain on stop, sandbox), the
    wheelhouse is checked against SHA256SUMS, and nothing is installed from the internet."""
    mig = kind(state, "instanceGroupManagers")[f"{STACK}-app"]
    meta = {i["key"]: i["value"] for i in get(state, mig["instanceTemplate"])["properties"]["metadata"]["items"]}
    unit = meta["vpcstack-app-unit"]
    app_unit = (ROOT / "roles/app/templates/exposure-api.service.j2").read_text()
    # every fixed line of the app role's template is in the rendered unit
    fixed = [line for line in app_unit.splitlines() if line and "{" not in line]
    assert fixed and all(line in unit.splitlines() for line in fixed)
    assert "ExecStop=/bin/sh -c 'test -e /run/exposure-api/drain" in unit
    layout = json.loads(meta["vpcstack-app-layout"])
    assert layout["version"] == V["app_version"] and layout["release_dir"].endswith("/releases/" + V["app_version"])
    script = meta["startup-script"]
    assert "[Service]" not in script                           # no second unit
    assert "sha256sum --check --strict" in script
    assert "apt-get" not in script and "apt " not in script    # nothing from the internet at boot

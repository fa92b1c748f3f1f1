"""The local platform as a user sees it: containers, subnets, data disks, teardown semantics."""
import json
import os
import subprocess

import yaml

STACK = os.environ.get("VPCSTACK_STACK", "mlocal")
REPO = os.environ["VPCSTACK_REPO"]
VARS_FILE = os.path.join(os.path.dirname(__file__), "..", "inventory", "group_vars", "all", "90-molecule.yml")
VARS = yaml.safe_load(open(VARS_FILE))


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def inspect(kind, name):
    return json.loads(sh("docker", kind, "inspect", name).stdout)[0]


def containers():
    out = sh("docker", "ps", "-a", "--filter", f"label=vpcstack.stack={STACK}", "--format", "{{.Names}}").stdout
    return sorted(out.split())


def expected_names():
    names = [f"{STACK}-db-{i}" for i in range(1, VARS["db_node_count"] + 1)]
    names += [f"{STACK}-app-{i}" for i in range(1, VARS["app_instance_count"] + 1)]
    names += [f"{STACK}-{kind}-1" for kind in ("db-lb", "app-lb", "monitoring", "backup", "cache", "client-allowed", "client-other")]
    return sorted(names)


def test_counts_from_inventory_and_systemd_running():
    assert containers() == expected_names()
    for name in containers():
        state = sh("docker", "exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        assert state in ("running", "degraded"), (name, state)
        assert inspect("container", name)["HostConfig"]["Privileged"] is False


def test_subnets_and_fixed_addresses():
    for net, cidr in VARS["local_networks"].items():
        assert inspect("network", f"{STACK}-{net}")["IPAM"]["Config"][0]["Subnet"] == cidr
    db1 = inspect("container", f"{STACK}-db-1")["NetworkSettings"]["Networks"]
    assert db1[f"{STACK}-db"]["IPAMConfig"]["IPv4Address"] == "10.45.2.11"
    lb = inspect("container", f"{STACK}-db-lb-1")["NetworkSettings"]["Networks"]
    assert set(lb) == {f"{STACK}-db", f"{STACK}-app"}


def test_data_disks_only_on_database_and_backup_hosts():
    for name in containers():
        mounts = {m["Destination"]: m for m in inspect("container", name)["Mounts"]}
        if ("-db-" in name and "-lb-" not in name) or "-backup-" in name:
            assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == f"{name}-data"
        else:
            assert "/data" not in mounts


def test_inventory_groups_from_labels():
    env = dict(os.environ, VPCSTACK_STACK=STACK, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    out = subprocess.run(["ansible-inventory", "-i", os.path.join(REPO, "inventories/local"), "--list"],
                         env=env, check=True, capture_output=True, text=True, cwd=REPO).stdout
    inv = json.loads(out)
    assert sorted(inv["db"]["hosts"]) == [f"{STACK}-db-{i}" for i in range(1, VARS["db_node_count"] + 1)]
    assert sorted(inv["etcd"]["hosts"]) == sorted(inv["db"]["hosts"])
    assert sorted(inv["app"]["hosts"]) == [f"{STACK}-app-{i}" for i in range(1, VARS["app_instance_count"] + 1)]
    # Prometheus scrapes every host but the test clients.
    assert sorted(inv["monitored"]["hosts"]) == [n for n in expected_names() if "-client-" not in n]
    assert inv["monitoring"]["hosts"] == [f"{STACK}-monitoring-1"] and inv["cache"]["hosts"] == [f"{STACK}-cache-1"]
    assert inv["backup_repo"]["hosts"] == [f"{STACK}-backup-1"]


def test_even_etcd_member_count_fails_before_anything_is_created():
    stack = STACK + "even"
    env = dict(os.environ, VPCSTACK_STACK=stack, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    proc = subprocess.run(["ansible-playbook", "-i", "inventories/local", "playbooks/provision_local.yml",
                           "-e", "@" + VARS_FILE, "-e", f"vpcstack_stack={stack}", "-e", "db_node_count=2"],
                          env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "etcd needs 1, 3, 5 or 7" in proc.stdout + proc.stderr
    for kind in ("ps", "network ls", "volume ls"):
        cmd = ["docker", *kind.split(), "-q", "--filter", f"label=vpcstack.stack={stack}"]
        cmd += ["-a"] if kind == "ps" else []
        assert sh(*cmd).stdout.strip() == "", kind


def test_teardown_keeps_data_volumes_and_reprovision_reattaches_them():
    env = dict(os.environ, VPCSTACK_STACK=STACK, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    play = lambda book: subprocess.run(  # noqa: E731
        ["ansible-playbook", "-i", "inventories/local", f"playbooks/{book}",
         "-e", "@" + VARS_FILE],
        env=env, cwd=REPO, check=True, capture_output=True, text=True)
    sh("docker", "exec", f"{STACK}-db-1", "sh", "-c", "echo kept > /data/marker")
    play("teardown_local.yml")
    assert containers() == []
    assert sh("docker", "network", "ls", "-q", "--filter", f"label=vpcstack.stack={STACK}").stdout.strip() == ""
    assert sh("docker", "volume", "inspect", f"{STACK}-db-1-data", check=False).returncode == 0
    play("provision_local.yml")
    assert containers() == expected_names()
    assert sh("docker", "exec", f"{STACK}-db-1", "cat", "/data/marker").stdout.strip() == "kept"

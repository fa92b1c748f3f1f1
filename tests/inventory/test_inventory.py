"""Inventories without any host (`make test-inventory`): every firewall source is checked before
anything changes, the roles' own rule checks refuse a bad rule, and inventories/customer-x gives
every GCE host the sources, secrets and endpoint the roles need (rendered on stand-in hosts:
tests/inventory/customer-x, its group_vars being customer-x's own)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV_BIN = REPO / ".venv" / "bin"
HEALTH_CHECKS = {"35.191.0.0/16", "130.211.0.0/22"}


def playbook(playbook: Path, inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *extra],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def one_host_inventory(tmp: Path, host_vars: dict) -> Path:
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}", **host_vars}
    path = tmp / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {"probe": host}}}))
    return path


# --- the early check ----------------------------------------------------------------------------
def test_site_and_the_baseline_check_the_sources_first():
    site = yaml.safe_load((REPO / "site.yml").read_text())
    assert site[0]["ansible.builtin.import_playbook"] == "playbooks/check_sources.yml"
    common = yaml.safe_load((REPO / "playbooks/common.yml").read_text())
    assert common[0]["ansible.builtin.import_playbook"] == "check_sources.yml"
    check = yaml.safe_load((REPO / "playbooks/check_sources.yml").read_text())
    assert check[0]["hosts"] == "all" and check[0]["any_errors_fatal"] is True


@pytest.mark.parametrize("name, value, bad", [
    ("etcd_peer_allowed_sources", ["10.20.2.0/24", "10.20.2.5/24"], "10.20.2.5/24"),   # host bits
    ("app_allowed_sources", ["198.51.100.7"], "198.51.100.7"),                          # no prefix
    ("redis_allowed_sources", "10.20.1.0/24", "10.20.1.0/24"),                          # not a list
    ("patroni_rest_allowed_sources", ["fd00::/8"], "fd00::/8"),                         # not IPv4
    ("prometheus_allowed_sources", ["10.0.0.0/33"], "10.0.0.0/33"),
])
def test_a_malformed_source_stops_the_run_with_a_clear_message(name, value, bad):
    with tempfile.TemporaryDirectory() as tmp:
        inventory = one_host_inventory(Path(tmp), {name: value, "common_ssh_allowed_sources": ["10.0.0.1/32"]})
        run = playbook(REPO / "playbooks/check_sources.yml", inventory)
    assert run.returncode != 0
    assert f"probe: {name} has" in run.stdout and bad in run.stdout, run.stdout[-2000:]
    assert "Nothing was changed" in run.stdout


def test_well_formed_sources_pass():
    with tempfile.TemporaryDirectory() as tmp:
        inventory = one_host_inventory(Path(tmp), {
            "app_allowed_sources": ["10.10.0.0/16", "198.51.100.7/32"], "etcd_peer_allowed_sources": [],
            "common_ssh_allowed_sources": ["35.235.240.0/20"]})
        run = playbook(REPO / "playbooks/check_sources.yml", inventory)
    assert run.returncode == 0, run.stdout[-2000:]


# --- a role's own rules (roles/common tasks_from allow) -------------------------------------------
ALLOW_PLAY = """
- hosts: probe
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: common
        tasks_from: allow
      vars:
        common_firewall_enabled: false   # validation only: nothing is written on this machine
        common_allow_name: probe
        common_allow_rules: {rules}
"""


@pytest.mark.parametrize("rules, ok", [
    ([{"port": 8080, "sources": ["10.0.0.0/8"]}, {"port": "9100-9101", "sources": []}], True),
    ([{"port": 70000, "sources": ["10.0.0.0/8"]}], False),
    ([{"port": 8080, "proto": "sctp", "sources": ["10.0.0.0/8"]}], False),
    ([{"port": 8080, "sources": ["10.0.0.1/8"]}], False),
])
def test_allow_checks_every_rule(rules, ok):
    with tempfile.TemporaryDirectory() as tmp:
        inventory = one_host_inventory(Path(tmp), {})
        play = Path(tmp) / "allow.yml"
        play.write_text(ALLOW_PLAY.format(rules=json.dumps(rules)))
        run = playbook(play, inventory, "--check")
    assert (run.returncode == 0) == ok, run.stdout[-2000:]
    if not ok:
        # The argument spec (types, choices) or the role's own check (ports, CIDRs) refuses it.
        assert "probe: invalid firewall rule" in run.stdout or "Validation of arguments failed" in run.stdout


# --- inventories/customer-x ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def customer_x() -> dict[str, dict]:
    inventory = HERE / "customer-x"
    check = playbook(REPO / "playbooks/check_sources.yml", inventory)
    assert check.returncode == 0, check.stdout[-2000:]
    with tempfile.TemporaryDirectory() as tmp:
        run = playbook(HERE / "render.yml", inventory, "-e", f"render_dir={tmp}")
        assert run.returncode == 0, run.stdout[-2000:]
        return {p.stem: json.loads(p.read_text()) for p in Path(tmp).glob("*.json")}


def test_customer_x_opens_the_app_port_to_the_allowlist_and_the_health_checks(customer_x):
    app = customer_x["vpcstack-app-abcd"]
    assert app["app_allowed_sources"]
    assert set(app["app_health_check_allowed_sources"]) == HEALTH_CHECKS


def test_customer_x_opens_the_data_layer_to_its_subnets_and_the_db_health_check(customer_x):
    for host in ("vpcstack-db-1", "vpcstack-db-2", "vpcstack-db-3"):
        v = customer_x[host]
        app_subnet, db_subnet = v["gce_app_subnet_cidr"], v["gce_db_subnet_cidr"]
        assert v["etcd_client_allowed_sources"] == [db_subnet]
        assert v["etcd_peer_allowed_sources"] == [db_subnet]
        assert set(v["postgresql_allowed_sources"]) == {app_subnet, db_subnet}
        assert set(v["patroni_rest_allowed_sources"]) == {db_subnet} | HEALTH_CHECKS
        # No monitoring host on GCE (the Ops Agent scrapes on localhost): metrics ports stay closed.
        assert not v.get("monitoring_allowed_sources")


def test_customer_x_app_connects_to_an_address_in_the_members_certificates(customer_x):
    db = customer_x["vpcstack-db-1"]
    for host, v in customer_x.items():
        assert v["app_db_host"] == db["db_endpoint_address"], host
    assert db["app_db_host"] in db["patroni_tls_extra_addresses"]


def test_customer_x_secrets_live_per_project_outside_the_repository(customer_x):
    v = customer_x["vpcstack-app-abcd"]
    secrets = Path(v["vpcstack_secrets_dir"])
    assert secrets.is_absolute() and REPO not in secrets.parents
    assert "customer-x-prod" in secrets.parts
    for name in ("app_db_password_src", "app_db_migration_password_src", "app_db_ca_cert_src"):
        assert Path(v[name]).parent.parent == secrets, name

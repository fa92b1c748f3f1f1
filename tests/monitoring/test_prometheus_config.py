"""roles/prometheus' configuration rendered for an inventory: valid for promtool, targets from groups."""

from __future__ import annotations

import os
import pathlib
import sys

import yaml
from conftest import REPO, run

INVENTORY = {
    "all": {"children": {
        "monitoring": {"hosts": {"s-mon-1": {}}},
        "app": {"hosts": {"s-app-1": {}, "s-app-2": {}}},
        "app_lb": {"hosts": {"s-app-lb-1": {}}},
        "db": {"hosts": {"s-db-1": {}, "s-db-2": {}, "s-db-3": {"prometheus_target_host": "10.9.9.13"}}},
        "db_endpoint": {"hosts": {"s-db-lb-1": {}}},
        "cache": {"hosts": {"s-cache-1": {}}},
        "clients": {"hosts": {"s-client-1": {}}},
        "monitored": {"children": {"monitoring": {}, "app": {}, "app_lb": {}, "db": {}, "db_endpoint": {}, "cache": {}}},
    }},
}


def render(tmp_path: pathlib.Path) -> dict:
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    ca = tmp_path / "ca.crt"
    ca.write_text("")
    out = tmp_path / "prometheus.yml"
    playbook = [{
        "name": "Render roles/prometheus' configuration on the control node",
        "hosts": "s-mon-1",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(REPO / "roles/prometheus/defaults/main.yml"),
                       str(REPO / "inventories/local/group_vars/monitoring.yml")],
        "vars": {"vpcstack_stack": "s", "prometheus_ca_file": str(ca), "role_path": str(REPO / "roles/prometheus"),
                 "ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "Template", "ansible.builtin.template": {
            "src": str(REPO / "roles/prometheus/templates/prometheus.yml.j2"), "dest": str(out), "mode": "0644"}}],
    }]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(playbook))
    ansible = pathlib.Path(sys.executable).parent / "ansible-playbook"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    result = run([str(ansible), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "render.yml")], env=env,
                 cwd=str(REPO))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return {"path": out, "config": yaml.safe_load(out.read_text())}


def test_rendered_configuration(tmp_path, promtool):
    rendered = render(tmp_path)
    check = run([promtool, "check", "config", str(rendered["path"])])
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {job["job_name"]: job for job in rendered["config"]["scrape_configs"]}
    targets = {name: sorted((t, s["labels"]["host"]) for s in job["static_configs"] for t in s["targets"])
               for name, job in jobs.items()}
    hosts = ["s-mon-1", "s-app-1", "s-app-2", "s-app-lb-1", "s-db-1", "s-db-2", "s-db-lb-1", "s-cache-1"]
    assert targets["node"] == sorted([(f"{h}:9100", h) for h in hosts] + [("10.9.9.13:9100", "s-db-3")])
    assert ("s-client-1:9100", "s-client-1") not in targets["node"], "test clients are not monitored"
    assert len(targets["node"]) == 9
    assert targets["patroni"] == [("10.9.9.13:8008", "s-db-3"), ("s-db-1:8008", "s-db-1"), ("s-db-2:8008", "s-db-2")]
    assert targets["postgres"] == [("10.9.9.13:9187", "s-db-3"), ("s-db-1:9187", "s-db-1"), ("s-db-2:9187", "s-db-2")]
    assert targets["haproxy"] == [("s-app-lb-1:8405", "s-app-lb-1"), ("s-db-lb-1:8405", "s-db-lb-1")]
    assert targets["app"] == [("s-app-1:8080", "s-app-1"), ("s-app-2:8080", "s-app-2")]
    assert targets["redis"] == [("s-cache-1:9121", "s-cache-1")]
    assert targets["prometheus"] == [("s-mon-1:9090", "s-mon-1")]
    for name in ("node", "postgres", "patroni", "redis", "prometheus"):
        assert jobs[name]["scheme"] == "https" and jobs[name]["tls_config"]["ca_file"].endswith("ca.crt")
    assert rendered["config"]["global"]["external_labels"] == {"stack": "s"}
    assert rendered["config"]["rule_files"] == ["/etc/prometheus/rules/*.yml"]

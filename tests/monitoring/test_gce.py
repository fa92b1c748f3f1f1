"""GCE monitoring as code, offline: Ops Agent configuration, alert policies, uptime checks, apply.

Nothing here reaches Google: the policies' queries are unit-tested with promtool (the same tests
as the Prometheus rules), and monitoring/tools/gce_apply.py runs against a local double of the
Monitoring API's alertPolicies and uptimeCheckConfigs collections.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import re
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from conftest import REPO, run

GCE = REPO / "monitoring/gce"
TOOLS = REPO / "monitoring/tools"
OPS_AGENT = REPO / "roles/ops_agent/files"   # the configuration per kind of host
KIND_GROUP = {"db.yaml": "db", "app.yaml": "app", "cache.yaml": "cache"}
# Endpoints that exist only on the local stack (Google's load balancers replace HAProxy; there is
# no Prometheus server on GCE).
LOCAL_ONLY_JOBS = {"haproxy", "prometheus"}


def prometheus_jobs() -> list[dict]:
    defaults = yaml.safe_load((REPO / "roles/prometheus/defaults/main.yml").read_text())
    extra = yaml.safe_load((REPO / "inventories/local/group_vars/monitoring.yml").read_text())
    return defaults["prometheus_scrape_jobs"] + extra.get("prometheus_extra_scrape_jobs", [])


@pytest.mark.parametrize("kind", sorted(KIND_GROUP))
def test_ops_agent_scrapes_the_same_endpoints_as_prometheus(kind):
    config = yaml.safe_load((OPS_AGENT / kind).read_text())
    receivers = config["metrics"]["receivers"]
    pipelines = config["metrics"]["service"]["pipelines"]
    assert {r for p in pipelines.values() for r in p["receivers"]} == set(receivers)
    scraped = set()
    for receiver in receivers.values():
        assert receiver["type"] == "prometheus"
        for job in receiver["config"]["scrape_configs"]:
            for static in job["static_configs"]:
                for target in static["targets"]:
                    host, port = target.rsplit(":", 1)
                    assert host == "localhost"
                    scraped.add((job["job_name"], int(port), job.get("scheme", "http")))
            if job.get("scheme") == "https":
                assert job["tls_config"]["ca_file"] == "/etc/vpcstack/pki/ca.crt"
    group = KIND_GROUP[kind]
    expected = {(j["name"], j["port"], j.get("scheme", "http")) for j in prometheus_jobs()
                if (group in j["groups"] or "monitored" in j["groups"]) and j["name"] not in LOCAL_ONLY_JOBS}
    assert scraped == expected


@pytest.mark.parametrize("kind", sorted(KIND_GROUP))
def test_ops_agent_scrape_configs_are_valid_prometheus(kind, tmp_path, promtool):
    config = yaml.safe_load((OPS_AGENT / kind).read_text())
    ca = tmp_path / "ca.crt"
    ca.write_text("")
    jobs = [copy.deepcopy(j) for r in config["metrics"]["receivers"].values() for j in r["config"]["scrape_configs"]]
    for job in jobs:
        if "tls_config" in job:
            job["tls_config"]["ca_file"] = str(ca)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump({"scrape_configs": jobs}))
    result = run([promtool, "check", "config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_policies_are_generated_from_the_rules():
    result = run([sys.executable, str(TOOLS / "gce_alert_policies.py"), "check"])
    assert result.returncode == 0, result.stdout


def test_alert_policy_queries_pass_the_rule_unit_tests(tmp_path, promtool):
    """The inlined queries of the policies behave exactly like the rules, on the same tests."""
    rules = tmp_path / "gce.rules.yml"
    assert run([sys.executable, str(TOOLS / "gce_alert_policies.py"), "rules", str(rules)]).returncode == 0
    gce_alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert not any(":" in r["expr"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]
                   if re.search(r"vpcstack:\w", r["expr"])), "recording rules must be inlined"
    cases = 0
    for test_file in sorted((REPO / "monitoring/tests").glob("*.test.yml")):
        doc = yaml.safe_load(test_file.read_text())
        doc["rule_files"] = [str(rules)]
        kept = []
        for case in doc["tests"]:
            case.pop("promql_expr_test", None)
            case["alert_rule_test"] = [e for e in case.get("alert_rule_test", []) if e["alertname"] in gce_alerts]
            if case["alert_rule_test"]:
                kept.append(case)
                cases += len(case["alert_rule_test"])
        doc["tests"] = kept
        out = tmp_path / test_file.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = run([promtool, "test", "rules", str(out)])
        assert result.returncode == 0, f"{test_file.name}:\n{result.stdout}{result.stderr}"
    assert cases > 40


def test_policy_and_uptime_definitions_are_well_formed():
    policies = [json.loads(p.read_text()) for p in sorted((GCE / "alert-policies").glob("*.json"))]
    names = [p["displayName"] for p in policies]
    assert len(names) == len(set(names))
    for policy in policies:
        assert policy["displayName"].startswith("${STACK} ")
        assert policy["combiner"] == "OR" and len(policy["conditions"]) == 1
        assert policy["severity"] in {"CRITICAL", "WARNING"}
        assert policy["documentation"]["content"] and "{{" not in policy["documentation"]["content"]
        condition = policy["conditions"][0]
        assert set(condition) - {"displayName"} <= {"conditionPrometheusQueryLanguage", "conditionThreshold"}
    checks = {p.stem: json.loads(p.read_text()) for p in sorted((GCE / "uptime-checks").glob("*.json"))}
    assert set(checks) == {"app-readyz", "db-endpoint-tcp"}
    for stem, check in checks.items():
        assert check["checkerType"] == "VPC_CHECKERS"
        assert check["monitoredResource"]["type"] == "servicedirectory_service"
        uptime_policy = json.loads((GCE / "alert-policies" / f"uptime-{stem}.json").read_text())
        assert f"${{CHECK_ID:{stem}}}" in uptime_policy["conditions"][0]["conditionThreshold"]["filter"]
    assert checks["app-readyz"]["httpCheck"]["path"] == "/readyz"


class Double(BaseHTTPRequestHandler):
    """alertPolicies and uptimeCheckConfigs of one project, in memory."""

    store: dict[str, dict[str, dict]] = {}
    calls: list[tuple[str, str]] = []

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        path = self.path.split("?")[0]
        match = re.fullmatch(r"/v3/projects/([^/]+)/(alertPolicies|uptimeCheckConfigs)(?:/([^/]+))?", path)
        if not match or self.headers.get("Authorization") != "Bearer test-token":
            self._reply(404 if not match else 401, {"error": "no"})
            return None
        return match.groups()

    def do_GET(self):  # noqa: N802
        route = self._route()
        if route:
            self.calls.append(("GET", route[1]))
            self._reply(200, {route[1]: list(self.store.setdefault(route[1], {}).values())})

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_POST(self):  # noqa: N802
        route = self._route()
        if route:
            body = self._body()
            body["name"] = f"projects/{route[0]}/{route[1]}/{uuid.uuid4().hex[:12]}"
            if route[1] == "alertPolicies":
                for condition in body["conditions"]:
                    condition["name"] = f"{body['name']}/conditions/{uuid.uuid4().hex[:8]}"
                body["creationRecord"] = {"mutateTime": "2026-01-01T00:00:00Z"}
                if not body.get("notificationChannels"):
                    body.pop("notificationChannels", None)   # the API omits empty lists
            self.store.setdefault(route[1], {})[body["name"]] = body
            self.calls.append(("POST", route[1]))
            self._reply(200, body)

    def do_PATCH(self):  # noqa: N802
        route = self._route()
        if route:
            name = f"projects/{route[0]}/{route[1]}/{route[2]}"
            body = self._body()
            body["name"] = name
            self.store[route[1]][name] = body
            self.calls.append(("PATCH", route[1]))
            self._reply(200, body)


@pytest.fixture()
def api_double():
    Double.store, Double.calls = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Double)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v3"
    server.shutdown()
    server.server_close()


def apply(api: str, *args: str):
    env = {**os.environ, "VPCSTACK_MONITORING_API": api, "GCP_ACCESS_TOKEN": "test-token", "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1"}
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        env.pop(var, None)
    return run([sys.executable, str(TOOLS / "gce_apply.py"), "--project", "p1", "--region", "europe-west1",
                "--stack", "cx", *args], env=env)


def test_apply_creates_then_changes_nothing_then_repairs_drift(api_double):
    n_checks = len(list((GCE / "uptime-checks").glob("*.json")))
    n_policies = len(list((GCE / "alert-policies").glob("*.json")))
    first = apply(api_double, "--notification-channel", "projects/p1/notificationChannels/42")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{n_checks + n_policies} created, 0 updated, 0 unchanged" in first.stdout
    policies = Double.store["alertPolicies"].values()
    assert all(p["displayName"].startswith("cx ") for p in policies)
    assert all(p["notificationChannels"] == ["projects/p1/notificationChannels/42"] for p in policies)
    check_ids = {c["name"].rsplit("/", 1)[1] for c in Double.store["uptimeCheckConfigs"].values()}
    uptime_filters = [p["conditions"][0]["conditionThreshold"]["filter"] for p in policies
                      if "conditionThreshold" in p["conditions"][0]]
    assert {re.search(r'check_id="([^"]+)"', f).group(1) for f in uptime_filters} == check_ids
    assert all(c["monitoredResource"]["labels"]["project_id"] == "p1" for c in Double.store["uptimeCheckConfigs"].values())

    before = len(Double.calls)
    second = apply(api_double, "--notification-channel", "projects/p1/notificationChannels/42")
    assert f"0 created, 0 updated, {n_checks + n_policies} unchanged" in second.stdout, second.stdout
    assert [c[0] for c in Double.calls[before:]] == ["GET", "GET"], "a second run only reads"

    victim = next(p for p in Double.store["alertPolicies"].values() if p["displayName"] == "cx InstanceDown")
    victim["conditions"][0]["conditionPrometheusQueryLanguage"]["query"] = "up == 2"
    third = apply(api_double, "--notification-channel", "projects/p1/notificationChannels/42")
    assert f"0 created, 1 updated, {n_checks + n_policies - 1} unchanged" in third.stdout, third.stdout
    assert victim["name"] in Double.store["alertPolicies"]
    assert Double.store["alertPolicies"][victim["name"]]["conditions"][0]["conditionPrometheusQueryLanguage"]["query"] == "up == 0"


def test_apply_dry_run_needs_no_token_and_reads_the_inventory():
    env = {k: v for k, v in os.environ.items() if k != "GCP_ACCESS_TOKEN"}
    result = run([sys.executable, str(TOOLS / "gce_apply.py"), "-i", str(REPO / "inventories/customer-x"), "--dry-run"],
                 env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "project customer-x-prod, stack vpcstack (dry run)" in result.stdout
    assert "0 updated, 0 unchanged" in result.stdout

#!/usr/bin/env python3
"""Cloud Monitoring alert policies generated from the Prometheus alert rules (one source of truth).

    gce_alert_policies.py generate   write monitoring/gce/alert-policies/rule-<alert>.json
    gce_alert_policies.py check      fail if those files differ from what generate would write
    gce_alert_policies.py rules OUT  write the policies' queries back as a Prometheus rule file
                                     (used to run the promtool unit tests against them)

Each alert of monitoring/rules/*.yml becomes an AlertPolicy (Cloud Monitoring API v3) with one
PromQL condition (conditionPrometheusQueryLanguage): same query, same `for` duration, same
labels, the summary as documentation (label templates as ${metric.label.x}). Cloud Monitoring evaluates no Prometheus recording rules
for Compute Engine, so recording-rule names in a query are replaced by their expressions.

Placeholders left for monitoring/tools/gce_apply.py: ${STACK} (the inventory's vpcstack_stack).
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import yaml

MONITORING = pathlib.Path(__file__).resolve().parents[1]
RULES = MONITORING / "rules"
OUT = MONITORING / "gce" / "alert-policies"
SEVERITY = {"critical": "CRITICAL", "warning": "WARNING", "info": "WARNING"}
EVALUATION_INTERVAL = "60s"
# Alerts on metrics that do not exist on GCE: its load balancers are Google's (no HAProxy). Their
# job there is done by the uptime checks (monitoring/gce/uptime-checks) and their policies.
LOCAL_ONLY = {"LoadBalancerBackendDown", "DatabaseReadOnlyPoolEmpty"}


def duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0
    for number, unit in re.findall(r"(\d+)([smhd])", text or "0s"):
        total += int(number) * units[unit]
    return total


def load_rules() -> tuple[dict[str, str], list[tuple[str, dict]]]:
    recordings: dict[str, str] = {}
    alerts: list[tuple[str, dict]] = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recordings[rule["record"]] = " ".join(rule["expr"].split())
                elif rule["alert"] not in LOCAL_ONLY:
                    alerts.append((group["name"], rule))
    return recordings, alerts


def inline(expr: str, recordings: dict[str, str]) -> str:
    text = " ".join(expr.split())
    # Longest names first; a recording name is a whole token (not followed by more name characters).
    for name in sorted(recordings, key=len, reverse=True):
        text = re.sub(rf"(?<![\w:]){re.escape(name)}(?![\w:])", f"({recordings[name]})", text)
    return text


def documentation(summary: str) -> str:
    """Prometheus' Go templates in Cloud Monitoring's documentation variables."""
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", r"${metric.label.\1}", summary)
    return re.sub(r"\{\{\s*\$value[^}]*\}\}", "(value in the incident)", text)


def policy(group: str, rule: dict, recordings: dict[str, str]) -> dict:
    labels = dict(rule.get("labels", {}))
    annotations = rule.get("annotations", {})
    seconds = duration_seconds(rule.get("for", "0s"))
    return {
        "displayName": f"${{STACK}} {rule['alert']}",
        "documentation": {
            "content": (f"{documentation(annotations.get('summary', rule['alert']))}\n\n"
                        f"Runbook: {annotations.get('runbook', 'docs/monitoring.md')}\n\n"
                        f"Generated from monitoring/rules ({group}) by monitoring/tools/gce_alert_policies.py."),
            "mimeType": "text/markdown",
        },
        "userLabels": {"stack": "${STACK}", "severity": labels.get("severity", "warning"),
                       "source": "vpcstack-rules"},
        "severity": SEVERITY.get(labels.get("severity", "warning"), "WARNING"),
        "combiner": "OR",
        "conditions": [{
            "displayName": rule["alert"],
            "conditionPrometheusQueryLanguage": {
                "query": inline(rule["expr"], recordings),
                "duration": f"{seconds}s",
                "evaluationInterval": EVALUATION_INTERVAL,
                "labels": labels,
                "ruleGroup": group,
                "alertRule": rule["alert"],
            },
        }],
        "alertStrategy": {"autoClose": "604800s"},
        "notificationChannels": [],
    }


def rendered() -> dict[str, str]:
    recordings, alerts = load_rules()
    files = {}
    for group, rule in alerts:
        name = f"rule-{re.sub(r'[^a-z0-9]+', '-', rule['alert'].lower())}.json"
        files[name] = json.dumps(policy(group, rule, recordings), indent=2, sort_keys=False) + "\n"
    return files


def as_prometheus_rules(out: pathlib.Path) -> None:
    """The policies' conditions as a Prometheus rule file (same names, groups, queries, durations)."""
    groups: dict[str, list] = {}
    recordings, alerts = load_rules()
    for group, rule in alerts:
        condition = policy(group, rule, recordings)["conditions"][0]["conditionPrometheusQueryLanguage"]
        groups.setdefault(condition["ruleGroup"], []).append({
            "alert": condition["alertRule"], "expr": condition["query"],
            "for": condition["duration"], "labels": condition["labels"],
            "annotations": rule.get("annotations", {}),
        })
    doc = {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    files = rendered()
    if command == "generate":
        OUT.mkdir(parents=True, exist_ok=True)
        for old in OUT.glob("rule-*.json"):
            if old.name not in files:
                old.unlink()
        for name, text in files.items():
            (OUT / name).write_text(text, encoding="utf-8")
        print(f"gce_alert_policies: {len(files)} policies written to {OUT}")
        return 0
    if command == "check":
        present = {p.name: p.read_text(encoding="utf-8") for p in OUT.glob("rule-*.json")}
        stale = sorted(n for n in set(files) | set(present) if files.get(n) != present.get(n))
        if stale:
            print("gce_alert_policies: out of date (run monitoring/tools/gce_alert_policies.py generate): "
                  + ", ".join(stale))
            return 1
        print(f"gce_alert_policies: {len(files)} policies match monitoring/rules")
        return 0
    if command == "rules" and len(argv) > 2:
        as_prometheus_rules(pathlib.Path(argv[2]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

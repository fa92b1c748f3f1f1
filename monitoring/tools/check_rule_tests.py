#!/usr/bin/env python3
"""Prove that the promtool unit tests would notice a wrong alert rule.

For every alert in monitoring/rules/*.yml:
  1. coverage: the tests in monitoring/tests/*.test.yml contain at least one evaluation where the
     alert must fire (non-empty exp_alerts) and one where it must stay quiet (exp_alerts: []);
  2. mutation "never fires" (expr replaced by `vector(1) == 0`): the firing evaluations of
     that alert, run alone against the mutated rules, must FAIL;
  3. mutation "always fires" (expr replaced by `vector(1)`): the quiet evaluations of that alert,
     run alone against the mutated rules, must FAIL.
A rule whose test passes whatever the rule says is reported. Exit status 1 on any finding.

Usage: check_rule_tests.py PROMTOOL [MONITORING_DIR]
"""

from __future__ import annotations

import copy
import pathlib
import subprocess
import sys
import tempfile

import yaml

NEVER = "vector(1) == 0"
ALWAYS = "vector(1)"


def load_yaml(path: pathlib.Path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def alerts_by_file(rules_dir: pathlib.Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(rules_dir.glob("*.yml")):
        for group in load_yaml(path).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    found.setdefault(path.name, []).append(rule["alert"])
    return found


def mutate(rules_src: pathlib.Path, rules_dst: pathlib.Path, alert: str, expr: str) -> None:
    rules_dst.mkdir(parents=True, exist_ok=True)
    for path in rules_src.glob("*.yml"):
        doc = load_yaml(path)
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if rule.get("alert") == alert:
                    rule["expr"] = expr
        (rules_dst / path.name).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def select_cases(test_doc: dict, alert: str, firing: bool) -> dict | None:
    """The test document reduced to the evaluations of one alert of one kind."""
    doc = copy.deepcopy(test_doc)
    kept = []
    for case in doc.get("tests", []):
        evals = [e for e in case.get("alert_rule_test", [])
                 if e.get("alertname") == alert and bool(e.get("exp_alerts")) == firing]
        if evals:
            case["alert_rule_test"] = evals
            case.pop("promql_expr_test", None)
            kept.append(case)
    if not kept:
        return None
    doc["tests"] = kept
    return doc


def promtool_test(promtool: str, test_doc: dict, workdir: pathlib.Path, rules_dir: pathlib.Path) -> bool:
    doc = copy.deepcopy(test_doc)
    doc["rule_files"] = [str(rules_dir / pathlib.Path(f).name) for f in doc.get("rule_files", [])]
    path = workdir / "case.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    return result.returncode == 0


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    promtool = sys.argv[1]
    base = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else pathlib.Path(__file__).resolve().parents[1])
    rules_dir, tests_dir = base / "rules", base / "tests"
    tests = {p: load_yaml(p) for p in sorted(tests_dir.glob("*.test.yml"))}
    findings: list[str] = []
    checked = 0
    for rule_file, alerts in alerts_by_file(rules_dir).items():
        relevant = {p: d for p, d in tests.items()
                    if any(pathlib.Path(f).name == rule_file for f in d.get("rule_files", []))}
        for alert in alerts:
            for firing, mutation, label in ((True, NEVER, "fires"), (False, ALWAYS, "stays quiet")):
                docs = [d for d in (select_cases(doc, alert, firing) for doc in relevant.values()) if d]
                if not docs:
                    findings.append(f"{alert}: no test case where it {label}")
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    work = pathlib.Path(tmp)
                    mutate(rules_dir, work / "rules", alert, mutation)
                    caught = any(not promtool_test(promtool, d, work, work / "rules") for d in docs)
                checked += 1
                if not caught:
                    findings.append(f"{alert}: its '{label}' cases still pass with expr `{mutation}`")
    for line in findings:
        print(f"rule-tests: {line}")
    print(f"rule-tests: {checked} mutations checked, {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

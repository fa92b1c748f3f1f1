"""docs/monitoring.md has a runbook section for every link the rules and GCE policies carry."""

from __future__ import annotations

import json
import re

import yaml
from conftest import REPO


def anchors(markdown: str) -> set[str]:
    found = set()
    for heading in re.findall(r"^#+\s+(.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_runbook_link_has_its_section():
    doc = anchors((REPO / "docs/monitoring.md").read_text())
    links = set()
    for path in (REPO / "monitoring/rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            links |= {r["annotations"]["runbook"] for r in group["rules"] if "alert" in r}
    for path in (REPO / "monitoring/gce/alert-policies").glob("*.json"):
        links |= set(re.findall(r"docs/monitoring\.md#[\w-]+", json.loads(path.read_text())["documentation"]["content"]))
    assert all(link.startswith("docs/monitoring.md#") for link in links)
    missing = sorted(link for link in links if link.split("#", 1)[1] not in doc)
    assert not missing, missing
    assert len(links) >= 20

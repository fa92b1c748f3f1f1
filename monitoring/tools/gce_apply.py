#!/usr/bin/env python3
"""Create or update the stack's uptime checks and alert policies in Cloud Monitoring.

    export GCP_ACCESS_TOKEN=$(gcloud auth print-access-token)
    python monitoring/tools/gce_apply.py -i inventories/customer-x \
        [--notification-channel projects/P/notificationChannels/N ...] [--dry-run]

Reads monitoring/gce/uptime-checks/*.json and monitoring/gce/alert-policies/*.json, fills in the
placeholders from the inventory (${PROJECT_ID} = gce_project, ${REGION} = gce_region,
${STACK} = vpcstack_stack; ${CHECK_ID:<file>} = the id of the uptime check of that file) and
upserts them by display name through the Monitoring API v3: created when missing, replaced when
different, left alone when equal (a second run changes nothing). Objects of the stack that are no
longer defined are reported, not deleted. --dry-run prints the plan without calling the API.

The API base URL can be redirected with VPCSTACK_MONITORING_API (tests use a local double).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

GCE = pathlib.Path(__file__).resolve().parents[1] / "gce"
DEFAULT_API = "https://monitoring.googleapis.com/v3"
UPTIME_MUTABLE = ["displayName", "httpCheck", "tcpCheck", "period", "timeout", "userLabels", "contentMatchers"]


def inventory_vars(sources: list[str]) -> dict:
    beside = pathlib.Path(sys.executable).parent / "ansible-inventory"
    cmd = [str(beside) if beside.exists() else "ansible-inventory", "--list"]
    for source in sources:
        cmd += ["-i", source]
    data = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    merged: dict = {}
    for values in hostvars.values():
        for key in ("gce_project", "gce_region", "vpcstack_stack"):
            if key in values and key not in merged:
                value = values[key]
                merged[key] = value["__ansible_unsafe"] if isinstance(value, dict) else value
    return merged


def substitute(text: str, values: dict[str, str]) -> str:
    def repl(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"no value for placeholder ${{{key}}}")
        return values[key]
    return re.sub(r"\$\{([A-Z_]+(?::[a-z0-9-]+)?)\}", repl, text)


def covers(desired, actual) -> bool:
    """True when every field of desired is equal in actual (actual may carry server fields)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(covers(v, actual.get(k)) for k, v in desired.items()
                                                if not (v in ([], {}, None) and k not in actual))
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(
            covers(d, a) for d, a in zip(desired, actual))
    return desired == actual


class Api:
    def __init__(self, base: str, token: str | None, project: str, dry_run: bool):
        self.base, self.token, self.project, self.dry_run = base.rstrip("/"), token, project, dry_run

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        url = f"{self.base}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response) if response.length != 0 else {}
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{method} {url}: HTTP {exc.code}: {exc.read().decode()[:500]}") from exc

    def list(self, collection: str, key: str) -> list[dict]:
        if self.dry_run and not self.token:
            return []
        items, token = [], None
        while True:
            page = self.call("GET", f"projects/{self.project}/{collection}", query={"pageToken": token} if token else None)
            items += page.get(key, [])
            token = page.get("nextPageToken")
            if not token:
                return items

    def upsert(self, collection: str, key: str, desired: dict, existing: list[dict], mask: list[str] | None,
               counts: dict) -> dict:
        match = next((item for item in existing if item.get("displayName") == desired["displayName"]), None)
        if match is not None and covers(desired, match):
            counts["unchanged"] += 1
            print(f"  unchanged  {collection} {desired['displayName']}")
            return match
        action = "create" if match is None else "update"
        counts[action + "d"] += 1
        print(f"  {action:<10} {collection} {desired['displayName']}")
        if self.dry_run:
            return {**desired, "name": f"projects/{self.project}/{collection}/DRY-RUN-{len(existing)}"}
        if match is None:
            return self.call("POST", f"projects/{self.project}/{collection}", desired)
        query = {"updateMask": ",".join(f for f in mask if f in desired)} if mask else None
        return self.call("PATCH", match["name"], desired, query)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--inventory", action="append", default=[])
    parser.add_argument("--project")
    parser.add_argument("--region")
    parser.add_argument("--stack")
    parser.add_argument("--notification-channel", action="append", default=[])
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    found = inventory_vars(args.inventory) if args.inventory else {}
    values = {"PROJECT_ID": args.project or found.get("gce_project"),
              "REGION": args.region or found.get("gce_region"),
              "STACK": args.stack or found.get("vpcstack_stack")}
    missing = [k for k, v in values.items() if not v]
    if missing:
        raise SystemExit(f"gce_apply: missing {missing} (give -i INVENTORY or --project/--region/--stack)")
    token = os.environ.get("GCP_ACCESS_TOKEN")
    if not token and not args.dry_run:
        raise SystemExit("gce_apply: set GCP_ACCESS_TOKEN (gcloud auth print-access-token) or use --dry-run")
    api = Api(os.environ.get("VPCSTACK_MONITORING_API", DEFAULT_API), token, values["PROJECT_ID"], args.dry_run)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    print(f"gce_apply: project {values['PROJECT_ID']}, stack {values['STACK']}{' (dry run)' if args.dry_run else ''}")

    checks = api.list("uptimeCheckConfigs", "uptimeCheckConfigs")
    for path in sorted((GCE / "uptime-checks").glob("*.json")):
        desired = json.loads(substitute(path.read_text(encoding="utf-8"), values))
        created = api.upsert("uptimeCheckConfigs", "uptimeCheckConfigs", desired, checks, UPTIME_MUTABLE, counts)
        values[f"CHECK_ID:{path.stem}"] = created["name"].rsplit("/", 1)[-1]

    policies = api.list("alertPolicies", "alertPolicies")
    wanted = set()
    for path in sorted((GCE / "alert-policies").glob("*.json")):
        desired = json.loads(substitute(path.read_text(encoding="utf-8"), values))
        desired["notificationChannels"] = sorted(args.notification_channel)
        wanted.add(desired["displayName"])
        api.upsert("alertPolicies", "alertPolicies", desired, policies, None, counts)
    stale = sorted(p["displayName"] for p in policies
                   if p.get("userLabels", {}).get("stack") == values["STACK"] and p.get("displayName") not in wanted)
    for name in stale:
        print(f"  not defined any more (left in place): alertPolicies {name}")
    print(f"gce_apply: {counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())

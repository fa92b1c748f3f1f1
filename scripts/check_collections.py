"""Fail when a collection pinned in requirements.yml is missing or at another version."""
import json
import os
import subprocess
import sys

import yaml

wanted = yaml.safe_load(open(sys.argv[1]))["collections"]
out = subprocess.run(
    [os.path.join(os.path.dirname(sys.executable), "ansible-galaxy"), "collection", "list", "--format", "json"],
    check=True, capture_output=True, text=True,
).stdout
have = {}
for path_entries in json.loads(out).values():
    for name, meta in path_entries.items():
        have.setdefault(name, meta["version"])
bad = [f"{c['name']} {c['version']} (found {have.get(c['name'], 'none')})"
       for c in wanted if have.get(c["name"]) != c["version"]]
if bad:
    sys.exit("setup: pinned collections not available: " + ", ".join(bad))

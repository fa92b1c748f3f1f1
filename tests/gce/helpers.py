"""Reading the double's resource graph."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WWW = "https://www.googleapis.com/compute/v1/"


def customer_vars() -> dict:
    return yaml.safe_load((ROOT / "inventories/customer-x/group_vars/all/main.yml").read_text())


def kind(state: dict, collection: str) -> dict:
    """name -> resource for one collection (e.g. 'firewalls', 'instances')."""
    return {path.rsplit("/", 1)[1]: res for path, res in state["compute"].items()
            if path.split("/")[-2] == collection}


def get(state: dict, link: str) -> dict:
    return state["compute"][link[len(WWW):] if link.startswith(WWW) else link]

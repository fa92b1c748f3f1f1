"""The Compute Engine REST surface: URL routing, long-running operations, insert / update /
delete / list semantics and list filters, the same for every resource kind.

The kinds themselves (what an insert checks, what a verb does) live in instances.py,
networks.py and firewall.py; this module knows them only through COLLECTIONS.
"""
from __future__ import annotations

import copy
import json
import re

from .core import REGION_ZONES, WWW, ApiError, bad, check_name, fingerprint, now_iso
from .firewall import Firewall
from .instances import (MACHINE_TYPE_RE, Disk, Instance, InstanceGroup, InstanceGroupManager,
                        InstanceTemplate)
from .networks import Address, BackendService, ForwardingRule, HealthCheck, Network, Router, Subnetwork

COLLECTIONS = {
    "networks": Network, "subnetworks": Subnetwork, "routers": Router, "firewalls": Firewall,
    "instanceTemplates": InstanceTemplate, "healthChecks": HealthCheck,
    "instanceGroupManagers": InstanceGroupManager, "backendServices": BackendService,
    "forwardingRules": ForwardingRule, "addresses": Address, "disks": Disk, "instances": Instance,
    "instanceGroups": InstanceGroup,
}


def api(cloud, method: str, path: str, query: dict, body):
    """One request under /compute/v1/: its answer, or an ApiError in Google's terms."""
    m = re.match(r"^/compute/v1/projects/([^/]+)/(.*)$", path)
    if not m:
        raise ApiError(404, "notFound", "Not Found")
    project, rest = m.groups()
    if project != cloud.project:
        raise ApiError(404, "notFound", f"The resource 'projects/{project}' was not found")
    if rest == "aggregated/instances" and method == "GET":
        return aggregated_instances(cloud, query)
    if rest.startswith("global/images/") or rest.startswith("global/machineTypes"):
        raise ApiError(404, "notFound", f"The resource 'projects/{project}/{rest}' was not found")
    m = re.match(r"^(global|regions/[a-z0-9-]+|zones/[a-z0-9-]+)/([A-Za-z]+)(?:/([^/]+))?(?:/([A-Za-z]+))?$", rest)
    if not m:
        raise ApiError(404, "notFound", f"The resource 'projects/{project}/{rest}' was not found")
    scope, coll, name, verb = m.groups()
    base = f"projects/{project}/{scope}/{coll}"
    if scope.startswith("zones/") and scope[6:-2] not in REGION_ZONES and not re.match(r".*-[a-f]$", scope):
        raise ApiError(404, "notFound", f"The resource 'projects/{project}/{scope}' was not found")
    if coll == "operations" and name and method == "GET":
        op = cloud.ops.get(f"{scope}/operations/{name}")
        if op is None:
            raise ApiError(404, "notFound", f"The resource '{base}/{name}' was not found")
        return op.body()
    if coll == "machineTypes" and name and method == "GET":
        if not MACHINE_TYPE_RE.match(name):
            raise ApiError(404, "notFound", f"The resource '{base}/{name}' was not found")
        return {"kind": "compute#machineType", "name": name, "zone": scope[6:], "selfLink": WWW + f"{base}/{name}"}
    handler = COLLECTIONS.get(coll)
    if handler is None:
        raise ApiError(404, "notFound", f"The resource '{base}' was not found")
    if name is None:
        if method == "GET":
            return list_items(cloud, base, coll, query)
        if method == "POST":
            if not isinstance(body, dict):
                raise bad("Invalid JSON payload received.", "parseError")
            return insert(cloud, handler, scope, base, coll, body)
        raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
    item = f"{base}/{name}"
    if verb:
        fn = getattr(handler, "verb_" + verb, None)
        if fn is None or method not in ("POST", "GET"):
            raise ApiError(404, "notFound", f"The resource '{item}/{verb}' was not found")
        if item not in cloud.res:
            raise ApiError(404, "notFound", f"The resource '{item}' was not found")
        return fn(cloud, scope, item, query, body or {})
    if item not in cloud.res:
        raise ApiError(404, "notFound", f"The resource '{item}' was not found")
    if method == "GET":
        return copy.deepcopy(cloud.res[item])
    if method == "DELETE":
        return delete(cloud, handler, scope, item)
    if method in ("PATCH", "PUT"):
        if not hasattr(handler, "update"):
            raise bad(f"The resource '{item}' cannot be updated", "unsupportedOperation")
        if not isinstance(body, dict):
            raise bad("Invalid JSON payload received.", "parseError")
        current = cloud.res[item]
        if body.get("fingerprint") and current.get("fingerprint") and body["fingerprint"] != current["fingerprint"]:
            raise ApiError(412, "conditionNotMet",
                           "Supplied fingerprint does not match current metadata fingerprint.")
        new = handler.update(cloud, scope, item, copy.deepcopy(current), body, method)

        def apply():
            if item not in cloud.res:
                raise ApiError(404, "notFound", f"The resource '{item}' was not found")
            new["fingerprint"] = fingerprint({k: v for k, v in new.items() if k != "fingerprint"})
            cloud.res[item] = new
            after = getattr(handler, "after_update", None)
            if after:
                after(cloud, scope, item, current, new)
        return cloud.op(scope, "patch" if method == "PATCH" else "update", item, apply)
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")


def insert(cloud, handler, scope, base, coll, body):
    check_name(body.get("name"))
    item = f"{base}/{body['name']}"
    if item in cloud.res or item in cloud.pending:
        raise ApiError(409, "alreadyExists", f"The resource '{item}' already exists")
    res = handler.insert(cloud, scope, item, copy.deepcopy(body))
    res.update({"name": body["name"], "id": cloud.new_id(), "creationTimestamp": now_iso(),
                "selfLink": WWW + item})
    res.setdefault("kind", handler.kind)
    if scope.startswith("zones/"):
        res["zone"] = WWW + f"projects/{cloud.project}/{scope}"
    elif scope.startswith("regions/"):
        res["region"] = WWW + f"projects/{cloud.project}/{scope}"
    cloud.pending.add(item)

    def apply():
        handler.before_create(cloud, scope, item, res) if hasattr(handler, "before_create") else None
        res["fingerprint"] = fingerprint(res)
        cloud.res[item] = res
        if hasattr(handler, "after_create"):
            handler.after_create(cloud, scope, item, res)
        cloud.mark_address_users()
    return cloud.op(scope, "insert", item, apply)


def delete(cloud, handler, scope, item):
    # Deleting an instance detaches its disks (Instance.after_delete clears their users), as on GCE.
    users = [p for p, r in cloud.res.items() if p != item and '"%s"' % (WWW + item) in json.dumps(r)
             and not ("/addresses/" in p) and not ("/disks/" in p and "/instances/" in item)]
    if users:
        raise bad(f"The resource '{item}' is already being used by '{users[0]}'", "resourceInUseByAnotherResource")

    def apply():
        cloud.res.pop(item, None)
        if hasattr(handler, "after_delete"):
            handler.after_delete(cloud, scope, item)
        cloud.mark_address_users()
    return cloud.op(scope, "delete", item, apply)


def parse_filter(text: str):
    text = (text or "").strip()
    if not text:
        return []
    terms = re.findall(r"\(([^()]*)\)", text) if text.startswith("(") else [text]
    out = []
    for term in terms:
        m = re.match(r'^\s*([A-Za-z][A-Za-z0-9_.-]*)\s*(=|!=|eq|ne)\s*"?([^"]*?)"?\s*$', term)
        if not m:
            raise bad(f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.")
        out.append(m.groups())
    return out


def matches(res: dict, terms) -> bool:
    for field, op, value in terms:
        cur = res
        for part in field.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if op in ("eq", "ne"):
            hit = cur is not None and re.fullmatch(value, str(cur)) is not None
        else:
            hit = cur is not None and str(cur) == value
        if hit != (op in ("=", "eq")):
            return False
    return True


def list_items(cloud, base, coll, query):
    terms = parse_filter(query.get("filter", [""])[0])
    prefix = base + "/"
    items = [copy.deepcopy(r) for p, r in sorted(cloud.res.items())
             if p.startswith(prefix) and "/" not in p[len(prefix):] and matches(r, terms)]
    out = {"kind": COLLECTIONS[coll].kind + "List", "id": base, "selfLink": WWW + base}
    if items:
        out["items"] = items
    return out


def aggregated_instances(cloud, query):
    terms = parse_filter(query.get("filter", [""])[0])
    items: dict = {}
    for path, res in sorted(cloud.res.items()):
        if "/instances/" in path and matches(res, terms):
            zone = path.split("/")[3]
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(copy.deepcopy(res))
    return {"kind": "compute#instanceAggregatedList", "items": items,
            "selfLink": WWW + f"projects/{cloud.project}/aggregated/instances"}

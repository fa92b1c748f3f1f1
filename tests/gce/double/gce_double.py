#!/usr/bin/env python3
"""An in-memory double of the Google Cloud APIs that the gce_* roles call.

It listens on 127.0.0.1 only, as an HTTPS CONNECT proxy: the google.cloud modules (through
requests, HTTPS_PROXY and REQUESTS_CA_BUNDLE) and ansible.builtin.uri (through https_proxy and
ca_path) connect to it unmodified, it terminates TLS with a test CA for the Google API host names
it serves and answers from memory. CONNECT to any other host is refused: nothing leaves the
machine.

What it implements is exactly what the roles call (see docs/gce.md for the list and for what it
does not check): resources are created, changed and deleted by long-running operations that
complete after --op-delay seconds (a client that does not wait for an operation sees the old
state, as on Google Cloud); inserts check required fields, name syntax, references and
conflicts, and errors come back in Google's shapes.

Plain-HTTP admin endpoints under /_double/ (state, call log, seed, reset, a fake Patroni health
endpoint) serve the tests. The process ends by itself after --max-seconds.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import ipaddress
import itertools
import json
import os
import re
import shlex
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WWW = "https://www.googleapis.com/compute/v1/"
HOSTS = (
    "compute.googleapis.com",
    "www.googleapis.com",
    "storage.googleapis.com",
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "secretmanager.googleapis.com",
)
NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[-_a-z0-9]{0,63}$")
SA_ID_RE = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
BUCKET_RE = re.compile(r"^[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9]$")
MACHINE_TYPE_RE = re.compile(
    r"^(?:(?:e2|n1|n2|n2d|n4|c2|c2d|c3|c3d|c4|t2d|t2a|m1|m2|m3)-(?:standard|highmem|highcpu|ultramem|megamem)-\d{1,3}"
    r"|e2-(?:micro|small|medium)|f1-micro|g1-small|(?:(?:n2|n2d|e2)-)?custom-\d{1,3}-\d{3,7})$"
)
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced")
PUBLIC_IMAGES = {
    "projects/debian-cloud/global/images/family/debian-12",
    "projects/debian-cloud/global/images/family/debian-11",
}
KMS_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
REGION_ZONES = {
    "europe-west1": ["b", "c", "d"],
    "us-east1": ["b", "c", "d"],
    "us-east4": ["a", "b", "c"],
    "europe-west4": ["a", "b", "c"],
}
HEALTH_CHECK_RANGES = {"35.191.0.0/16", "130.211.0.0/22"}
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION"}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self, style: str) -> dict:
        if style == "new":  # IAM, Resource Manager: google.rpc.Status
            return {"error": {"code": self.code, "message": self.message,
                              "status": STATUS_NAMES.get(self.code, "UNKNOWN")}}
        return {"error": {"code": self.code, "message": self.message,
                          "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}}


def bad(message: str, reason: str = "invalid") -> ApiError:
    return ApiError(400, reason, message)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def fingerprint(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def need(body: dict, *fields: str) -> None:
    for field in fields:
        cur = body
        for part in field.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur in (None, "", [], {}):
            raise bad(f"Required field 'resource.{field}' not specified", "required")


def check_name(name) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad(f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                  "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")


def check_labels(labels, field="resource.labels") -> None:
    if labels is None:
        return
    if not isinstance(labels, dict) or len(labels) > 64:
        raise bad(f"Invalid value for field '{field}'")
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(str(key)) or not LABEL_VALUE_RE.match(str(value)):
            raise bad(f"Invalid value for field '{field}': label '{key}={value}'")


def check_cidr(value, field: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except (ValueError, TypeError):
        raise bad(f"Invalid value for field '{field}': '{value}'. Invalid IPCidrRange") from None


class Op:
    """A long-running operation: the change is applied when it completes, as on Google Cloud."""

    ids = itertools.count(7000000000000000000)

    def __init__(self, project, scope, op_type, target_path, apply, due):
        self.name = "operation-%d-%s" % (int(time.time() * 1000), os.urandom(6).hex())
        self.id = str(next(self.ids))
        self.project, self.scope, self.op_type = project, scope, op_type
        self.target_path, self.apply, self.due = target_path, apply, due
        self.status, self.error, self.insert_time, self.end_time = "RUNNING", None, now_iso(), None

    def body(self) -> dict:
        out = {
            "kind": "compute#operation", "id": self.id, "name": self.name,
            "operationType": self.op_type, "targetLink": WWW + self.target_path,
            "status": self.status, "user": "double@example.test",
            "progress": 100 if self.status == "DONE" else 0,
            "insertTime": self.insert_time, "startTime": self.insert_time,
            "selfLink": WWW + f"projects/{self.project}/{self.scope}/operations/{self.name}",
        }
        if self.scope.startswith("zones/"):
            out["zone"] = WWW + f"projects/{self.project}/{self.scope}"
        elif self.scope.startswith("regions/"):
            out["region"] = WWW + f"projects/{self.project}/{self.scope}"
        if self.end_time:
            out["endTime"] = self.end_time
        if self.error:
            out["error"] = {"errors": [self.error]}
            out["httpErrorStatusCode"] = 400
            out["httpErrorMessage"] = "BAD REQUEST"
        return out


class Cloud:
    """The whole in-memory state, guarded by one lock."""

    def __init__(self, project: str, token: str, op_delay: float, stable_delay: float, health_delay: float):
        self.project, self.token = project, token
        self.op_delay, self.stable_delay, self.health_delay = op_delay, stable_delay, health_delay
        self.lock = threading.RLock()
        self.res: dict[str, dict] = {}       # compute path -> resource
        self.ops: dict[str, Op] = {}         # scope/operations/name -> op
        self.pending: set[str] = set()       # compute paths being inserted
        self.sas: dict[str, dict] = {}       # email -> service account
        self.buckets: dict[str, dict] = {}
        self.policies: dict[str, dict] = {}  # "project:p" / "bucket:b" / "secret:s" -> IAM policy
        self.secrets: dict[str, dict] = {}   # secret id -> secret (no versions: values never here)
        self.calls: list[dict] = []
        self.ids = itertools.count(1000000000000000000)
        self.suffix = itertools.count(0)

    # ------------------------------------------------------------------ helpers
    def new_id(self) -> str:
        return str(next(self.ids))

    def tick(self) -> None:
        now = time.time()
        for op in list(self.ops.values()):
            if op.status != "DONE" and op.due <= now:
                try:
                    op.apply()
                except ApiError as exc:
                    op.error = {"code": exc.reason.upper(), "message": exc.message}
                op.status, op.end_time = "DONE", now_iso()
                self.pending.discard(op.target_path)
        for res in self.res.values():
            if res.get("_stable_at") and res["_stable_at"] <= now:
                res["_stable_at"] = None
                res["status"] = {"isStable": True}
                res["currentActions"] = {"none": res.get("targetSize", 0)}

    def op(self, scope: str, op_type: str, path: str, apply) -> dict:
        op = Op(self.project, scope, op_type, path, apply, time.time() + self.op_delay)
        self.ops[f"{scope}/operations/{op.name}"] = op
        return op.body()

    def zones_of(self, region: str) -> list[str]:
        return [f"{region}-{z}" for z in REGION_ZONES.get(region, ["a", "b", "c"])]

    def ref(self, value, collection: str, field: str, must_exist: bool = True) -> str:
        """Normalise a reference (full URL on either host, partial path, or relative) to a path."""
        if not isinstance(value, str) or not value:
            raise bad(f"Invalid value for field '{field}': '{value}'")
        path = value
        for prefix in (WWW, "https://compute.googleapis.com/compute/v1/"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        if not path.startswith("projects/"):
            path = f"projects/{self.project}/{path}"
        parts = path.split("/")
        if len(parts) < 5 or parts[-2] != collection:
            raise bad(f"Invalid value for field '{field}': '{value}'. The URL is malformed.")
        if must_exist and path not in self.res:
            raise ApiError(404, "notFound", f"The resource '{path}' was not found")
        return path

    def subnet_ranges(self, network_path: str):
        for path, res in self.res.items():
            if "/subnetworks/" in path and res["network"] == WWW + network_path:
                yield path, ipaddress.ip_network(res["ipCidrRange"])

    def used_ips(self, subnet_path: str) -> dict:
        """IP -> user path, for instances, reserved addresses and forwarding rules in a subnet."""
        used = {}
        for path, res in self.res.items():
            if "/instances/" in path:
                for nic in res.get("networkInterfaces", []):
                    if nic.get("subnetwork") == WWW + subnet_path:
                        used[nic["networkIP"]] = path
            elif "/forwardingRules/" in path and res.get("subnetwork") == WWW + subnet_path:
                used.setdefault(res["IPAddress"], path)
        return used

    def reserved_address(self, subnet_path: str, ip: str):
        for path, res in self.res.items():
            if "/addresses/" in path and res.get("subnetwork") == WWW + subnet_path and res["address"] == ip:
                return path, res
        return None, None

    def allocate_ip(self, subnet_path: str, wanted, field: str, user_path: str) -> str:
        net = ipaddress.ip_network(self.res[subnet_path]["ipCidrRange"])
        hosts = list(net.hosts())
        usable = hosts[1:-1]  # GCE keeps the gateway (first host) and the second-to-last address
        used = self.used_ips(subnet_path)
        reserved = {r["address"]: p for p, r in self.res.items()
                    if "/addresses/" in p and r.get("subnetwork") == WWW + subnet_path}
        if wanted:
            try:
                ip = ipaddress.ip_address(wanted)
            except ValueError:
                raise bad(f"Invalid value for field '{field}': '{wanted}'") from None
            if ip not in usable:
                raise bad(f"Invalid value for field '{field}': '{wanted}'. Requested internal IP is "
                          f"outside the subnetwork CIDR range or reserved.", "invalid")
            if str(ip) in used and used[str(ip)] != user_path:
                raise bad(f"IP '{ip}' is already being used by another resource.", "ipInUseByAnotherResource")
            return str(ip)
        for ip in usable:
            if str(ip) not in used and str(ip) not in reserved:
                return str(ip)
        raise bad("No available IP addresses in the subnetwork", "ipSpaceExhausted")

    def mark_address_users(self) -> None:
        for path, res in self.res.items():
            if "/addresses/" not in path:
                continue
            subnet = res["subnetwork"][len(WWW):]
            user = self.used_ips(subnet).get(res["address"])
            res["users"] = [WWW + user] if user else []
            res["status"] = "IN_USE" if user else "RESERVED"

    # ---------------------------------------------------------------- dispatch
    def compute(self, method: str, path: str, query: dict, body):
        m = re.match(r"^/compute/v1/projects/([^/]+)/(.*)$", path)
        if not m:
            raise ApiError(404, "notFound", "Not Found")
        project, rest = m.groups()
        if project != self.project:
            raise ApiError(404, "notFound", f"The resource 'projects/{project}' was not found")
        if rest == "aggregated/instances" and method == "GET":
            return self.aggregated_instances(query)
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
            op = self.ops.get(f"{scope}/operations/{name}")
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
                return self.list(base, coll, query)
            if method == "POST":
                if not isinstance(body, dict):
                    raise bad("Invalid JSON payload received.", "parseError")
                return self.insert(handler, scope, base, coll, body)
            raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
        item = f"{base}/{name}"
        if verb:
            fn = getattr(handler, "verb_" + verb, None)
            if fn is None or method not in ("POST", "GET"):
                raise ApiError(404, "notFound", f"The resource '{item}/{verb}' was not found")
            if item not in self.res:
                raise ApiError(404, "notFound", f"The resource '{item}' was not found")
            return fn(self, scope, item, query, body or {})
        if item not in self.res:
            raise ApiError(404, "notFound", f"The resource '{item}' was not found")
        if method == "GET":
            return copy.deepcopy(self.res[item])
        if method == "DELETE":
            return self.delete(handler, scope, item)
        if method in ("PATCH", "PUT"):
            if not hasattr(handler, "update"):
                raise bad(f"The resource '{item}' cannot be updated", "unsupportedOperation")
            if not isinstance(body, dict):
                raise bad("Invalid JSON payload received.", "parseError")
            current = self.res[item]
            if body.get("fingerprint") and current.get("fingerprint") and body["fingerprint"] != current["fingerprint"]:
                raise ApiError(412, "conditionNotMet",
                               "Supplied fingerprint does not match current metadata fingerprint.")
            new = handler.update(self, scope, item, copy.deepcopy(current), body, method)

            def apply():
                if item not in self.res:
                    raise ApiError(404, "notFound", f"The resource '{item}' was not found")
                new["fingerprint"] = fingerprint({k: v for k, v in new.items() if k != "fingerprint"})
                self.res[item] = new
                after = getattr(handler, "after_update", None)
                if after:
                    after(self, scope, item, current, new)
            return self.op(scope, "patch" if method == "PATCH" else "update", item, apply)
        raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")

    def insert(self, handler, scope, base, coll, body):
        check_name(body.get("name"))
        item = f"{base}/{body['name']}"
        if item in self.res or item in self.pending:
            raise ApiError(409, "alreadyExists", f"The resource '{item}' already exists")
        res = handler.insert(self, scope, item, copy.deepcopy(body))
        res.update({"name": body["name"], "id": self.new_id(), "creationTimestamp": now_iso(),
                    "selfLink": WWW + item})
        res.setdefault("kind", handler.kind)
        if scope.startswith("zones/"):
            res["zone"] = WWW + f"projects/{self.project}/{scope}"
        elif scope.startswith("regions/"):
            res["region"] = WWW + f"projects/{self.project}/{scope}"
        self.pending.add(item)

        def apply():
            handler.before_create(self, scope, item, res) if hasattr(handler, "before_create") else None
            res["fingerprint"] = fingerprint(res)
            self.res[item] = res
            if hasattr(handler, "after_create"):
                handler.after_create(self, scope, item, res)
            self.mark_address_users()
        return self.op(scope, "insert", item, apply)

    def delete(self, handler, scope, item):
        # Deleting an instance detaches its disks (Instance.after_delete clears their users), as on GCE.
        users = [p for p, r in self.res.items() if p != item and '"%s"' % (WWW + item) in json.dumps(r)
                 and not ("/addresses/" in p) and not ("/disks/" in p and "/instances/" in item)]
        if users:
            raise bad(f"The resource '{item}' is already being used by '{users[0]}'", "resourceInUseByAnotherResource")

        def apply():
            self.res.pop(item, None)
            if hasattr(handler, "after_delete"):
                handler.after_delete(self, scope, item)
            self.mark_address_users()
        return self.op(scope, "delete", item, apply)

    # ------------------------------------------------------------ list/filter
    @staticmethod
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

    @staticmethod
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

    def list(self, base, coll, query):
        terms = self.parse_filter(query.get("filter", [""])[0])
        prefix = base + "/"
        items = [copy.deepcopy(r) for p, r in sorted(self.res.items())
                 if p.startswith(prefix) and "/" not in p[len(prefix):] and self.matches(r, terms)]
        out = {"kind": COLLECTIONS[coll].kind + "List", "id": base, "selfLink": WWW + base}
        if items:
            out["items"] = items
        return out

    def aggregated_instances(self, query):
        terms = self.parse_filter(query.get("filter", [""])[0])
        items: dict = {}
        for path, res in sorted(self.res.items()):
            if "/instances/" in path and self.matches(res, terms):
                zone = path.split("/")[3]
                items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(copy.deepcopy(res))
        return {"kind": "compute#instanceAggregatedList", "items": items,
                "selfLink": WWW + f"projects/{self.project}/aggregated/instances"}


# ============================================================== resource kinds
class Network:
    kind = "compute#network"

    @staticmethod
    def insert(cloud, scope, item, body):
        if scope != "global":
            raise ApiError(404, "notFound", "Not Found")
        if body.get("autoCreateSubnetworks") is None:
            raise bad("Required field 'resource.autoCreateSubnetworks' not specified (the double does "
                      "not model legacy networks)", "required")
        mode = (body.get("routingConfig") or {}).get("routingMode", "REGIONAL")
        if mode not in ("REGIONAL", "GLOBAL"):
            raise bad(f"Invalid value for field 'resource.routingConfig.routingMode': '{mode}'")
        mtu = body.get("mtu", 1460)
        if not 1300 <= int(mtu) <= 8896:
            raise bad(f"Invalid value for field 'resource.mtu': '{mtu}'")
        return {"kind": Network.kind, "description": body.get("description", ""),
                "autoCreateSubnetworks": bool(body["autoCreateSubnetworks"]),
                "routingConfig": {"routingMode": mode}, "mtu": int(mtu), "subnetworks": []}

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        if "routingConfig" in body:
            current["routingConfig"] = body["routingConfig"]
        return current


class Subnetwork:
    kind = "compute#subnetwork"

    @staticmethod
    def insert(cloud, scope, item, body):
        need(body, "network", "ipCidrRange")
        if not scope.startswith("regions/"):
            raise ApiError(404, "notFound", "Not Found")
        network = cloud.ref(body["network"], "networks", "resource.network")
        if cloud.res[network]["autoCreateSubnetworks"]:
            raise bad("Subnetworks cannot be created in an auto mode network", "invalid")
        cidr = check_cidr(body["ipCidrRange"], "resource.ipCidrRange")
        if not cidr.is_private or cidr.prefixlen > 29 or cidr.prefixlen < 8:
            raise bad(f"Invalid IPCidrRange: {cidr}: a subnetwork range must be private, /8 to /29.")
        for other, rng in cloud.subnet_ranges(network):
            if rng.overlaps(cidr):
                raise bad(f"Invalid IPCidrRange: {cidr} conflicts with existing subnetwork '{other.split('/')[-1]}' "
                          f"in region '{other.split('/')[3]}'.", "invalid")
        region = body.get("region")
        if region and region.rstrip("/").split("/")[-1] != scope.split("/")[1]:
            raise bad(f"Invalid value for field 'resource.region': '{region}'")
        return {"kind": Subnetwork.kind, "network": WWW + network, "ipCidrRange": str(cidr),
                "gatewayAddress": str(next(cidr.hosts())), "description": body.get("description", ""),
                "privateIpGoogleAccess": bool(body.get("privateIpGoogleAccess", False)),
                "secondaryIpRanges": body.get("secondaryIpRanges", []), "stackType": "IPV4_ONLY"}

    @staticmethod
    def after_create(cloud, scope, item, res):
        net = cloud.res[res["network"][len(WWW):]]
        net.setdefault("subnetworks", []).append(WWW + item)

    @staticmethod
    def verb_setPrivateIpGoogleAccess(cloud, scope, item, query, body):
        value = body.get("privateIpGoogleAccess")
        if not isinstance(value, bool):
            raise bad("Required field 'privateIpGoogleAccess' not specified", "required")

        def apply():
            cloud.res[item]["privateIpGoogleAccess"] = value
        return cloud.op(scope, "setPrivateIpGoogleAccess", item, apply)


class Router:
    kind = "compute#router"

    @staticmethod
    def check_nats(cloud, scope, nats):
        names = set()
        for i, nat in enumerate(nats or []):
            need(nat, "name", "sourceSubnetworkIpRangesToNat", "natIpAllocateOption")
            check_name(nat["name"])
            if nat["name"] in names:
                raise bad(f"Duplicate NAT name '{nat['name']}'")
            names.add(nat["name"])
            if nat["natIpAllocateOption"] not in ("AUTO_ONLY", "MANUAL_ONLY"):
                raise bad(f"Invalid value for field 'resource.nats[{i}].natIpAllocateOption'")
            mode = nat["sourceSubnetworkIpRangesToNat"]
            if mode not in ("ALL_SUBNETWORKS_ALL_IP_RANGES", "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES",
                            "LIST_OF_SUBNETWORKS"):
                raise bad(f"Invalid value for field 'resource.nats[{i}].sourceSubnetworkIpRangesToNat'")
            if mode == "LIST_OF_SUBNETWORKS":
                if not nat.get("subnetworks"):
                    raise bad(f"Required field 'resource.nats[{i}].subnetworks' not specified", "required")
                for sub in nat["subnetworks"]:
                    need(sub, "name")
                    path = cloud.ref(sub["name"], "subnetworks", f"resource.nats[{i}].subnetworks.name")
                    sub["name"] = WWW + path
                    sub.setdefault("sourceIpRangesToNat", ["ALL_IP_RANGES"])
            nat.setdefault("enableEndpointIndependentMapping", False)
            nat.setdefault("logConfig", {"enable": False, "filter": "ALL"})
        return nats

    @staticmethod
    def insert(cloud, scope, item, body):
        need(body, "network")
        network = cloud.ref(body["network"], "networks", "resource.network")
        out = {"kind": Router.kind, "network": WWW + network, "description": body.get("description", "")}
        if body.get("bgp"):
            out["bgp"] = body["bgp"]
        if body.get("nats"):
            out["nats"] = Router.check_nats(cloud, scope, body["nats"])
        return out

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        if "nats" in body:
            current["nats"] = Router.check_nats(cloud, scope, copy.deepcopy(body["nats"]))
        for key in ("bgp", "description"):
            if key in body:
                current[key] = body[key]
        if method == "PUT" and "nats" not in body:
            current.pop("nats", None)
        return current


class Firewall:
    kind = "compute#firewall"
    PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah", "sctp", "ipip", "all")

    @staticmethod
    def validate(cloud, body):
        network = cloud.ref(body.get("network") or "global/networks/default", "networks", "resource.network")
        body["network"] = WWW + network
        direction = body.setdefault("direction", "INGRESS")
        if direction not in ("INGRESS", "EGRESS"):
            raise bad(f"Invalid value for field 'resource.direction': '{direction}'")
        prio = int(body.setdefault("priority", 1000))
        if not 0 <= prio <= 65535:
            raise bad(f"Invalid value for field 'resource.priority': '{prio}'")
        if bool(body.get("allowed")) == bool(body.get("denied")):
            raise bad("Exactly one of 'resource.allowed' or 'resource.denied' must be specified", "required")
        for key in ("allowed", "denied"):
            for i, rule in enumerate(body.get(key) or []):
                proto = str(rule.get("IPProtocol", "")).lower()
                if proto not in Firewall.PROTOCOLS and not proto.isdigit():
                    raise bad(f"Invalid value for field 'resource.{key}[{i}].IPProtocol': '{proto}'")
                for port in rule.get("ports") or []:
                    if proto not in ("tcp", "udp", "sctp"):
                        raise bad(f"Invalid value for field 'resource.{key}[{i}].ports': ports need tcp/udp/sctp")
                    if not re.match(r"^\d{1,5}(-\d{1,5})?$", str(port)) or \
                            not all(0 < int(p) <= 65535 for p in str(port).split("-")):
                        raise bad(f"Invalid value for field 'resource.{key}[{i}].ports': '{port}'")
        for i, rng in enumerate(body.get("sourceRanges") or []):
            try:
                ipaddress.ip_network(rng, strict=False)
            except ValueError:
                raise bad(f"Invalid value for field 'resource.sourceRanges[{i}]': '{rng}'. "
                          "Must be a CIDR address range that is contained in 0.0.0.0/0.") from None
        if direction == "INGRESS" and body.get("destinationRanges"):
            raise bad("'resource.destinationRanges' is only valid for EGRESS rules")
        if body.get("sourceTags") and body.get("sourceServiceAccounts"):
            raise bad("sourceTags and sourceServiceAccounts cannot be used together")
        if body.get("targetTags") and body.get("targetServiceAccounts"):
            raise bad("targetTags and targetServiceAccounts cannot be used together")
        for key in ("sourceServiceAccounts", "targetServiceAccounts"):
            for email in body.get(key) or []:
                if not re.match(r"^[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com$", email):
                    raise bad(f"Invalid value for field 'resource.{key}': '{email}'")
        if direction == "INGRESS" and not (body.get("sourceRanges") or body.get("sourceTags")
                                           or body.get("sourceServiceAccounts")):
            body["sourceRanges"] = ["0.0.0.0/0"]
        body.setdefault("disabled", False)
        body.setdefault("logConfig", {"enable": False})
        return body

    @staticmethod
    def insert(cloud, scope, item, body):
        if scope != "global":
            raise ApiError(404, "notFound", "Not Found")
        body = Firewall.validate(cloud, body)
        body["kind"] = Firewall.kind
        body.pop("fingerprint", None)
        return body

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        merged = dict(body) if method == "PUT" else {**current, **body}
        merged["name"] = current["name"]
        merged = Firewall.validate(cloud, merged)
        for key in ("id", "creationTimestamp", "selfLink", "kind"):
            merged[key] = current[key]
        return merged


def check_template_props(cloud, props, field, region=None):
    need(props, "machineType", "disks", "networkInterfaces")
    if "/" in props["machineType"] or not MACHINE_TYPE_RE.match(props["machineType"]):
        raise bad(f"Invalid value for field '{field}.machineType': '{props['machineType']}'. "
                  "Instance templates take a machine type name.")
    boots = [d for d in props["disks"] if d.get("boot")]
    if len(boots) != 1:
        raise bad(f"Invalid value for field '{field}.disks': exactly one boot disk is required")
    for i, disk in enumerate(props["disks"]):
        init = disk.get("initializeParams") or {}
        if disk.get("boot"):
            image = init.get("sourceImage", "")
            if image not in PUBLIC_IMAGES and f"projects/{cloud.project}/global/images/" not in image:
                raise bad(f"Invalid value for field '{field}.disks[{i}].initializeParams.sourceImage': '{image}'. "
                          "The referenced image resource cannot be found.", "notFound")
        if init.get("diskType") and init["diskType"] not in DISK_TYPES:
            raise bad(f"Invalid value for field '{field}.disks[{i}].initializeParams.diskType': '{init['diskType']}'")
    for i, nic in enumerate(props["networkInterfaces"]):
        if not nic.get("subnetwork") and not nic.get("network"):
            raise bad(f"Required field '{field}.networkInterfaces[{i}].network' not specified", "required")
        if nic.get("subnetwork"):
            sub = cloud.ref(nic["subnetwork"], "subnetworks", f"{field}.networkInterfaces[{i}].subnetwork")
            nic["subnetwork"] = WWW + sub
            nic["network"] = cloud.res[sub]["network"]
        else:
            nic["network"] = WWW + cloud.ref(nic["network"], "networks", f"{field}.networkInterfaces[{i}].network")
    for i, sa in enumerate(props.get("serviceAccounts") or []):
        if sa.get("email") not in cloud.sas and sa.get("email") != "default":
            raise bad(f"Invalid value for field '{field}.serviceAccounts[{i}].email': '{sa.get('email')}'. "
                      "The service account was not found.", "invalid")
    check_labels(props.get("labels"), f"{field}.labels")
    for item in (props.get("metadata") or {}).get("items") or []:
        if not item.get("key"):
            raise bad(f"Required field '{field}.metadata.items.key' not specified", "required")
    shielded = props.get("shieldedInstanceConfig")
    if shielded:
        for key in shielded:
            if key not in ("enableSecureBoot", "enableVtpm", "enableIntegrityMonitoring"):
                raise bad(f"Invalid field '{field}.shieldedInstanceConfig.{key}'")


class InstanceTemplate:
    kind = "compute#instanceTemplate"

    @staticmethod
    def insert(cloud, scope, item, body):
        if scope != "global":
            raise ApiError(404, "notFound", "Not Found")
        need(body, "properties")
        check_template_props(cloud, body["properties"], "resource.properties")
        return {"kind": InstanceTemplate.kind, "description": body.get("description", ""),
                "properties": body["properties"]}


class HealthCheck:
    kind = "compute#healthCheck"
    SUB = {"HTTP": "httpHealthCheck", "HTTPS": "httpsHealthCheck", "TCP": "tcpHealthCheck",
           "SSL": "sslHealthCheck", "HTTP2": "http2HealthCheck", "GRPC": "grpcHealthCheck"}

    @staticmethod
    def validate(body):
        need(body, "type")
        sub = HealthCheck.SUB.get(body["type"])
        if sub is None:
            raise bad(f"Invalid value for field 'resource.type': '{body['type']}'")
        for other in HealthCheck.SUB.values():
            if other != sub and body.get(other):
                raise bad(f"Invalid value for field 'resource.{other}': does not match type {body['type']}")
        spec = body.setdefault(sub, {})
        spec.setdefault("portSpecification", "USE_FIXED_PORT")
        if spec["portSpecification"] == "USE_FIXED_PORT":
            spec.setdefault("port", 80)
            if not 1 <= int(spec["port"]) <= 65535:
                raise bad(f"Invalid value for field 'resource.{sub}.port': '{spec['port']}'")
        if "requestPath" in spec and not str(spec["requestPath"]).startswith("/"):
            raise bad(f"Invalid value for field 'resource.{sub}.requestPath': '{spec['requestPath']}'")
        if body["type"] in ("HTTP", "HTTPS", "HTTP2"):
            spec.setdefault("requestPath", "/")
            spec.setdefault("proxyHeader", "NONE")
        for key, default in (("checkIntervalSec", 5), ("timeoutSec", 5), ("healthyThreshold", 2), ("unhealthyThreshold", 2)):
            body[key] = int(body.get(key, default))
        if not 1 <= body["checkIntervalSec"] <= 300:
            raise bad(f"Invalid value for field 'resource.checkIntervalSec': '{body['checkIntervalSec']}'")
        if body["timeoutSec"] > body["checkIntervalSec"]:
            raise bad("timeoutSec should be less than or equal to checkIntervalSec", "invalid")
        for key in ("healthyThreshold", "unhealthyThreshold"):
            if not 1 <= body[key] <= 10:
                raise bad(f"Invalid value for field 'resource.{key}': '{body[key]}'")
        return body

    @staticmethod
    def insert(cloud, scope, item, body):
        body = HealthCheck.validate(body)
        body["kind"] = HealthCheck.kind
        body.pop("region", None)
        return body

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        merged = dict(body) if method == "PUT" else {**current, **body}
        merged.pop("region", None)
        merged = HealthCheck.validate(merged)
        for key in ("id", "creationTimestamp", "selfLink", "kind", "name", "region"):
            merged[key] = current[key]
        return merged


class InstanceGroupManager:
    kind = "compute#instanceGroupManager"
    WRITABLE = ("baseInstanceName", "description", "instanceTemplate", "namedPorts", "targetPools",
                "targetSize", "autoHealingPolicies", "updatePolicy")

    @staticmethod
    def default_policy(nzones):
        return {"type": "PROACTIVE", "instanceRedistributionType": "PROACTIVE", "minimalAction": "REPLACE",
                "maxSurge": {"fixed": nzones, "calculated": nzones},
                "maxUnavailable": {"fixed": nzones, "calculated": nzones}, "replacementMethod": "SUBSTITUTE"}

    @staticmethod
    def validate(cloud, scope, body, nzones):
        need(body, "baseInstanceName", "instanceTemplate")
        if "targetSize" not in body:
            raise bad("Required field 'resource.targetSize' not specified", "required")
        if not re.match(r"^[a-z][-a-z0-9]{0,57}$", body["baseInstanceName"]):
            raise bad(f"Invalid value for field 'resource.baseInstanceName': '{body['baseInstanceName']}'")
        body["instanceTemplate"] = WWW + cloud.ref(body["instanceTemplate"], "instanceTemplates",
                                                   "resource.instanceTemplate")
        size = int(body["targetSize"])
        if not 0 <= size <= 2000:
            raise bad(f"Invalid value for field 'resource.targetSize': '{size}'")
        body["targetSize"] = size
        for i, pol in enumerate(body.get("autoHealingPolicies") or []):
            need(pol, "healthCheck")
            hc = pol["healthCheck"]
            collection = "healthChecks"
            pol["healthCheck"] = WWW + cloud.ref(hc, collection, f"resource.autoHealingPolicies[{i}].healthCheck")
            delay = int(pol.get("initialDelaySec", 300))
            if not 0 <= delay <= 3600:
                raise bad(f"Invalid value for field 'resource.autoHealingPolicies[{i}].initialDelaySec': '{delay}'")
            pol["initialDelaySec"] = delay
        if len(body.get("autoHealingPolicies") or []) > 1:
            raise bad("Only one autohealing policy is supported")
        for i, port in enumerate(body.get("namedPorts") or []):
            need(port, "name", "port")
        pol = body.get("updatePolicy")
        if pol is None:
            body["updatePolicy"] = InstanceGroupManager.default_policy(nzones)
        else:
            full = InstanceGroupManager.default_policy(nzones)
            full.update(pol)
            if full["type"] not in ("PROACTIVE", "OPPORTUNISTIC"):
                raise bad(f"Invalid value for field 'resource.updatePolicy.type': '{full['type']}'")
            if full["minimalAction"] not in ("NONE", "REFRESH", "RESTART", "REPLACE"):
                raise bad(f"Invalid value for field 'resource.updatePolicy.minimalAction': '{full['minimalAction']}'")
            surge = int(full["maxSurge"].get("fixed", 0))
            unavail = int(full["maxUnavailable"].get("fixed", 0))
            for key, val in (("maxSurge", surge), ("maxUnavailable", unavail)):
                if val and val < nzones:
                    raise bad(f"Invalid value for field 'resource.updatePolicy.{key}.fixed': '{val}'. Fixed "
                              f"{key} for a regional managed instance group must be 0 or at least equal to "
                              f"the number of zones ({nzones}).", "invalid")
                full[key] = {"fixed": val, "calculated": val}
            if surge == 0 and unavail == 0:
                raise bad("Fixed maxSurge and maxUnavailable cannot both be 0.", "invalid")
            if full["type"] == "PROACTIVE" and full.get("replacementMethod") == "RECREATE" and surge:
                raise bad("maxSurge must be 0 when replacementMethod is RECREATE")
            body["updatePolicy"] = full
        return body

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("regions/"):
            raise ApiError(404, "notFound", "Not Found")
        region = scope.split("/")[1]
        zones = cloud.zones_of(region)
        if body.get("distributionPolicy", {}).get("zones"):
            zones = [z["zone"].split("/")[-1] for z in body["distributionPolicy"]["zones"]]
        body = InstanceGroupManager.validate(cloud, scope, body, len(zones))
        out = {k: body[k] for k in InstanceGroupManager.WRITABLE if k in body}
        out.update({
            "kind": InstanceGroupManager.kind,
            "distributionPolicy": {"zones": [{"zone": WWW + f"projects/{cloud.project}/zones/{z}"} for z in zones],
                                   "targetShape": "EVEN"},
            "instanceGroup": WWW + item.replace("/instanceGroupManagers/", "/instanceGroups/"),
            "status": {"isStable": False}, "currentActions": {"none": 0, "creating": body["targetSize"]},
            "_stable_at": time.time() + cloud.op_delay + cloud.stable_delay,
        })
        return out

    @staticmethod
    def after_create(cloud, scope, item, res):
        group = item.replace("/instanceGroupManagers/", "/instanceGroups/")
        cloud.res[group] = {"kind": "compute#instanceGroup", "name": res["name"], "id": cloud.new_id(),
                            "selfLink": WWW + group, "region": res["region"], "size": 0,
                            "creationTimestamp": now_iso()}
        InstanceGroupManager.reconcile(cloud, item, res, replace_all=False)

    @staticmethod
    def members(cloud, item):
        return sorted(p for p, r in cloud.res.items() if "/instances/" in p and r.get("_managedBy") == item)

    @staticmethod
    def reconcile(cloud, item, mig, replace_all):
        """Create/delete managed instances to match the template and the target size."""
        template = cloud.res[mig["instanceTemplate"][len(WWW):]]["properties"]
        zones = [z["zone"].split("/")[-1] for z in mig["distributionPolicy"]["zones"]]
        members = InstanceGroupManager.members(cloud, item)
        stale = [p for p in members if replace_all and cloud.res[p]["_template"] != mig["instanceTemplate"]]
        for path in stale:
            del cloud.res[path]
        members = [p for p in members if p not in stale]
        while len(members) > mig["targetSize"]:
            del cloud.res[members.pop()]
        idx = len(members)
        while len(members) < mig["targetSize"]:
            zone = zones[idx % len(zones)]
            idx += 1
            name = "%s-%s" % (mig["baseInstanceName"], hashlib.sha1(
                f"{item}{next(cloud.suffix)}".encode()).hexdigest()[:4])
            path = f"projects/{cloud.project}/zones/{zone}/instances/{name}"
            nics = []
            for n, nic in enumerate(template["networkInterfaces"]):
                sub = nic["subnetwork"][len(WWW):]
                nics.append({**copy.deepcopy(nic), "name": f"nic{n}",
                             "networkIP": cloud.allocate_ip(sub, None, "networkIP", path)})
                cloud.res[path] = {"networkInterfaces": nics}  # reserve the address while allocating
            machine = WWW + f"projects/{cloud.project}/zones/{zone}/machineTypes/{template['machineType']}"
            cloud.res[path] = {
                "kind": "compute#instance", "name": name, "id": cloud.new_id(), "zone": WWW + f"projects/{cloud.project}/zones/{zone}",
                "selfLink": WWW + path, "machineType": machine, "status": "RUNNING",
                "creationTimestamp": now_iso(), "labels": dict(template.get("labels") or {}),
                "networkInterfaces": nics, "metadata": copy.deepcopy(template.get("metadata") or {}),
                "serviceAccounts": copy.deepcopy(template.get("serviceAccounts") or []),
                "shieldedInstanceConfig": copy.deepcopy(template.get("shieldedInstanceConfig") or {}),
                "tags": copy.deepcopy(template.get("tags") or {}),
                "disks": [{"boot": True, "deviceName": "persistent-disk-0", "index": 0, "type": "PERSISTENT",
                           "mode": "READ_WRITE", "autoDelete": True,
                           "source": WWW + f"projects/{cloud.project}/zones/{zone}/disks/{name}"}],
                "_managedBy": item, "_template": mig["instanceTemplate"],
            }
            members.append(path)
        group = item.replace("/instanceGroupManagers/", "/instanceGroups/")
        if group in cloud.res:
            cloud.res[group]["size"] = len(members)

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        nzones = len(current["distributionPolicy"]["zones"])
        if method == "PUT":
            merged = {k: body[k] for k in InstanceGroupManager.WRITABLE if k in body}
        else:
            merged = {k: current[k] for k in InstanceGroupManager.WRITABLE if k in current}
            merged.update({k: body[k] for k in InstanceGroupManager.WRITABLE if k in body})
            if "updatePolicy" in body:
                merged["updatePolicy"] = {**current.get("updatePolicy", {}), **body["updatePolicy"]}
        for key in ("name", "distributionPolicy", "region"):
            if key in body and body[key] != current[key] and key != "region":
                raise bad(f"Field 'resource.{key}' cannot be changed", "invalid")
        merged = InstanceGroupManager.validate(cloud, scope, merged, nzones)
        out = {k: v for k, v in current.items() if k not in InstanceGroupManager.WRITABLE}
        out.update(merged)
        return out

    @staticmethod
    def after_update(cloud, scope, item, old, new):
        roll = new["instanceTemplate"] != old["instanceTemplate"] and new["updatePolicy"]["type"] == "PROACTIVE"
        new["status"] = {"isStable": False}
        new["_stable_at"] = time.time() + cloud.stable_delay
        InstanceGroupManager.reconcile(cloud, item, new, replace_all=roll)

    @staticmethod
    def verb_resize(cloud, scope, item, query, body):
        size = query.get("size", [None])[0]
        if size is None or not size.isdigit():
            raise bad("Required field 'size' not specified", "required")

        def apply():
            mig = cloud.res[item]
            mig["targetSize"] = int(size)
            InstanceGroupManager.after_update(cloud, scope, item, mig, mig)
        return cloud.op(scope, "compute.regionInstanceGroupManagers.resize", item, apply)

    @staticmethod
    def verb_listManagedInstances(cloud, scope, item, query, body):
        return {"managedInstances": [
            {"instance": WWW + p, "instanceStatus": cloud.res[p]["status"], "currentAction": "NONE",
             "version": {"instanceTemplate": cloud.res[p]["_template"]}}
            for p in InstanceGroupManager.members(cloud, item)]}


class BackendService:
    kind = "compute#backendService"

    @staticmethod
    def validate(cloud, scope, body):
        scheme = body.setdefault("loadBalancingScheme", "INTERNAL")
        if scheme not in ("INTERNAL", "INTERNAL_MANAGED", "EXTERNAL", "EXTERNAL_MANAGED"):
            raise bad(f"Invalid value for field 'resource.loadBalancingScheme': '{scheme}'")
        if scheme != "INTERNAL":
            raise bad("The double implements only INTERNAL (passthrough) regional backend services",
                      "unsupported")
        protocol = body.setdefault("protocol", "TCP")
        if protocol not in ("TCP", "UDP", "UNSPECIFIED"):
            raise bad(f"Invalid value for field 'resource.protocol': '{protocol}'. "
                      "Internal passthrough load balancers take TCP, UDP or UNSPECIFIED.")
        hcs = body.get("healthChecks") or []
        if len(hcs) != 1:
            raise bad("Exactly one health check is required for an INTERNAL backend service", "required")
        body["healthChecks"] = [WWW + cloud.ref(hcs[0], "healthChecks", "resource.healthChecks[0]")]
        seen = set()
        for i, backend in enumerate(body.get("backends") or []):
            need(backend, "group")
            group = cloud.ref(backend["group"], "instanceGroups", f"resource.backends[{i}].group")
            if group in seen:
                raise bad(f"Duplicate backend group '{group}'", "invalid")
            seen.add(group)
            backend["group"] = WWW + group
            mode = backend.setdefault("balancingMode", "CONNECTION")
            if mode != "CONNECTION":
                raise bad(f"Invalid value for field 'resource.backends[{i}].balancingMode': '{mode}'. "
                          "Internal passthrough backends take CONNECTION.")
            backend.setdefault("failover", False)
        failover = body.get("failoverPolicy")
        if failover is not None:
            for key in failover:
                if key not in ("disableConnectionDrainOnFailover", "dropTrafficIfUnhealthy", "failoverRatio"):
                    raise bad(f"Invalid field 'resource.failoverPolicy.{key}'")
            ratio = float(failover.get("failoverRatio", 0))
            if not 0 <= ratio <= 1:
                raise bad(f"Invalid value for field 'resource.failoverPolicy.failoverRatio': '{ratio}'")
        body.setdefault("connectionDraining", {"drainingTimeoutSec": 0})
        body.setdefault("sessionAffinity", "NONE")
        body.setdefault("timeoutSec", 30)
        for key in ("portName", "enableCDN", "cdnPolicy", "circuitBreakers", "consistentHash", "outlierDetection"):
            if body.get(key):
                raise bad(f"Field 'resource.{key}' is not valid for INTERNAL backend services", "invalid")
        return body

    @staticmethod
    def insert(cloud, scope, item, body):
        body = BackendService.validate(cloud, scope, body)
        body["kind"] = BackendService.kind
        return body

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        merged = dict(body) if method == "PUT" else {**current, **body}
        merged = BackendService.validate(cloud, scope, merged)
        for key in ("id", "creationTimestamp", "selfLink", "kind", "name", "region"):
            merged[key] = current[key]
        return merged

    @staticmethod
    def verb_getHealth(cloud, scope, item, query, body):
        """Health as Patroni's REST API would answer the backend service's health check."""
        group = cloud.ref(body.get("group", ""), "instanceGroups", "group")
        bs = cloud.res[item]
        if WWW + group not in [b["group"] for b in bs.get("backends", [])]:
            raise bad(f"Instance group '{group}' is not a backend of '{item}'", "invalid")
        hc = cloud.res[bs["healthChecks"][0][len(WWW):]]
        path = (hc.get("httpHealthCheck") or {}).get("requestPath", "/")
        members = cloud.res[group].get("_instances", [])
        out = []
        for inst in members:
            res = cloud.res.get(inst[len(WWW):])
            if res is None:
                continue
            state = "HEALTHY" if cloud.patroni_answers(res, path) == 200 else "UNHEALTHY"
            out.append({"instance": inst, "ipAddress": res["networkInterfaces"][0]["networkIP"],
                        "port": (hc.get("httpHealthCheck") or {}).get("port"), "healthState": state})
        return {"kind": "compute#backendServiceGroupHealth", "healthStatus": out}


class ForwardingRule:
    kind = "compute#forwardingRule"

    @staticmethod
    def insert(cloud, scope, item, body):
        scheme = body.get("loadBalancingScheme", "EXTERNAL")
        if scheme != "INTERNAL":
            raise bad("The double implements only INTERNAL forwarding rules", "unsupported")
        need(body, "backendService")
        body["backendService"] = WWW + cloud.ref(body["backendService"], "backendServices", "resource.backendService")
        if body.get("target"):
            raise bad("'resource.target' and 'resource.backendService' are mutually exclusive")
        ports = body.get("ports") or []
        if bool(ports) == bool(body.get("allPorts")):
            raise bad("Exactly one of 'resource.ports' or 'resource.allPorts' must be specified for INTERNAL", "required")
        if len(ports) > 5:
            raise bad("An INTERNAL forwarding rule takes at most 5 ports")
        for port in ports:
            if not str(port).isdigit() or not 1 <= int(port) <= 65535:
                raise bad(f"Invalid value for field 'resource.ports': '{port}'")
        body["ports"] = [str(p) for p in ports]
        if body.get("portRange"):
            raise bad("'resource.portRange' is not valid for INTERNAL forwarding rules")
        need(body, "subnetwork")
        sub = cloud.ref(body["subnetwork"], "subnetworks", "resource.subnetwork")
        body["subnetwork"] = WWW + sub
        net = cloud.res[sub]["network"]
        if body.get("network") and WWW + cloud.ref(body["network"], "networks", "resource.network") != net:
            raise bad("'resource.network' does not match the subnetwork's network")
        body["network"] = net
        proto = body.setdefault("IPProtocol", "TCP")
        if proto not in ("TCP", "UDP", "L3_DEFAULT"):
            raise bad(f"Invalid value for field 'resource.IPProtocol': '{proto}'")
        wanted = body.get("IPAddress")
        if wanted and not re.match(r"^\d+\.\d+\.\d+\.\d+$", wanted):
            wanted = cloud.res[cloud.ref(wanted, "addresses", "resource.IPAddress")]["address"]
        if wanted:
            addr_path, addr = cloud.reserved_address(sub, wanted)
            if addr and addr.get("users"):
                raise bad(f"IP '{wanted}' is already being used by another resource.", "ipInUseByAnotherResource")
        body["IPAddress"] = cloud.allocate_ip(sub, wanted, "resource.IPAddress", item)
        body.setdefault("allowGlobalAccess", False)
        body.setdefault("networkTier", "PREMIUM")
        body["kind"] = ForwardingRule.kind
        return body

    @staticmethod
    def verb_setTarget(cloud, scope, item, query, body):
        raise bad("setTarget is not valid for INTERNAL forwarding rules with a backend service")


class Address:
    kind = "compute#address"

    @staticmethod
    def insert(cloud, scope, item, body):
        atype = body.get("addressType", "EXTERNAL")
        if atype != "INTERNAL":
            raise bad("The double implements only INTERNAL addresses (nothing here gets a public address)",
                      "unsupported")
        need(body, "subnetwork")
        sub = cloud.ref(body["subnetwork"], "subnetworks", "resource.subnetwork")
        purpose = body.setdefault("purpose", "GCE_ENDPOINT")
        if purpose not in ("GCE_ENDPOINT", "SHARED_LOADBALANCER_VIP", "DNS_RESOLVER"):
            raise bad(f"Invalid value for field 'resource.purpose': '{purpose}'")
        wanted = body.get("address")
        if wanted:
            _, other = cloud.reserved_address(sub, wanted)
            if other:
                raise bad(f"IP '{wanted}' is already reserved by another address.", "ipInUseByAnotherResource")
        ip = cloud.allocate_ip(sub, wanted, "resource.address", item)
        return {"kind": Address.kind, "address": ip, "addressType": "INTERNAL", "purpose": purpose,
                "subnetwork": WWW + sub, "network": cloud.res[sub]["network"], "status": "RESERVED",
                "description": body.get("description", ""), "users": []}


class Disk:
    kind = "compute#disk"

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("zones/"):
            raise ApiError(404, "notFound", "Not Found")
        zone = scope.split("/")[1]
        dtype = body.get("type") or f"projects/{cloud.project}/zones/{zone}/diskTypes/pd-standard"
        m = re.match(r"^(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?(?:projects/[^/]+/)?zones/([^/]+)/diskTypes/([^/]+)$", dtype)
        if not m or m.group(2) not in DISK_TYPES:
            raise bad(f"Invalid value for field 'resource.type': '{dtype}'. Unknown disk type.")
        if m.group(1) != zone:
            raise bad(f"Invalid value for field 'resource.type': '{dtype}'. Disk type zone does not match the disk zone.")
        if body.get("sizeGb") is None and not body.get("sourceImage") and not body.get("sourceSnapshot"):
            raise bad("Required field 'resource.sizeGb' not specified", "required")
        size = int(body.get("sizeGb") or 10)
        if not 10 <= size <= 65536:
            raise bad(f"Invalid value for field 'resource.sizeGb': '{size}'. Disk size must be between 10 GB and 64 TB.")
        check_labels(body.get("labels"))
        key = body.get("diskEncryptionKey") or {}
        if key.get("kmsKeyName") and not KMS_RE.match(key["kmsKeyName"].split("/cryptoKeyVersions/")[0]):
            raise bad(f"Invalid value for field 'resource.diskEncryptionKey.kmsKeyName': '{key['kmsKeyName']}'")
        out = {"kind": Disk.kind, "sizeGb": str(size), "status": "READY", "users": [],
               "type": WWW + f"projects/{cloud.project}/zones/{zone}/diskTypes/{m.group(2)}",
               "labels": body.get("labels") or {}, "description": body.get("description", ""),
               "physicalBlockSizeBytes": "4096"}
        out["labelFingerprint"] = fingerprint(out["labels"])
        if key.get("kmsKeyName"):
            out["diskEncryptionKey"] = {"kmsKeyName": key["kmsKeyName"] + "/cryptoKeyVersions/1"}
        return out

    @staticmethod
    def verb_resize(cloud, scope, item, query, body):
        size = int(body.get("sizeGb") or 0)
        if size <= int(cloud.res[item]["sizeGb"]):
            raise bad(f"Invalid value for field 'sizeGb': '{size}'. New size must be larger than the existing size.")

        def apply():
            cloud.res[item]["sizeGb"] = str(size)
        return cloud.op(scope, "resizeDisk", item, apply)

    @staticmethod
    def verb_setLabels(cloud, scope, item, query, body):
        return set_labels(cloud, scope, item, body)


def set_labels(cloud, scope, item, body):
    res = cloud.res[item]
    if body.get("labelFingerprint") != res.get("labelFingerprint"):
        raise ApiError(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
    check_labels(body.get("labels"))

    def apply():
        res["labels"] = body.get("labels") or {}
        res["labelFingerprint"] = fingerprint(res["labels"])
    return cloud.op(scope, "setLabels", item, apply)


class Instance:
    kind = "compute#instance"

    @staticmethod
    def machine_type(cloud, zone, value, field):
        m = re.match(r"^(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?(?:projects/[^/]+/)?zones/([^/]+)/machineTypes/([^/]+)$", value or "")
        if not m or not MACHINE_TYPE_RE.match(m.group(2)):
            raise bad(f"Invalid value for field '{field}': '{value}'. Machine type with name "
                      f"'{(value or '').split('/')[-1]}' does not exist in zone '{zone}'.")
        if m.group(1) != zone:
            raise bad(f"Invalid value for field '{field}': '{value}'. Machine type zone does not match instance zone.")
        return WWW + f"projects/{cloud.project}/zones/{zone}/machineTypes/{m.group(2)}"

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("zones/"):
            raise ApiError(404, "notFound", "Not Found")
        zone = scope.split("/")[1]
        region = zone.rsplit("-", 1)[0]
        need(body, "machineType", "disks", "networkInterfaces")
        body["machineType"] = Instance.machine_type(cloud, zone, body["machineType"], "resource.machineType")
        props = copy.deepcopy(body)
        props["machineType"] = body["machineType"].split("/")[-1]
        for d in props["disks"]:
            init = d.get("initializeParams") or {}
            if init.get("diskType"):
                init["diskType"] = init["diskType"].split("/")[-1]
        check_template_props(cloud, props, "resource")
        disks = []
        for i, disk in enumerate(body["disks"]):
            if disk.get("boot"):
                init = disk.get("initializeParams") or {}
                disk_name = init.get("diskName") or body["name"]
                source = f"projects/{cloud.project}/zones/{zone}/disks/{disk_name}"
                disks.append({"boot": True, "autoDelete": disk.get("autoDelete", True), "source": WWW + source,
                              "deviceName": disk.get("deviceName", "persistent-disk-0"), "index": i,
                              "type": "PERSISTENT", "mode": "READ_WRITE", "interface": "SCSI",
                              "diskSizeGb": str(init.get("diskSizeGb", 10)), "_init": init})
                continue
            if not disk.get("source"):
                raise bad(f"Required field 'resource.disks[{i}].source' not specified (the double does not "
                          "create non-boot disks inline)", "required")
            source = cloud.ref(disk["source"], "disks", f"resource.disks[{i}].source")
            if source.split("/")[3] != zone:
                raise bad(f"Invalid value for field 'resource.disks[{i}].source': disk is in another zone")
            if cloud.res[source]["users"]:
                raise bad(f"The disk resource '{source}' is already being used by "
                          f"'{cloud.res[source]['users'][0][len(WWW):]}'", "resourceInUseByAnotherResource")
            disks.append({"boot": False, "autoDelete": bool(disk.get("autoDelete", False)), "source": WWW + source,
                          "deviceName": disk.get("deviceName", f"persistent-disk-{i}"), "index": i,
                          "type": "PERSISTENT", "mode": disk.get("mode", "READ_WRITE"), "interface": "SCSI"})
        names = [d["deviceName"] for d in disks]
        if len(set(names)) != len(names):
            raise bad("Invalid value for field 'resource.disks': duplicate deviceName")
        nics = []
        for i, nic in enumerate(body["networkInterfaces"]):
            sub = cloud.ref(nic.get("subnetwork", ""), "subnetworks", f"resource.networkInterfaces[{i}].subnetwork")
            if sub.split("/")[3] != region:
                raise bad(f"Invalid value for field 'resource.networkInterfaces[{i}].subnetwork': subnetwork is "
                          f"not in region '{region}'")
            ip = cloud.allocate_ip(sub, nic.get("networkIP"), f"resource.networkInterfaces[{i}].networkIP", item)
            out = {"name": f"nic{i}", "subnetwork": WWW + sub, "network": cloud.res[sub]["network"],
                   "networkIP": ip, "stackType": "IPV4_ONLY"}
            if nic.get("accessConfigs"):
                out["accessConfigs"] = [{**ac, "natIP": "203.0.113.%d" % (10 + i)} for ac in nic["accessConfigs"]]
            nics.append(out)
        metadata = body.get("metadata") or {}
        metadata["fingerprint"] = fingerprint(metadata.get("items", []))
        labels = body.get("labels") or {}
        return {
            "kind": Instance.kind, "machineType": body["machineType"], "status": "RUNNING",
            "cpuPlatform": "Intel Broadwell", "disks": disks, "networkInterfaces": nics,
            "labels": labels, "labelFingerprint": fingerprint(labels), "metadata": metadata,
            "serviceAccounts": body.get("serviceAccounts") or [],
            "scheduling": {"automaticRestart": True, "onHostMaintenance": "MIGRATE", "preemptible": False,
                           **(body.get("scheduling") or {})},
            "shieldedInstanceConfig": body.get("shieldedInstanceConfig") or
            {"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True},
            "deletionProtection": bool(body.get("deletionProtection", False)),
            "canIpForward": bool(body.get("canIpForward", False)),
            "tags": {**(body.get("tags") or {}), "fingerprint": fingerprint((body.get("tags") or {}).get("items", []))},
            "_running_since": None,
        }

    @staticmethod
    def before_create(cloud, scope, item, res):
        for disk in res["disks"]:
            src = disk["source"][len(WWW):]
            if disk["boot"]:
                init = disk.pop("_init")
                cloud.res[src] = {"kind": Disk.kind, "name": src.split("/")[-1], "id": cloud.new_id(),
                                  "sizeGb": disk.pop("diskSizeGb"), "status": "READY", "users": [],
                                  "selfLink": WWW + src, "zone": res["zone"], "labels": {},
                                  "sourceImage": init.get("sourceImage"),
                                  "type": WWW + f"projects/{cloud.project}/zones/{src.split('/')[3]}/diskTypes/"
                                  + (init.get("diskType") or "pd-balanced").split("/")[-1]}
            elif cloud.res.get(src, {}).get("users"):
                raise bad(f"The disk resource '{src}' is already being used by another instance",
                          "resourceInUseByAnotherResource")
            cloud.res[src]["users"] = [WWW + item]
        res["_running_since"] = time.time()

    @staticmethod
    def after_delete(cloud, scope, item):
        for path, res in list(cloud.res.items()):
            if "/disks/" in path and WWW + item in res.get("users", []):
                res["users"] = []

    @staticmethod
    def power(cloud, scope, item, verb, want_from, target):
        res = cloud.res[item]

        def apply():
            if res["status"] in want_from:
                res["status"] = target
                res["_running_since"] = time.time() if target == "RUNNING" else None
        return cloud.op(scope, verb, item, apply)

    @staticmethod
    def verb_stop(cloud, scope, item, query, body):
        return Instance.power(cloud, scope, item, "stop", ("RUNNING", "STAGING", "PROVISIONING"), "TERMINATED")

    @staticmethod
    def verb_start(cloud, scope, item, query, body):
        return Instance.power(cloud, scope, item, "start", ("TERMINATED",), "RUNNING")

    @staticmethod
    def verb_setMachineType(cloud, scope, item, query, body):
        zone = scope.split("/")[1]
        need(body, "machineType")
        machine = Instance.machine_type(cloud, zone, body["machineType"], "machineType")
        if cloud.res[item]["status"] != "TERMINATED":
            raise bad(f"The resource '{item}' is not ready: Instance must be stopped to change the machine type.",
                      "resourceNotReady")

        def apply():
            if cloud.res[item]["status"] != "TERMINATED":
                raise bad("Instance must be stopped to change the machine type.", "resourceNotReady")
            cloud.res[item]["machineType"] = machine
        return cloud.op(scope, "setMachineType", item, apply)

    @staticmethod
    def verb_setLabels(cloud, scope, item, query, body):
        return set_labels(cloud, scope, item, body)

    @staticmethod
    def verb_setDeletionProtection(cloud, scope, item, query, body):
        value = query.get("deletionProtection", ["true"])[0].lower()
        if value not in ("true", "false"):
            raise bad(f"Invalid value for field 'deletionProtection': '{value}'")

        def apply():
            cloud.res[item]["deletionProtection"] = value == "true"
        return cloud.op(scope, "setDeletionProtection", item, apply)

    @staticmethod
    def verb_attachDisk(cloud, scope, item, query, body):
        need(body, "source")
        src = cloud.ref(body["source"], "disks", "source")
        if cloud.res[src]["users"]:
            raise bad(f"The disk resource '{src}' is already being used", "resourceInUseByAnotherResource")

        def apply():
            res = cloud.res[item]
            res["disks"].append({"boot": False, "autoDelete": False, "source": WWW + src,
                                 "deviceName": body.get("deviceName", src.split("/")[-1]),
                                 "index": len(res["disks"]), "type": "PERSISTENT", "mode": "READ_WRITE",
                                 "interface": "SCSI"})
            cloud.res[src]["users"] = [WWW + item]
        return cloud.op(scope, "attachDisk", item, apply)


class InstanceGroup:
    kind = "compute#instanceGroup"

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("zones/"):
            raise ApiError(404, "notFound", "Not Found")
        out = {"kind": InstanceGroup.kind, "description": body.get("description", ""),
               "namedPorts": body.get("namedPorts") or [], "size": 0, "_instances": []}
        if body.get("network"):
            out["network"] = WWW + cloud.ref(body["network"], "networks", "resource.network")
        if body.get("subnetwork"):
            out["subnetwork"] = WWW + cloud.ref(body["subnetwork"], "subnetworks", "resource.subnetwork")
        return out

    @staticmethod
    def verb_listInstances(cloud, scope, item, query, body):
        state = body.get("instanceState", "ALL")
        if state not in ("ALL", "RUNNING"):
            raise bad(f"Invalid value for field 'instanceState': '{state}'")
        items = []
        for inst in cloud.res[item]["_instances"]:
            res = cloud.res.get(inst[len(WWW):])
            if res and (state == "ALL" or res["status"] == "RUNNING"):
                items.append({"instance": inst, "status": res["status"]})
        out = {"kind": "compute#instanceGroupsListInstances", "id": item}
        if items:
            out["items"] = items
        return out

    @staticmethod
    def change(cloud, scope, item, body, add):
        zone = scope.split("/")[1]
        wanted = []
        for i, ref in enumerate(body.get("instances") or []):
            need(ref, "instance")
            path = cloud.ref(ref["instance"], "instances", f"instances[{i}].instance")
            if path.split("/")[3] != zone:
                raise bad(f"Instance '{path}' is not in zone '{zone}'", "invalid")
            net = cloud.res[path]["networkInterfaces"][0]["network"]
            group_net = cloud.res[item].get("network")
            if group_net and group_net != net:
                raise bad(f"Instance '{path}' is in another network than the instance group", "invalid")
            for other, res in cloud.res.items():
                if add and other != item and "/instanceGroups/" in other and WWW + path in res.get("_instances", []) \
                        and other.startswith(f"projects/{cloud.project}/zones/"):
                    raise bad(f"Instance '{path}' is already a member of '{other}'", "memberAlreadyExists")
            wanted.append(WWW + path)

        def apply():
            group = cloud.res[item]
            if add:
                group["_instances"] = sorted(set(group["_instances"]) | set(wanted))
            else:
                group["_instances"] = [x for x in group["_instances"] if x not in wanted]
            group["size"] = len(group["_instances"])
        return cloud.op(scope, "addInstances" if add else "removeInstances", item, apply)

    @staticmethod
    def verb_addInstances(cloud, scope, item, query, body):
        return InstanceGroup.change(cloud, scope, item, body, True)

    @staticmethod
    def verb_removeInstances(cloud, scope, item, query, body):
        return InstanceGroup.change(cloud, scope, item, body, False)


COLLECTIONS = {
    "networks": Network, "subnetworks": Subnetwork, "routers": Router, "firewalls": Firewall,
    "instanceTemplates": InstanceTemplate, "healthChecks": HealthCheck,
    "instanceGroupManagers": InstanceGroupManager, "backendServices": BackendService,
    "forwardingRules": ForwardingRule, "addresses": Address, "disks": Disk, "instances": Instance,
    "instanceGroups": InstanceGroup,
}


# ============================================================ other services
def patroni_answers(self, inst: dict, path: str) -> int:
    """A stand-in for Patroni's REST API on a database VM: the first RUNNING member by name leads."""
    if inst.get("status") != "RUNNING" or inst.get("_running_since") is None:
        return 503
    if time.time() - inst["_running_since"] < self.health_delay:
        return 503
    if path in ("/health", "/liveness", "/readiness"):
        return 200
    role = inst.get("labels", {}).get("vpcstack-role")
    running = sorted(p for p, r in self.res.items() if "/instances/" in p and r.get("status") == "RUNNING"
                     and r.get("labels", {}).get("vpcstack-role") == role)
    leader = running[0] if running else None
    is_leader = leader is not None and inst["selfLink"].endswith(leader)
    if path in ("/primary", "/leader", "/master"):
        return 200 if is_leader else 503
    if path == "/replica":
        return 503 if is_leader else 200
    return 404


Cloud.patroni_answers = patroni_answers


def iam_api(cloud: Cloud, method, path, query, body):
    m = re.match(r"^/v1/projects/([^/]+)/serviceAccounts(?:/([^/:]+))?$", path)
    if not m:
        raise ApiError(404, "notFound", "Not Found")
    project, sa = m.groups()
    if project != cloud.project:
        raise ApiError(403, "forbidden", f"Permission 'iam.serviceAccounts.list' denied on resource 'projects/{project}'")
    if sa is None and method == "POST":
        account = (body or {}).get("accountId")
        if not account or not SA_ID_RE.match(account):
            raise ApiError(400, "invalid", f"Invalid value for field 'accountId': '{account}'. accountId must be "
                           "between 6 and 30 characters and match [a-z]([-a-z0-9]*[a-z0-9]).")
        email = f"{account}@{project}.iam.gserviceaccount.com"
        if email in cloud.sas:
            raise ApiError(409, "alreadyExists", f"Service account {account} already exists within project "
                           f"projects/{project}.")
        cloud.sas[email] = {
            "name": f"projects/{project}/serviceAccounts/{email}", "projectId": project,
            "uniqueId": cloud.new_id()[:21], "email": email, "etag": "MDEwMjE5MjA=",
            "displayName": ((body or {}).get("serviceAccount") or {}).get("displayName", ""),
            "oauth2ClientId": cloud.new_id()[:21]}
        return cloud.sas[email]
    if sa is None and method == "GET":
        return {"accounts": list(cloud.sas.values())} if cloud.sas else {}
    found = cloud.sas.get(sa) or next((s for s in cloud.sas.values() if s["uniqueId"] == sa), None)
    if found is None:
        raise ApiError(404, "notFound", f"Unknown service account")
    if method == "GET":
        return found
    if method in ("PUT", "PATCH"):
        found["displayName"] = ((body or {}).get("serviceAccount") or body or {}).get("displayName", found["displayName"])
        return found
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")


ROLE_RE = re.compile(r"^roles/[A-Za-z0-9_.]+$")


def check_policy(cloud: Cloud, key: str, policy: dict, bucket: bool) -> dict:
    current = cloud.policies.setdefault(key, {"version": 1, "etag": "BwXhqDF/ZdM=", "bindings": []})
    if not isinstance(policy, dict):
        raise ApiError(400, "invalid", "Required field 'policy' not specified")
    if policy.get("etag") and policy["etag"] != current["etag"]:
        raise ApiError(409 if not bucket else 412, "aborted" if not bucket else "conditionNotMet",
                       "There were concurrent policy changes. Please retry the whole read-modify-write with "
                       "exponential backoff.")
    roles = set()
    for binding in policy.get("bindings") or []:
        role = binding.get("role", "")
        if not ROLE_RE.match(role):
            raise ApiError(400, "invalid", f"Role {role} is not supported for this resource.")
        if role in roles:
            raise ApiError(400, "invalid", f"Duplicate binding for role {role}.")
        roles.add(role)
        for member in binding.get("members") or []:
            kind, _, who = member.partition(":")
            if kind not in ("user", "serviceAccount", "group", "domain", "projectOwner", "projectEditor",
                            "projectViewer", "allUsers", "allAuthenticatedUsers") and member not in ("allUsers",):
                raise ApiError(400, "invalid", f"Invalid principal: {member}")
            if kind == "serviceAccount" and who.endswith(f"@{cloud.project}.iam.gserviceaccount.com") \
                    and who not in cloud.sas:
                raise ApiError(400, "invalid", f"Service account {who} does not exist.")
    new = {"version": 1, "bindings": copy.deepcopy(policy.get("bindings") or []),
           "etag": fingerprint(policy.get("bindings") or [])[:12] + "="}
    cloud.policies[key] = new
    return new


def crm_api(cloud: Cloud, method, path, query, body):
    m = re.match(r"^/v[13]/projects/([^/:]+):(getIamPolicy|setIamPolicy)$", path)
    if not m or method != "POST":
        raise ApiError(404, "notFound", "Not Found")
    project, verb = m.groups()
    if project != cloud.project:
        raise ApiError(403, "forbidden", f"The caller does not have permission")
    key = f"project:{project}"
    if verb == "getIamPolicy":
        return copy.deepcopy(cloud.policies.setdefault(key, {"version": 1, "etag": "BwXhqDF/ZdM=", "bindings": [
            {"role": "roles/owner", "members": ["user:owner@example.test"]}]}))
    return check_policy(cloud, key, (body or {}).get("policy"), bucket=False)


SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def secretmanager_api(cloud: Cloud, method, path, query, body):
    m = re.match(r"^/v1/projects/([^/]+)/secrets(?:/([^/:]+))?(?::(getIamPolicy|setIamPolicy))?$", path)
    if not m:
        raise ApiError(404, "notFound", "Not Found")
    project, secret, verb = m.groups()
    if project != cloud.project:
        raise ApiError(403, "forbidden", "Permission 'secretmanager.secrets.get' denied")
    if secret is None:
        if method != "POST":
            raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
        sid = query.get("secretId", [""])[0]
        if not SECRET_ID_RE.match(sid):
            raise ApiError(400, "invalid", f"Invalid secret ID: '{sid}'")
        if sid in cloud.secrets:
            raise ApiError(409, "alreadyExists", f"Secret [projects/{project}/secrets/{sid}] already exists.")
        repl = (body or {}).get("replication") or {}
        if not (repl.get("automatic") is not None or repl.get("userManaged")):
            raise ApiError(400, "invalid", "Secret.replication is required.")
        check_labels((body or {}).get("labels"), "labels")
        cloud.secrets[sid] = {"name": f"projects/123456789012/secrets/{sid}", "replication": repl,
                              "createTime": now_iso(), "labels": (body or {}).get("labels") or {},
                              "etag": '"1"'}
        return cloud.secrets[sid]
    if secret not in cloud.secrets:
        raise ApiError(404, "notFound", f"Secret [projects/123456789012/secrets/{secret}] not found or has no versions.")
    key = f"secret:{secret}"
    if verb == "getIamPolicy" and method == "GET":
        return copy.deepcopy(cloud.policies.setdefault(key, {"version": 1, "etag": "ACAB"}))
    if verb == "setIamPolicy" and method == "POST":
        return check_policy(cloud, key, (body or {}).get("policy"), bucket=False)
    if verb is None and method == "GET":
        return copy.deepcopy(cloud.secrets[secret])
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")


def storage_api(cloud: Cloud, method, path, query, body):
    if path == "/storage/v1/b" and method == "POST":
        project = query.get("project", [None])[0]
        if project != cloud.project:
            raise ApiError(400, "required", "Required parameter: project") if not project else \
                ApiError(403, "forbidden", "The caller does not have storage.buckets.create access to the project.")
        name = (body or {}).get("name")
        if not name or not BUCKET_RE.match(name) or "goog" in name:
            raise ApiError(400, "invalid", f"Invalid bucket name: '{name}'")
        if name in cloud.buckets:
            raise ApiError(409, "conflict", "Your previous request to create the named bucket succeeded and you "
                           "already own it.")
        bucket = bucket_resource(cloud, name, body, None)
        cloud.buckets[name] = bucket
        return bucket
    m = re.match(r"^/storage/v1/b/([^/]+)(/iam)?$", path)
    if not m:
        raise ApiError(404, "notFound", "Not Found")
    name, iam = m.groups()
    if name not in cloud.buckets:
        raise ApiError(404, "notFound", "The specified bucket does not exist.")
    if iam:
        key = f"bucket:{name}"
        if method == "GET":
            pol = copy.deepcopy(cloud.policies.setdefault(key, {"version": 1, "etag": "CAE=", "bindings": [
                {"role": "roles/storage.legacyBucketOwner", "members": [f"projectOwner:{cloud.project}"]}]}))
            pol["kind"] = "storage#policy"
            pol["resourceId"] = f"projects/_/buckets/{name}"
            return pol
        if method == "PUT":
            if cloud.buckets[name]["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is not True:
                pass
            pol = check_policy(cloud, key, body, bucket=True)
            return {**pol, "kind": "storage#policy", "resourceId": f"projects/_/buckets/{name}"}
        raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
    if method == "GET":
        return copy.deepcopy(cloud.buckets[name])
    if method == "PUT":
        if (body or {}).get("name", name) != name:
            raise ApiError(400, "invalid", "Bucket name cannot be changed")
        if (body or {}).get("location") and body["location"].upper() != cloud.buckets[name]["location"]:
            raise ApiError(400, "invalid", "The bucket location cannot be changed")
        cloud.buckets[name] = bucket_resource(cloud, name, body or {}, cloud.buckets[name])
        return copy.deepcopy(cloud.buckets[name])
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")


def bucket_resource(cloud, name, body, old):
    location = (body.get("location") or (old or {}).get("location") or "US").upper()
    storage_class = (body.get("storageClass") or "STANDARD").upper()
    if storage_class not in ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"):
        raise ApiError(400, "invalid", f"Invalid storage class: {storage_class}")
    check_labels(body.get("labels"), "labels")
    iam_in = body.get("iamConfiguration") or {}
    ubla = bool((iam_in.get("uniformBucketLevelAccess") or {}).get("enabled", False))
    pap = iam_in.get("publicAccessPrevention", "inherited")
    if pap not in ("inherited", "enforced"):
        raise ApiError(400, "invalid", f"Invalid publicAccessPrevention: {pap}")
    meta = int((old or {}).get("metageneration", "0")) + 1
    out = {
        "kind": "storage#bucket", "id": name, "name": name,
        "selfLink": f"https://www.googleapis.com/storage/v1/b/{name}", "projectNumber": "123456789012",
        "metageneration": str(meta), "location": location, "locationType": "region",
        "storageClass": storage_class, "etag": "CA" + str(meta) + "=",
        "timeCreated": (old or {}).get("timeCreated", now_iso()), "updated": now_iso(),
        "iamConfiguration": {"bucketPolicyOnly": {"enabled": ubla}, "uniformBucketLevelAccess": {"enabled": ubla},
                             "publicAccessPrevention": pap},
        "versioning": {"enabled": bool((body.get("versioning") or {}).get("enabled", False))},
        "labels": body.get("labels") or {},
    }
    if body.get("lifecycle"):
        out["lifecycle"] = body["lifecycle"]
    return out


# ================================================================== HTTP
class ApiHandler(BaseHTTPRequestHandler):
    """Requests inside a CONNECT tunnel (after TLS) and plain admin requests."""

    protocol_version = "HTTP/1.1"
    timeout = 30
    server_version = "gce-double/1"

    def log_message(self, fmt, *args):  # quiet; the call log is the record
        pass

    def reply(self, code: int, obj, extra_headers=None) -> None:
        data = json.dumps(obj, indent=1, default=str).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 4 * 1024 * 1024:
            raise ApiError(413, "tooLarge", "Request too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise bad("Invalid JSON payload received.", "parseError") from None

    def handle_api(self, method: str) -> None:
        cloud: Cloud = self.server.cloud
        host = (self.headers.get("Host") or "").split(":")[0]
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        style = "new" if host in ("iam.googleapis.com", "cloudresourcemanager.googleapis.com",
                                  "secretmanager.googleapis.com") else "compute"
        entry = {"t": round(time.time(), 3), "method": method, "host": host, "path": url.path,
                 "query": url.query}
        status, out = 500, None
        try:
            body = self.read_body()
            entry["body"] = body
            with cloud.lock:
                cloud.tick()
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {cloud.token}":
                    raise ApiError(401, "required", "Request is missing required authentication credential. "
                                   "Expected OAuth 2 access token, login cookie or other valid authentication "
                                   "credential.")
                if host in ("compute.googleapis.com", "www.googleapis.com") and url.path.startswith("/compute/v1/"):
                    out = cloud.compute(method, url.path, query, body)
                elif host == "iam.googleapis.com":
                    out = iam_api(cloud, method, url.path, query, body)
                elif host == "cloudresourcemanager.googleapis.com":
                    out = crm_api(cloud, method, url.path, query, body)
                elif host == "secretmanager.googleapis.com":
                    out = secretmanager_api(cloud, method, url.path, query, body)
                elif host in ("storage.googleapis.com", "www.googleapis.com") and url.path.startswith("/storage/v1/"):
                    out = storage_api(cloud, method, url.path, query, body)
                else:
                    raise ApiError(404, "notFound", "Not Found")
                status = 200
                out = strip_private(out)
        except ApiError as exc:
            status, out = exc.code, exc.body(style)
        entry["status"] = status
        with cloud.lock:
            cloud.calls.append(entry)
        self.reply(status, out)

    def do_GET(self):
        if self.path.startswith("/_double/"):
            return self.admin("GET")
        self.handle_api("GET")

    def do_POST(self):
        if self.path.startswith("/_double/"):
            return self.admin("POST")
        self.handle_api("POST")

    def do_PUT(self):
        self.handle_api("PUT")

    def do_PATCH(self):
        self.handle_api("PATCH")

    def do_DELETE(self):
        self.handle_api("DELETE")

    # -------------------------------------------------------------- admin
    def admin(self, method: str) -> None:
        if getattr(self, "in_tunnel", False):
            return self.reply(404, {"error": {"code": 404, "message": "Not Found"}})
        cloud: Cloud = self.server.cloud
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")[2:]
        with cloud.lock:
            cloud.tick()
            if parts == ["state"]:
                return self.reply(200, {"compute": strip_private(cloud.res, keep=True),
                                        "serviceAccounts": cloud.sas, "buckets": cloud.buckets,
                                        "secrets": cloud.secrets,
                                        "policies": cloud.policies,
                                        "pendingOperations": [o.name for o in cloud.ops.values() if o.status != "DONE"]})
            if parts == ["calls"]:
                return self.reply(200, cloud.calls)
            if parts == ["reset-calls"] and method == "POST":
                cloud.calls.clear()
                return self.reply(200, {})
            if parts == ["seed"] and method == "POST":
                seed(cloud, self.read_body() or {})
                return self.reply(200, {})
            if parts == ["set"] and method == "POST":
                body = self.read_body() or {}
                for key in ("op_delay", "stable_delay", "health_delay"):
                    if key in body:
                        setattr(cloud, key, float(body[key]))
                return self.reply(200, {})
            if len(parts) == 3 and parts[0] == "patroni":
                inst = next((r for p, r in cloud.res.items() if "/instances/" in p and r["name"] == parts[1]), None)
                code = 404 if inst is None else cloud.patroni_answers(inst, "/" + parts[2])
                cloud.calls.append({"t": round(time.time(), 3), "method": "GET", "host": "patroni",
                                    "path": f"/{parts[1]}/{parts[2]}", "query": "", "status": code})
                return self.reply(code, {"state": "running" if code == 200 else "unavailable"})
        self.reply(404, {"error": "unknown admin path"})


def strip_private(obj, keep=False):
    """Drop the double's bookkeeping keys (leading underscore) from answers."""
    if isinstance(obj, dict):
        return {k: strip_private(v, keep) for k, v in obj.items()
                if not k.startswith("_") or (keep and k in ("_instances", "_managedBy", "_template"))}
    if isinstance(obj, list):
        return [strip_private(v, keep) for v in obj]
    return obj


def seed(cloud: Cloud, data: dict) -> None:
    """Pre-existing customer resources: networks (custom mode) and service accounts."""
    for net in data.get("networks", []):
        path = f"projects/{cloud.project}/global/networks/{net['name']}"
        cloud.res[path] = {"kind": Network.kind, "name": net["name"], "id": cloud.new_id(),
                           "selfLink": WWW + path, "autoCreateSubnetworks": False,
                           "routingConfig": {"routingMode": "REGIONAL"}, "mtu": 1460, "subnetworks": [],
                           "creationTimestamp": now_iso()}


class ProxyHandler(ApiHandler):
    """The listening side: CONNECT to a served Google host opens a TLS tunnel to the double."""

    def do_CONNECT(self):
        cloud: Cloud = self.server.cloud
        host, _, port = self.path.partition(":")
        with cloud.lock:
            cloud.calls.append({"t": round(time.time(), 3), "method": "CONNECT", "host": host, "path": "",
                                "query": "", "status": 200 if host in HOSTS and port == "443" else 403})
        if host not in HOSTS or port != "443":
            self.send_error(403, "The double serves only the Google API hosts it implements")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        try:
            tls = self.server.tls.wrap_socket(self.connection, server_side=True)
            tls.settimeout(30)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        inner = TunnelHandler.__new__(TunnelHandler)
        inner.in_tunnel = True
        try:
            TunnelHandler.__init__(inner, tls, self.client_address, self.server)
        except (ssl.SSLError, OSError, ConnectionError):
            pass
        self.close_connection = True


class TunnelHandler(ApiHandler):
    in_tunnel = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_certs(directory: str) -> tuple[str, str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpcstack gce double test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key"))
    with open(paths[0], "wb") as fh:
        fh.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as fh:
        fh.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", required=True, help="where the CA, the port file and the pid go")
    ap.add_argument("--project", required=True)
    ap.add_argument("--token", required=True, help="the only bearer token accepted")
    ap.add_argument("--op-delay", type=float, default=0.3, help="seconds until an operation is DONE")
    ap.add_argument("--stable-delay", type=float, default=1.0, help="seconds until a changed MIG is stable")
    ap.add_argument("--health-delay", type=float, default=1.0,
                    help="seconds a started DB VM answers 503 on the fake Patroni endpoints")
    ap.add_argument("--max-seconds", type=float, default=1800, help="the process ends by itself after this")
    args = ap.parse_args(argv)

    os.makedirs(args.state_dir, exist_ok=True)
    ca, cert, key = make_certs(args.state_dir)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(cert, key)
    server = Server(("127.0.0.1", 0), ProxyHandler)
    server.tls = tls
    server.cloud = Cloud(args.project, args.token, args.op_delay, args.stable_delay, args.health_delay)
    port = server.server_address[1]
    tmp = os.path.join(args.state_dir, "port.tmp")
    with open(tmp, "w") as fh:
        fh.write(str(port))
    os.replace(tmp, os.path.join(args.state_dir, "port"))
    timer = threading.Timer(args.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

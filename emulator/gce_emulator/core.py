"""What every API area shares: the in-memory state (Cloud), long-running operations, Google's
error shapes and the field checks every insert makes.

It knows no resource kind, so each API module builds on it alone, and later backends (stand-in
containers, a metadata server, fake-gcs-server) can change what one module does without touching
the state model.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import itertools
import json
import os
import re
import threading
import time

WWW = "https://www.googleapis.com/compute/v1/"
NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[a-z][-_a-z0-9]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[-_a-z0-9]{0,63}$")
REGION_ZONES = {
    "europe-west1": ["b", "c", "d"],
    "us-east1": ["b", "c", "d"],
    "us-east4": ["a", "b", "c"],
    "europe-west4": ["a", "b", "c"],
}
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

    def __init__(self, project, scope, op_type, target_path, apply, due, until=None):
        self.name = "operation-%d-%s" % (int(time.time() * 1000), os.urandom(6).hex())
        self.id = str(next(self.ids))
        self.project, self.scope, self.op_type = project, scope, op_type
        self.target_path, self.apply, self.due = target_path, apply, due
        # until: the operation stays RUNNING after apply until this is true (a stop is DONE once
        # the guest has shut down, not when it was asked to)
        self.until, self.applied = until, False
        self.status, self.error, self.insert_time, self.end_time = "RUNNING", None, now_iso(), None

    def body(self) -> dict:
        out = {
            "kind": "compute#operation", "id": self.id, "name": self.name,
            "operationType": self.op_type, "targetLink": WWW + self.target_path,
            "status": self.status, "user": "emulator@example.test",
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
        self.secrets: dict[str, dict] = {}   # secret id -> secret (its versions' values: secret_values)
        self.secret_values: dict[str, list[bytes]] = {}   # never shown by the admin endpoints
        self.caller: str | None = None       # the service account of the request being answered
        self.tokens = self.dataplane = self.gcs = None   # --backing docker (server.start_backing)
        self.calls: list[dict] = []
        self.ids = itertools.count(1000000000000000000)
        self.suffix = itertools.count(0)

    def new_id(self) -> str:
        return str(next(self.ids))

    def tick(self) -> None:
        now = time.time()
        for op in list(self.ops.values()):
            if op.status != "DONE" and op.due <= now:
                if not op.applied:
                    op.applied = True
                    try:
                        op.apply()
                    except ApiError as exc:
                        op.error = {"code": exc.reason.upper(), "message": exc.message}
                if op.until and not op.error and not op.until():
                    continue
                op.status, op.end_time = "DONE", now_iso()
                self.pending.discard(op.target_path)
        for res in self.res.values():
            if res.get("_stable_at") and res["_stable_at"] <= now:
                res["_stable_at"] = None
                res["status"] = {"isStable": True}
                res["currentActions"] = {"none": res.get("targetSize", 0)}

    def op(self, scope: str, op_type: str, path: str, apply, until=None) -> dict:
        op = Op(self.project, scope, op_type, path, apply, time.time() + self.op_delay, until)
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


def strip_private(obj, keep=False):
    """Drop the emulator's bookkeeping keys (leading underscore) from answers."""
    if isinstance(obj, dict):
        return {k: strip_private(v, keep) for k, v in obj.items()
                if not k.startswith("_") or (keep and k in ("_instances", "_managedBy", "_template"))}
    if isinstance(obj, list):
        return [strip_private(v, keep) for v in obj]
    return obj

"""The metadata server (metadata.google.internal, 169.254.169.254:80) of the instances.

It answers each instance about itself, found by the caller's address as GCE finds it by the VM:
instance and project attributes (the start-up script among them), identity (name, zone, id,
hostname, network interfaces, tags), the service account's email and access tokens, and the
emulator's stand-in for OS Login (one operator account and its SSH key; see guest/guest.sh).
Requests need `Metadata-Flavor: Google`, as on GCE. Tokens it hands out are accepted by the
emulated APIs as that service account's.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/computeMetadata/v1/"


class Tokens:
    """Access tokens handed to instances: token -> service account email (one per account,
    renewed before it expires, like the metadata server's cache)."""

    LIFETIME = 3600

    def __init__(self):
        self.lock = threading.Lock()
        self.by_token: dict[str, tuple[str, float]] = {}
        self.by_email: dict[str, str] = {}

    def issue(self, email: str) -> tuple[str, int]:
        with self.lock:
            token = self.by_email.get(email)
            if token and self.by_token[token][1] - time.time() > 300:
                return token, int(self.by_token[token][1] - time.time())
            token = "ya29.emu-" + secrets.token_urlsafe(24)
            self.by_token[token] = (email, time.time() + self.LIFETIME)
            self.by_email[email] = token
            return token, self.LIFETIME

    def principal(self, token: str) -> str | None:
        with self.lock:
            entry = self.by_token.get(token)
            return entry[0] if entry and entry[1] > time.time() else None


class MetadataServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cloud, tokens: Tokens, oslogin: dict | None, address=("169.254.169.254", 80)):
        self.cloud, self.tokens, self.oslogin = cloud, tokens, oslogin or {}
        super().__init__(address, MetadataHandler)

    def instance_by_ip(self, ip: str) -> tuple[str, dict] | None:
        with self.cloud.lock:
            for path, res in self.cloud.res.items():
                if "/instances/" in path and any(n.get("networkIP") == ip for n in res.get("networkInterfaces", [])):
                    return path, json.loads(json.dumps(res, default=str))
        return None

    def project_metadata(self, project: str) -> dict:
        with self.cloud.lock:
            info = self.cloud.res.get(f"projects/{project}", {})
            return json.loads(json.dumps(info.get("commonInstanceMetadata", {}), default=str))


def items(meta: dict) -> dict:
    return {i["key"]: i.get("value", "") for i in (meta or {}).get("items", [])}


class MetadataHandler(BaseHTTPRequestHandler):
    server: MetadataServer

    def log_message(self, fmt, *args):
        pass

    def answer(self, code: int, body, content_type="application/text") -> None:
        if isinstance(body, (dict, list)):
            body, content_type = json.dumps(body), "application/json"
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if self.headers.get("Metadata-Flavor") != "Google" or self.headers.get("X-Forwarded-For"):
            return self.answer(403, "Missing Metadata-Flavor:Google header.")
        if not url.path.startswith(PREFIX):
            return self.answer(404, "Not Found")
        found = self.server.instance_by_ip(self.client_address[0])
        if found is None:
            return self.answer(404, "no instance has this address")
        path, inst = found
        project = path.split("/")[1]
        zone = path.split("/")[3]
        rel = url.path[len(PREFIX):].rstrip("/")
        value = self.lookup(rel, project, zone, inst, query)
        if value is None:
            return self.answer(404, "Not Found")
        recursive = query.get("recursive", ["false"])[0] == "true" or query.get("alt", [""])[0] == "json" \
            or rel.endswith("/token")   # a token is always JSON
        if isinstance(value, dict) and not recursive:
            return self.answer(200, "".join(f"{k}{'/' if isinstance(v, dict) else ''}\n" for k, v in value.items()))
        if isinstance(value, list) and not recursive:
            return self.answer(200, "".join(f"{v}\n" for v in value))
        return self.answer(200, value)

    def lookup(self, rel: str, project: str, zone: str, inst: dict, query):
        sas = inst.get("serviceAccounts") or []
        nic = (inst.get("networkInterfaces") or [{}])[0]
        if rel == "instance/service-accounts/default/token" or \
                (rel.startswith("instance/service-accounts/") and rel.endswith("/token")):
            if not sas:
                return None
            token, expires = self.server.tokens.issue(sas[0]["email"])
            return {"access_token": token, "expires_in": expires, "token_type": "Bearer"}
        tree = {
            "project": {"project-id": project, "numeric-project-id": "1000000000",
                        "attributes": items(self.server.project_metadata(project))},
            "instance": {
                "name": inst.get("name"), "id": str(inst.get("id")), "hostname": f"{inst.get('name')}.{zone}.c.{project}.internal",
                "zone": f"projects/1000000000/zones/{zone}",
                "machine-type": f"projects/1000000000/machineTypes/{inst.get('machineType', '').rsplit('/', 1)[-1]}",
                "attributes": items(inst.get("metadata")),
                "tags": (inst.get("tags") or {}).get("items", []),
                "network-interfaces": {"0": {"ip": nic.get("networkIP"),
                                             "network": f"projects/1000000000/networks/{nic.get('network', '').rsplit('/', 1)[-1]}"}},
                "service-accounts": {"default": {"email": sas[0]["email"], "scopes": sas[0].get("scopes", [])}} if sas else {},
            },
            "oslogin": {"emulator": dict(self.server.oslogin)},
        }
        cur = tree
        for part in rel.split("/") if rel else []:
            if not isinstance(cur, dict) or part not in cur:
                return None
            cur = cur[part]
        return cur

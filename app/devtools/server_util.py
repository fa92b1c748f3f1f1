"""Run `exposure-api serve` (gunicorn) as a subprocess on a loopback port, for the slow tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pgcluster import free_port


class Server:
    def __init__(self, pg, **env: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="exposure-serve-"))
        self.drain_file = self.dir / "drain"
        self.metrics_dir = self.dir / "metrics"
        self.log_path = self.dir / "stderr.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("EXPOSURE_")}
        full.update(pg.env(EXPOSURE_BIND=f"127.0.0.1:{self.port}", EXPOSURE_WORKERS="2",
                           EXPOSURE_THREADS="2", EXPOSURE_DB_POOL_MAX="2",
                           EXPOSURE_DRAIN_FILE=str(self.drain_file),
                           EXPOSURE_METRICS_DIR=str(self.metrics_dir),
                           EXPOSURE_GRACEFUL_TIMEOUT="10",
                           # Short, so that "down for longer than the window" is quick to test.
                           EXPOSURE_DB_RETRY_WINDOW="2"))
        full.update(env)
        self._log = open(self.log_path, "w")
        exe = Path(sys.executable).with_name("exposure-api")
        self.proc = subprocess.Popen([str(exe), "serve"], env=full, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.log_path.read_text()[-2000:])
            try:
                if self.get("/livez")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not answer /livez within 30s")

    def get(self, path: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str, **kw):
        status, body = self.get(path, **kw)
        return status, json.loads(body)

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unparsed": line})
        return out

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

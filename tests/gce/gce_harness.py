"""The GCE provisioning tests' harness: the GCE emulator (emulator/gce_emulator), a playbook runner,
fixtures."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EMULATOR = ROOT / "emulator"          # PYTHONPATH of the gce_emulator package
VENV_BIN = Path(sys.executable).parent
PROJECT = "customer-x-prod"          # as in inventories/customer-x
NETWORK = "customer-x-vpc"
TOKEN = "ya29.test-token-for-the-double"
CUSTOMER_INVENTORY = ROOT / "inventories" / "customer-x"
STATIC_INVENTORY = HERE / "inventory-static"
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
RUN_TIMES: dict[str, float] = {}


class Emulator:
    """A running gce_emulator process (127.0.0.1 only) and its admin endpoints."""

    def __init__(self, workdir: Path, **opts):
        self.dir = workdir
        args = [sys.executable, "-m", "gce_emulator", "--state-dir", str(workdir),
                "--project", PROJECT, "--token", TOKEN, "--max-seconds", "1500"]
        for key, value in opts.items():
            args += ["--" + key.replace("_", "-")] + ([str(value)] if value != "" else [])
        self.log = open(workdir / "emulator.log", "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(EMULATOR)})
        deadline = time.time() + 20
        while not (workdir / "port").exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the emulator did not start: " + (workdir / "emulator.log").read_text())
            time.sleep(0.05)
        self.port = int((workdir / "port").read_text())
        self.ca = workdir / "ca.pem"

    def admin(self, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/_emulator/{path}", data=data,
                                     method="POST" if data is not None else "GET")
        with NO_PROXY.open(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def state(self):
        return self.admin("state")

    def calls(self):
        return self.admin("calls")

    def reset_calls(self):
        self.admin("reset-calls", {})

    def seed_customer_network(self):
        self.admin("seed", {"networks": [{"name": NETWORK}]})

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")}
        env.update({
            "HTTPS_PROXY": f"http://127.0.0.1:{self.port}", "https_proxy": f"http://127.0.0.1:{self.port}",
            "REQUESTS_CA_BUNDLE": str(self.ca), "GCP_ACCESS_TOKEN": TOKEN,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        })
        return env

    def stop(self, timeout: float = 10):
        """SIGTERM; with real stand-ins the emulator removes them first (give it the time)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def api_session(emulator: Emulator) -> requests.Session:
    """A session that reaches the emulated APIs as the google.cloud modules do: through the proxy,
    trusting the test CA, with the token."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": f"http://127.0.0.1:{emulator.port}"}
    session.verify = str(emulator.ca)
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    return session


def wait_op(session: requests.Session, op: dict) -> dict:
    """The operation once DONE (bounded: 50 polls)."""
    for _ in range(50):
        op = session.get(op["selfLink"].replace("www.googleapis.com", "compute.googleapis.com")).json()
        if op["status"] == "DONE":
            return op
        time.sleep(0.1)
    raise AssertionError("operation never finished")


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float):
        self.rc, self.out, self.seconds = proc.returncode, proc.stdout, seconds
        m = RECAP.search(self.out)
        self.ok, self.changed, self.unreachable, self.failed = (int(x) for x in m.groups()) if m else (None,) * 4

    def changed_tasks(self):
        """Names of the tasks that reported a change (from the default callback's output)."""
        names, current = [], None
        for line in self.out.splitlines():
            if line.startswith("TASK ["):
                current = line[6:line.rfind("]")]
            elif line.startswith("changed:") and current and (not names or names[-1] != current):
                names.append(current)
        return names


def run_playbook(double: Emulator, *args, inventory: Path = CUSTOMER_INVENTORY, extra: dict | None = None,
                 timeout: int = 600, playbook: Path = ROOT / "playbooks" / "provision_gce.yml") -> Run:
    extra_vars = {"gce_api_ca_bundle": str(double.ca)}
    extra_vars.update(extra or {})
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook),
           "-e", json.dumps(extra_vars), *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=double.env(), capture_output=True, text=True, timeout=timeout)
    run = Run(proc, time.monotonic() - start)
    run.out = proc.stdout + proc.stderr
    return run


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="vpcstack-gce-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_double(workdir: Path, name: str, **opts) -> Emulator:
    path = workdir / name
    path.mkdir()
    return Emulator(path, **opts)


@pytest.fixture(scope="session")
def provisioned(workdir):
    """An emulator with the customer's VPC, provisioned twice with inventories/customer-x."""
    double = start_double(workdir, "provisioned")
    double.seed_customer_network()
    # The DB VMs' Patroni health, asked during a resize, is the emulator's stand-in endpoint.
    extra = {"gce_db_health_check_delegate": "localhost",
             "gce_db_health_check_url": f"http://127.0.0.1:{double.port}/_emulator/patroni/"
                                        "{member}/health",
             "gce_db_health_check_ca_path": "",   # the emulator's endpoint is plain HTTP
             "gce_db_health_check_delay_s": 1}
    first = run_playbook(double, extra=extra)
    first_state = double.state()
    first_calls = len(double.calls())
    second = run_playbook(double, extra=extra) if first.rc == 0 else None
    RUN_TIMES["first provisioning run"] = first.seconds
    if second:
        RUN_TIMES["second provisioning run (changed=0)"] = second.seconds
    second_calls = double.calls()[first_calls:]
    yield {"double": double, "first": first, "second": second, "first_state": first_state, "extra": extra,
           "second_calls": second_calls}
    double.stop()


@pytest.fixture(scope="session")
def validation_double(workdir):
    double = start_double(workdir, "validation")
    double.seed_customer_network()
    yield double
    double.stop()

"""Helpers for the app tier's end-to-end test and deploy benchmark (tests/e2e).

Everything runs on this machine against one stack of the project's own containers:
`ansible-playbook` with the real local inventory layered under the stack's own name and
subnets, `docker exec` into the stack's client and load balancer containers, and a load
generator (loadgen.py) that runs inside the allowlisted client container. Every wait and every
load run is bounded in time and count.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
TOY_PATH = "/address/exposure/direct?address=1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez"
LOADGEN = Path(__file__).with_name("loadgen.py")
LOADGEN_IN_CLIENT = "/tmp/vpcstack-loadgen.py"


class StackError(Exception):
    pass


def sh(*args: str, check: bool = True, timeout: float = 120, input: str | None = None,
       env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input, env=env)
    if check and proc.returncode != 0:
        raise StackError(f"{' '.join(args[:8])} ... failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc


def default_stack(prefix: str) -> tuple[str, int]:
    """A stack name and subnet octet of this checkout: `<prefix>-<4 hex>` and 10.<100-199>.x, so
    copies of the repository (a CI workspace, another engineer's checkout) never share a stack."""
    digest = hashlib.sha1(f"{prefix}:{REPO}".encode()).hexdigest()
    return f"{prefix}-{digest[:4]}", 100 + int(digest[4:8], 16) % 100


class StackLock:
    """An exclusive lock per stack name (fails at once when another run holds it)."""

    def __init__(self, name: str):
        self.path = Path(tempfile.gettempdir()) / f"vpcstack-{name}.lock"
        self.fh = None

    def __enter__(self) -> "StackLock":
        import fcntl
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another run uses this stack ({self.path} is locked)") from None
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def source_version() -> str:
    text = (REPO / "app" / "exposure_api" / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text)[1]


# --- the stack ------------------------------------------------------------------------------
@dataclass
class PlaybookRun:
    rc: int
    seconds: float
    recap: dict[str, dict[str, int]]
    log: Path

    @property
    def changed(self) -> dict[str, int]:
        return {h: r["changed"] for h, r in self.recap.items() if r["changed"]}

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, r in self.recap.items() if r["failed"] or r["unreachable"]]


_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Stack:
    """One stack: name, subnets 10.<octet>.{1,2,3}.0/24 (app, db, clients)."""
    name: str
    octet: int
    app_instances: int = 3
    db_nodes: int = 3
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vpcstack-e2e-")))

    def __post_init__(self):
        self.inventory = self.workdir / "inventory"
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._build_inventory()
        self._runs = 0

    # The real inventory (inventories/local), every file linked, with this stack's overrides in
    # group_vars/all/90-stack.yml layered over inventories/local/group_vars/all.yml.
    def _build_inventory(self) -> None:
        local = REPO / "inventories" / "local"
        gv = self.inventory / "group_vars"
        (gv / "all").mkdir(parents=True, exist_ok=True)
        for f in local.iterdir():
            if f.name != "group_vars":
                (self.inventory / f.name).symlink_to(f)
        for f in (local / "group_vars").iterdir():
            if f.name == "all.yml":
                (gv / "all" / "10-local.yml").symlink_to(f)
            elif f.name == "all" and f.is_dir():
                for g in f.iterdir():
                    (gv / "all" / g.name).symlink_to(g)
            else:
                (gv / f.name).symlink_to(f)
        o = self.octet
        (gv / "all" / "90-stack.yml").write_text(
            "---\n# tests/e2e: this stack's name and subnets over the local inventory.\n"
            f"vpcstack_stack: {self.name}\n"
            f"app_instance_count: {self.app_instances}\n"
            f"db_node_count: {self.db_nodes}\n"
            "local_networks:\n"
            f"  app: 10.{o}.1.0/24\n  db: 10.{o}.2.0/24\n  clients: 10.{o}.3.0/24\n"
            "app_allowed_sources:\n"
            f"  - 10.{o}.3.10/32\n  - 10.{o}.1.10/32\n  - 198.51.100.0/24\n")

    # --- addresses and names ---------------------------------------------------------------
    def container(self, kind: str, n: int = 1) -> str:
        return f"{self.name}-{kind}-{n}"

    @property
    def apps(self) -> list[str]:
        return [self.container("app", n) for n in range(1, self.app_instances + 1)]

    @property
    def lb(self) -> str:
        return self.container("app-lb")

    @property
    def client_allowed(self) -> str:
        return self.container("client-allowed")

    @property
    def client_other(self) -> str:
        return self.container("client-other")

    @property
    def lb_url(self) -> str:
        return f"http://10.{self.octet}.3.6"

    def app_address(self, container: str) -> str:
        return f"10.{self.octet}.1.{10 + int(container.rsplit('-', 1)[1])}"

    @property
    def secrets(self) -> Path:
        return Path.home() / ".local/share/vpcstack" / self.name

    # --- ansible ----------------------------------------------------------------------------
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '')}", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
                   VPCSTACK_STACK=self.name, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        return env

    def playbook(self, playbook: str, *extra: str, timeout: float = 3600, tag: str = "") -> PlaybookRun:
        # Bounded, but long enough for site.yml from nothing on 2 cores shared with other stacks
        # (1149 s measured at a load average of 20-37; 1800 s left too little margin).
        self._runs += 1
        log = self.logs / f"{self._runs:02d}-{tag or Path(playbook).stem}.log"
        start = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(REPO / playbook),
                                   "-i", str(self.inventory), *extra],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=self.env(),
                                  timeout=timeout)
        seconds = time.monotonic() - start
        text = log.read_text()
        recap = {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
                 for m in _RECAP.finditer(text)}
        return PlaybookRun(proc.returncode, seconds, recap, log)

    def teardown(self) -> None:
        run = self.playbook("playbooks/teardown_local.yml", "-e", "teardown_purge_volumes=true", tag="teardown")
        if run.rc != 0:
            raise StackError(f"teardown failed, see {run.log}")
        shutil.rmtree(self.secrets, ignore_errors=True)

    def exists(self) -> bool:
        out = sh("docker", "ps", "-q", "--filter", f"label=vpcstack.stack={self.name}").stdout
        return bool(out.strip())

    # --- inside the containers ----------------------------------------------------------------
    def curl(self, client: str, url: str, *args: str, timeout: float = 3) -> tuple[int, str]:
        """(HTTP status or 0 when no answer, body) of a request from a container."""
        proc = sh("docker", "exec", client, "curl", "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}",
                  "--connect-timeout", str(timeout), "--max-time", str(timeout + 2), *args, url,
                  check=False, timeout=timeout + 30)
        body, _, code = proc.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def lb_servers(self) -> dict[str, dict]:
        """The app backend's servers as the load balancer sees them: name -> {status, scur, ...}."""
        proc = sh("docker", "exec", self.lb, "curl", "-s", "--max-time", "2",
                  "http://127.0.0.1:8404/stats;csv", timeout=15)
        rows = csv.DictReader(io.StringIO(proc.stdout.lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "app" and r["svname"] not in ("FRONTEND", "BACKEND")}

    def db_outages(self) -> tuple[int, int, bool] | None:
        """(times, seconds) the database endpoint has had no primary since it started, as its
        load balancer counts them (postgresql_rw BACKEND chkdown and downtime), and whether it has
        one now; None when the database load balancer does not answer. A difference across a
        measurement window means the data layer was unavailable during it (a failover, or
        Patroni's /primary failing on a starved machine), whatever the app tier did."""
        proc = sh("docker", "exec", self.container("db-lb"), "curl", "-s", "--max-time", "3",
                  "http://127.0.0.1:8404/stats;csv", check=False, timeout=30)
        rows = csv.DictReader(io.StringIO(proc.stdout.lstrip("# ")))
        for r in rows:
            if r.get("pxname") == "postgresql_rw" and r.get("svname") == "BACKEND":
                return int(r["chkdown"] or 0), int(r["downtime"] or 0), r["status"] == "UP"
        return None

    def lb_frontend(self) -> dict:
        """The app frontend's counters (dcon: connections denied by the allowlist)."""
        proc = sh("docker", "exec", self.lb, "curl", "-s", "--max-time", "2",
                  "http://127.0.0.1:8404/stats;csv", timeout=15)
        rows = csv.DictReader(io.StringIO(proc.stdout.lstrip("# ")))
        return next(r for r in rows if r["pxname"] == "app" and r["svname"] == "FRONTEND")

    def wait_lb(self, server: str, status: str, timeout: float = 120) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if self.lb_servers().get(server, {}).get("status") == status:
                    return time.monotonic() - start
            except StackError:
                pass
            time.sleep(0.5)
        raise StackError(f"{server} not {status} in the load balancer after {timeout} s")

    @staticmethod
    def running_version(container: str) -> str:
        """The release `current` points at on an instance."""
        return sh("docker", "exec", container, "readlink", "/opt/exposure-api/current").stdout.strip().rsplit("/", 1)[-1]

    @staticmethod
    def served_version(container: str) -> str | None:
        """The release the instance's process serves (exposure_build_info), None without answer."""
        proc = sh("docker", "exec", container, "curl", "-s", "--max-time", "3", "http://127.0.0.1:8080/metrics",
                  check=False, timeout=20)
        m = re.search(r'exposure_build_info\{version="([^"]+)"\}', proc.stdout)
        return m[1] if m else None

    # --- load -----------------------------------------------------------------------------
    def stop_under_load(self, victim: str, how: str, rate: float) -> dict:
        """`docker stop` (a VM shutting down: systemd stops the unit, which drains first) or
        `docker kill` (a crash) of one instance under load; then start it again and wait until UP.
        Adds to the load figures to_down_s (None if the LB never marked it DOWN) and late_failures
        (failures more than 1 s after it was marked DOWN). Used by the e2e test and bench-deploy."""
        with self.load(rate=rate, max_seconds=120, max_requests=int(rate * 120)) as load:
            time.sleep(5)
            poll = Poller(self, victim, timeout=60)
            poll.start()
            stopped_at = time.time()
            sh("docker", how, victim, timeout=120)
            poll.join(65)
            time.sleep(3)
            result = load.stop()
        sh("docker", "start", victim)
        self.wait_lb(victim, "UP", timeout=180)
        result["to_down_s"] = (poll.down_at - stopped_at) if poll.down_at else None
        result["late_failures"] = [t for t in result["failure_times"] if poll.down_at and t > poll.down_at + 1]
        return result

    def load(self, rate: float, max_seconds: float, max_requests: int) -> "Load":
        return Load(self, rate, max_seconds, max_requests)


class Load:
    """A constant-rate load generator in the allowlisted client container, through the load
    balancer, one new connection per request (clients of a passthrough LB), from start() until
    stop() or its own bounds (max_seconds, max_requests)."""

    def __init__(self, stack: Stack, rate: float, max_seconds: float, max_requests: int):
        self.stack = stack
        sh("docker", "cp", str(LOADGEN), f"{stack.client_allowed}:{LOADGEN_IN_CLIENT}")
        self.args = ["docker", "exec", "-i", stack.client_allowed, "python3", LOADGEN_IN_CLIENT,
                     "--url", stack.lb_url + TOY_PATH, "--rate", str(rate),
                     "--max-seconds", str(max_seconds), "--max-requests", str(max_requests)]
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Load":
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        # The generator says "started" once its first request is scheduled.
        line = self.proc.stdout.readline()
        if "started" not in line:
            raise StackError(f"load generator did not start: {line} {self.proc.stderr.read()[-500:]}")
        return self

    def stop(self) -> dict:
        assert self.proc is not None
        out, err = self.proc.communicate(input="stop\n", timeout=self.max_seconds + 60)
        if self.proc.returncode != 0:
            raise StackError(f"load generator failed ({self.proc.returncode}): {err[-800:]}")
        self.result = json.loads(out.strip().splitlines()[-1])
        return self.result

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out
                self.proc.kill()


def fmt_load(r: dict) -> str:
    return (f"requests sent {r['sent']}, failed {r['failed']}, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms, over {r['seconds']:.1f} s "
            f"({r['sent'] / max(r['seconds'], 0.001):.1f} req/s)")


# --- test releases --------------------------------------------------------------------------
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_release(base_wheelhouse: Path, version: str, out_root: Path, broken: bool = False) -> Path:
    """A wheelhouse for `version` next to `base_wheelhouse`'s: the same dependency wheels, and the
    app wheel rewritten with the new version (offline; the code is the base release's). With
    broken=True the app cannot boot (its web module raises at import): an unhealthy release."""
    base_whl = next(base_wheelhouse.glob("exposure_api-*.whl"))
    base_version = base_whl.name.split("-")[1]
    out = out_root / version
    if version == base_version or out.is_symlink():
        raise ValueError(f"make_release: {version} is the base release or a link ({out})")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in base_wheelhouse.iterdir():
        if f.name.endswith(".whl") and f != base_whl or f.name == "requirements.lock":
            shutil.copy2(f, out / f.name)
    old_info, new_info = f"exposure_api-{base_version}.dist-info/", f"exposure_api-{version}.dist-info/"
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(base_whl) as zin:
        for name in zin.namelist():
            data = zin.read(name)
            new_name = name.replace(old_info, new_info)
            if name == "exposure_api/__init__.py":
                data = data.replace(f'__version__ = "{base_version}"'.encode(), f'__version__ = "{version}"'.encode())
            elif name.endswith("METADATA"):
                data = re.sub(rb"(?m)^Version: .*$", f"Version: {version}".encode(), data)
            elif name == "exposure_api/web.py" and broken:
                data += b'\nraise RuntimeError("tests/e2e: a deliberately broken release")\n'
            if not name.endswith("RECORD"):
                files[new_name] = data
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in files.items()) + f"{new_info}RECORD,,\n"
    files[new_info + "RECORD"] = record.encode()
    whl = out / f"exposure_api-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zout:
        for n, d in files.items():
            zout.writestr(n, d)
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
            for p in sorted(out.iterdir()) if p.suffix == ".whl" or p.name == "requirements.lock"]
    (out / "SHA256SUMS").write_text("".join(sums))
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Poller(threading.Thread):
    """Polls the load balancer's view of one server until it is DOWN (bounded)."""

    def __init__(self, stack: Stack, server: str, timeout: float = 60):
        super().__init__(daemon=True)
        self.stack, self.server, self.timeout = stack, server, timeout
        self.down_at: float | None = None

    def run(self) -> None:
        end = time.time() + self.timeout
        while time.time() < end:
            try:
                if self.stack.lb_servers().get(self.server, {}).get("status", "").startswith("DOWN"):
                    self.down_at = time.time()
                    return
            except (StackError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.1)

"""Helpers to observe and disturb a local data layer (containers of one stack), shared by the
failover bench and the Molecule `patroni` scenario. Everything goes through `docker` on this
machine: REST calls from inside a database container, SQL from a client container through the
database endpoint. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

CA_IN_CLIENT = "/tmp/vpcstack-ca.crt"


class StackError(Exception):
    pass


class Secret(str):
    """A command-line argument that carries a password: its repr (what pytest prints for a
    failing frame's arguments) and error messages show it redacted."""

    def __repr__(self) -> str:
        return "'<redacted>'"


def shown(args) -> str:
    return " ".join("<redacted>" if isinstance(a, Secret) else str(a) for a in args)


def sh(*args: str, check: bool = True, timeout: float = 120, input: str | None = None,
       env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input, env=env)
    if check and proc.returncode != 0:
        raise StackError(f"{shown(args[:6])}... failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


class Stack:
    def __init__(self, name: str, client: str | None = None, secrets_dir: str | None = None):
        self.name = name
        self.secrets = Path(secrets_dir or Path.home() / ".local/share/vpcstack" / name)
        self.members = self._containers("db")
        if not self.members:
            raise StackError(f"no database containers for stack {name!r} (is it up?)")
        endpoints = self._containers("db_endpoint")
        if not endpoints:
            raise StackError(f"no database endpoint container for stack {name!r}")
        self.endpoint = endpoints[0]
        self.client = client or self._pick_client()
        self.ca = (self.secrets / "pki" / "ca.crt").read_text()
        sh("docker", "exec", "-i", self.client, "sh", "-c", f"cat > {CA_IN_CLIENT}", input=self.ca)

    # --- discovery -------------------------------------------------------------------------
    def _containers(self, group: str) -> list[str]:
        out = sh("docker", "ps", "-a", "--filter", f"label=vpcstack.stack={self.name}",
                 "--format", '{{.Names}} {{.Label "vpcstack.groups"}}').stdout
        return sorted(n for n, g in (line.split(" ", 1) for line in out.splitlines() if " " in line)
                      if group in g.split(","))

    def _pick_client(self) -> str:
        for group in ("db_clients", "app"):
            found = self._containers(group)
            if found:
                return found[0]
        raise StackError("no client container (group db_clients or app) on the app subnet")

    def password(self, user: str) -> str:
        return (self.secrets / "postgresql" / f"{user}.password").read_text().strip()

    def address(self, member: str) -> str:
        nets = json.loads(sh("docker", "inspect", member).stdout)[0]["NetworkSettings"]["Networks"]
        return nets[f"{self.name}-db"]["IPAddress"]

    def running(self, container: str) -> bool:
        return sh("docker", "inspect", "-f", "{{.State.Running}}", container).stdout.strip() == "true"

    # --- Patroni REST (from inside a running member) ------------------------------------------
    def rest(self, path: str, via: str | None = None, timeout: float = 5) -> dict | None:
        candidates = [via] if via else [m for m in self.members if self.running(m)]
        for member in candidates:
            try:
                proc = sh("docker", "exec", member, "curl", "-s", "--max-time", str(timeout),
                          "--cacert", "/etc/vpcstack/pki/ca.crt",
                          f"https://{self.address(member)}:8008{path}", check=False, timeout=timeout + 10)
            except subprocess.TimeoutExpired:   # docker exec itself stalled (a loaded host): next member
                continue
            if proc.returncode == 0 and proc.stdout.strip():
                try:
                    return json.loads(proc.stdout)
                except json.JSONDecodeError:
                    continue
        return None

    def cluster(self) -> dict:
        return self.rest("/cluster") or {"members": []}

    def leader(self) -> str | None:
        for m in self.cluster()["members"]:
            if m["role"] == "leader" and m["state"] == "running":
                return m["name"]
        return None

    def healthy(self, expect: int | None = None, allow_pending: bool = False) -> bool:
        members = self.cluster()["members"]
        expect = expect or len(self.members)
        running = [m for m in members if m["state"] == "running"]
        leaders = [m for m in running if m["role"] == "leader"]
        replicas = [m for m in running if m["role"] in ("replica", "sync_standby")]
        return (len(running) == expect and len(leaders) == 1
                and all(isinstance(m.get("lag"), int) and m["lag"] == 0 for m in replicas)
                and (allow_pending or not any(m.get("pending_restart") for m in members)))

    def wait(self, what: str, predicate, timeout: float, interval: float = 1.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")

    def wait_healthy(self, timeout: float = 180, allow_pending: bool = False):
        self.wait("a healthy cluster (all members running, replicas caught up)",
                  lambda: self.healthy(allow_pending=allow_pending), timeout)
        # A primary, not any server: a replica would answer SELECT 1 as well.
        self.wait("the endpoint's read-write port on a primary",
                  lambda: self.sql("SELECT pg_is_in_recovery()", check=False).stdout.strip() == "f", timeout)

    # --- SQL through the endpoint, from the client container ----------------------------------
    def dsn(self, user: str = "exposure_owner", host: str | None = None, port: int = 5432,
            dbname: str = "exposure", sslmode: str = "verify-full", extra: str = "") -> str:
        return (f"host={host or self.endpoint} port={port} dbname={dbname} user={user} "
                f"sslmode={sslmode} sslrootcert={CA_IN_CLIENT} connect_timeout=3 {extra}").strip()

    def sql(self, query: str, user: str = "exposure_owner", password: str | None = None,
            check: bool = True, container: str | None = None, **dsn) -> subprocess.CompletedProcess:
        pw = self.password(user) if password is None else password
        return sh("docker", "exec", "-e", Secret(f"PGPASSWORD={pw}"), container or self.client,
                  "psql", self.dsn(user=user, **dsn), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query,
                  check=check, timeout=60)

    def local_sql(self, member: str, query: str, dbname: str = "postgres") -> str:
        """As the superuser over the member's local socket (peer authentication)."""
        return sh("docker", "exec", member, "su", "postgres", "-c",
                  f"psql -XAtq -d {dbname} -c \"{query}\"").stdout.strip()

    # --- the writer ----------------------------------------------------------------------------
    def start_writer(self, table: str, duration: float, start_id: int = 1,
                     interval: float = 0.05) -> subprocess.Popen:
        here = Path(__file__).resolve().parent
        sh("docker", "exec", "-i", self.client, "sh", "-c", "cat > /tmp/failover-writer.py",
           input=(here / "writer.py").read_text())
        sh("docker", "exec", self.client, "rm", "-f", "/tmp/failover-writer.stop")
        return subprocess.Popen(
            ["docker", "exec", "-i", "-e", Secret(f"PGPASSWORD={self.password('exposure_owner')}"), self.client,
             "python3", "/tmp/failover-writer.py", "--host", self.endpoint, "--sslrootcert", CA_IN_CLIENT,
             "--table", table, "--duration", str(duration), "--start-id", str(start_id),
             "--interval", str(interval)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def stop_writer(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        sh("docker", "exec", self.client, "touch", "/tmp/failover-writer.stop", check=False)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


class Acks:
    """Collects the writer's output in a background thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.acks: list[tuple[int, float, str]] = []   # (id, time, server address)
        self.errors: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split(" ", 3)
            with self.lock:
                if parts[0] == "ack" and len(parts) == 4:
                    self.acks.append((int(parts[1]), float(parts[2]), parts[3].strip()))
                elif parts[0] == "err" and len(parts) >= 3:
                    self.errors.append((float(parts[1]), " ".join(parts[2:]).strip()))

    def first_after(self, t0: float, not_server: str | None = None) -> tuple[int, float, str] | None:
        with self.lock:
            for ack in self.acks:
                if ack[1] > t0 and ack[2] != not_server:
                    return ack
        return None

    def count(self) -> int:
        with self.lock:
            return len(self.acks)

    def ids(self) -> list[int]:
        with self.lock:
            return [a[0] for a in self.acks]

    def last_id(self) -> int:
        with self.lock:
            return max([a[0] for a in self.acks], default=0)


def env_stack() -> str:
    return os.environ.get("VPCSTACK_STACK", "vpcstack")

"""The customer path on this machine: `site.yml -i <customer inventory>` against the GCE emulator
with real stand-ins (emulator/gce_emulator, --backing docker).

The inventory is inventories/customer-x copied with another project id and nothing else changed
(a test checks the difference); credentials and endpoint come from the environment, as an
operator's would: the emulator's proxy and CA, its token, the IAP tunnel (emulator/bin/gcloud)
and the operator's OS Login key. Every wait is bounded; the stand-ins go at the end unless
CUSTOMER_KEEP=1 (then the run prints how to remove them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "gce"))
import gce_harness  # noqa: E402  (the emulator process and its admin API)

CUSTOMER = ROOT / "inventories" / "customer-x"
PROJECT = os.environ.get("CUSTOMER_PROJECT", "emulated-x")
IMAGE = os.environ.get("VPCSTACK_IMAGE", "vpcstack/debian12:latest")
OPERATOR = "vpcstack"          # the OS Login account (connection.yml's default VPCSTACK_SSH_USER)
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def customer_inventory(dest: Path, project: str) -> Path:
    """inventories/customer-x with `project` instead of customer-x-prod (project id, inventory
    plugin's projects) and nothing else."""
    shutil.copytree(CUSTOMER, dest)
    for path in (dest / "01-gcp_compute.yml", dest / "group_vars" / "all" / "main.yml"):
        text = path.read_text()
        text = re.sub(r"^(gce_project:\s*)customer-x-prod\s*$", rf"\g<1>{project}", text, flags=re.M)
        text = re.sub(r"^(\s+-\s*)customer-x-prod\s*$", rf"\g<1>{project}", text, flags=re.M)
        path.write_text(text)
    return dest


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float):
        self.rc, self.out, self.seconds = proc.returncode, proc.stdout + proc.stderr, seconds
        self.hosts = {m[0]: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m[1:])))
                      for m in RECAP.findall(proc.stdout)}

    @property
    def changed(self) -> int:
        return sum(h["changed"] for h in self.hosts.values())

    def changed_tasks(self) -> list[str]:
        names, current = [], None
        for line in self.out.splitlines():
            if line.startswith("TASK ["):
                current = line[6:line.rfind("]")]
            elif line.startswith("changed:") and current:
                names.append(f"{current}: {line[9:60]}")
        return names


class CustomerStack:
    """One emulated customer project: the emulator, the inventory, the operator's environment."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="vpcstack-customer-"))
        self.home = self.dir / "home"
        (self.home / ".ssh").mkdir(parents=True)
        self.key = self.home / ".ssh" / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", OPERATOR, "-f", str(self.key)],
                       check=True)
        state = self.dir / "emulator"
        state.mkdir()
        self.emulator = gce_harness.Emulator(
            state, project=PROJECT, backing="docker", image_map=f"family/debian-12={IMAGE}",
            oslogin_user=OPERATOR, oslogin_key_file=f"{self.key}.pub", max_seconds=7200,
            **({"keep": ""} if os.environ.get("CUSTOMER_KEEP") == "1" else {}))
        self.emulator.admin("seed", {"networks": [{"name": "customer-x-vpc"}]})
        self.inventory = customer_inventory(self.dir / "inventory", PROJECT)
        self.env = self.emulator.env()
        self.env.update({
            "PATH": f"{ROOT / 'emulator' / 'bin'}:{self.env['PATH']}",
            "GCE_EMULATOR_ADMIN": f"http://127.0.0.1:{self.emulator.port}",
            "VPCSTACK_SSH_USER": OPERATOR,
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key),
            # the operator's known hosts: new per project, like a new operator's
            "ANSIBLE_SSH_EXTRA_ARGS": f"-o UserKnownHostsFile={self.home / '.ssh' / 'known_hosts'}",
            # generated secrets (vpcstack_secrets_dir) stay with this project's run
            "HOME": str(self.home),
        })

    def playbook(self, playbook: str, *args: str, timeout: int = 3600) -> Run:
        cmd = [str(gce_harness.VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), playbook,
               "-e", json.dumps({"gce_api_ca_bundle": str(self.emulator.ca)}), *args]
        log = self.dir / f"{Path(playbook).stem}-{int(time.time())}.log"   # followable while it runs
        start = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                  timeout=timeout)
        proc.stdout, proc.stderr = log.read_text(), ""
        return Run(proc, time.monotonic() - start)

    def instance(self, name: str) -> str:
        """The container of an instance of the project."""
        return f"gce-{PROJECT}-{name}"

    def sh(self, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "exec", self.instance(name), "bash", "-c", command],
                              capture_output=True, text=True, timeout=timeout)

    def create_client(self, name: str, cidr: str | None, ip: str, subnetwork: str | None = None) -> str:
        """A client VM on its own subnetwork `cidr` of the customer's VPC (or on the existing
        `subnetwork`), through the API."""
        session = gce_harness.api_session(self.emulator)
        api = f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}"
        region, zone = "europe-west1", "europe-west1-b"
        net = f"{api}/global/networks/customer-x-vpc"
        if not subnetwork:
            subnetwork = f"{name}-subnet"
            r = session.post(f"{api}/regions/{region}/subnetworks",
                             json={"name": subnetwork, "network": net, "ipCidrRange": cidr})
            assert r.status_code in (200, 409), r.text
            time.sleep(1)
        r = session.post(f"{api}/zones/{zone}/instances", json={
            "name": name, "machineType": f"zones/{zone}/machineTypes/e2-small",
            "disks": [{"boot": True, "autoDelete": True,
                       "initializeParams": {"sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
            "networkInterfaces": [{"subnetwork": f"{api}/regions/{region}/subnetworks/{subnetwork}", "networkIP": ip}],
            "labels": {"vpcstack-test": "client"}})
        assert r.status_code in (200, 409), r.text
        deadline = time.time() + 120
        while time.time() < deadline:
            if subprocess.run(["docker", "exec", self.instance(name), "true"], capture_output=True).returncode == 0:
                return self.instance(name)
            time.sleep(2)
        raise AssertionError(f"client {name} did not start: {self.emulator.admin('dataplane')}")

    def close(self) -> None:
        self.emulator.stop(timeout=120)
        if os.environ.get("CUSTOMER_KEEP") == "1":
            print(f"\nkept: {self.dir}; remove the stand-ins with: PYTHONPATH=emulator python -m gce_emulator "
                  f"--teardown --state-dir {self.dir / 'emulator'}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

"""The emulator's data plane: real stand-ins behind the API's resources (--backing docker).

The API modules keep the resource graph in memory; this module makes it real on this machine, the
way a controller converges the world on a desired state: every second it reads the graph and
  - gives each subnetwork a Docker bridge network with its range (gateway: the range's first
    address, as on GCE);
  - gives each persistent disk a sparse file, attached to its instance as a loop block device at
    /dev/disk/by-id/google-<deviceName> (the data outlives the instance, as a disk does);
  - runs each RUNNING instance as a systemd container (the stand-in VM) at its internal IP, with
    the guest environment of guest/ (CA trust, OS Login account, start-up script);
  - enforces the VPC firewall's ingress rules on the host (iptables, against the original client
    address: Docker bridges pass the host's FORWARD chain) with the implied deny;
  - makes each internal passthrough forwarding rule's address a host address on its subnet's
    bridge and DNATs new connections to the backends its health check finds healthy (client
    address kept), with the backend service's failover policy.
Health checks, IAP and the metadata server talk from Google's own source ranges (host addresses
on lo), so the firewall rules that admit them on GCE are the ones that admit them here.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import ipaddress
import json
import logging
import socket
import ssl
import subprocess
import tarfile
import threading
import time
from pathlib import Path

LOG = logging.getLogger("gce_emulator.dataplane")
GUEST_DIR = Path(__file__).resolve().parent / "guest"

# Google's source addresses, held by the host (on lo) so that probes and tunnels come from them.
HEALTH_CHECK_SOURCE = "35.191.0.1"        # 35.191.0.0/16: health checks
IAP_SOURCE = "35.235.240.1"               # 35.235.240.0/20: IAP TCP forwarding
METADATA_ADDRESS = "169.254.169.254"      # metadata.google.internal
PRIVATE_GOOGLE_ACCESS = "199.36.153.8"    # private.googleapis.com: the APIs, from the VMs
HOST_ADDRESSES = (HEALTH_CHECK_SOURCE, IAP_SOURCE, METADATA_ADDRESS, PRIVATE_GOOGLE_ACCESS)

FILTER_CHAIN = "GCE-EMU"          # ingress firewall (from DOCKER-USER and OUTPUT)
NAT_LB_CHAIN = "GCE-EMU-LB"       # forwarding rules (from PREROUTING and OUTPUT)
NAT_KEEP_CHAIN = "GCE-EMU-KEEP"   # no masquerading inside the VPC (from POSTROUTING)
INPUT_CHAIN = "GCE-EMU-IN"        # a forwarding rule with no healthy backend drops (from INPUT)
WWW = "https://www.googleapis.com/compute/v1/"
CHAINS = (("filter", FILTER_CHAIN, ("DOCKER-USER", "OUTPUT")), ("filter", INPUT_CHAIN, ("INPUT",)),
          ("nat", NAT_LB_CHAIN, ("PREROUTING", "OUTPUT")), ("nat", NAT_KEEP_CHAIN, ("POSTROUTING",)))


def run(*args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, input=stdin, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])}...: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def short(path: str) -> str:
    return path[len(WWW):] if path.startswith(WWW) else path


def port_spec(ports: list[str]) -> list[list[str]]:
    """iptables match arguments for a firewall rule's port list (none: every port)."""
    if not ports:
        return [[]]
    return [["--dport", p.replace("-", ":")] for p in ports]


class HealthChecker:
    """Probes each (health check, instance) pair from Google's health-check source range with the
    check's own protocol, port, path, interval, timeout and thresholds, as GCE does."""

    def __init__(self):
        self.state: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()

    def wanted(self, pairs: dict[tuple[str, str], dict]) -> None:
        """pairs: (health check path, instance IP) -> health check resource."""
        with self.lock:
            for key in list(self.state):
                if key not in pairs:
                    self.state.pop(key)["stop"].set()
            for key, check in pairs.items():
                cur = self.state.get(key)
                if cur and cur["fingerprint"] == check.get("fingerprint"):
                    continue
                if cur:
                    cur["stop"].set()
                entry = {"fingerprint": check.get("fingerprint"), "stop": threading.Event(),
                         "healthy": False, "ok": 0, "fail": 0}
                self.state[key] = entry
                threading.Thread(target=self.loop, args=(key[1], check, entry), daemon=True).start()

    def healthy(self, check_path: str, ip: str) -> bool:
        with self.lock:
            entry = self.state.get((check_path, ip))
            return bool(entry and entry["healthy"])

    @staticmethod
    def probe(ip: str, check: dict) -> bool:
        kind = check.get("type", "TCP")
        sub = check.get({"HTTP": "httpHealthCheck", "HTTPS": "httpsHealthCheck", "HTTP2": "http2HealthCheck",
                         "TCP": "tcpHealthCheck", "SSL": "sslHealthCheck"}.get(kind, ""), {}) or {}
        port = int(sub.get("port", 80))
        timeout = float(check.get("timeoutSec", 5))
        try:
            if kind == "TCP":
                with socket.create_connection((ip, port), timeout, source_address=(HEALTH_CHECK_SOURCE, 0)):
                    return True
            if kind in ("HTTP", "HTTPS", "HTTP2"):
                if kind == "HTTP":
                    conn = http.client.HTTPConnection(ip, port, timeout=timeout,
                                                      source_address=(HEALTH_CHECK_SOURCE, 0))
                else:  # Google's HTTPS checks do not verify the certificate
                    ctx = ssl.create_default_context()
                    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                    conn = http.client.HTTPSConnection(ip, port, timeout=timeout, context=ctx,
                                                       source_address=(HEALTH_CHECK_SOURCE, 0))
                try:
                    conn.request("GET", sub.get("requestPath", "/"), headers={"Host": sub.get("host") or ip,
                                                                              "User-Agent": "GoogleHC/1.0"})
                    resp = conn.getresponse()
                    body = resp.read(1024)
                    want = sub.get("response")
                    return resp.status == 200 and (not want or want.encode() in body)
                finally:
                    conn.close()
            if kind == "SSL":
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                with socket.create_connection((ip, port), timeout, source_address=(HEALTH_CHECK_SOURCE, 0)) as raw:
                    with ctx.wrap_socket(raw):
                        return True
        except (OSError, http.client.HTTPException, ssl.SSLError):
            return False
        return False

    def loop(self, ip: str, check: dict, entry: dict) -> None:
        interval = float(check.get("checkIntervalSec", 5))
        up, down = int(check.get("healthyThreshold", 2)), int(check.get("unhealthyThreshold", 2))
        while not entry["stop"].is_set():
            ok = self.probe(ip, check)
            with self.lock:
                if ok:
                    entry["ok"], entry["fail"] = entry["ok"] + 1, 0
                    if entry["ok"] >= up:
                        entry["healthy"] = True
                else:
                    entry["fail"], entry["ok"] = entry["fail"] + 1, 0
                    if entry["fail"] >= down:
                        entry["healthy"] = False
            entry["stop"].wait(interval)


class Dataplane:
    """Converges Docker networks, loop disks, containers, iptables and health checks on the graph."""

    def __init__(self, cloud, state_dir: Path, image_map: dict[str, str], ca_file: Path, api_hosts: tuple,
                 disk_cap_gb: int = 10, interval: float = 1.0):
        self.cloud, self.state_dir, self.image_map, self.api_hosts = cloud, Path(state_dir), image_map, api_hosts
        self.ca_file, self.disk_cap_gb, self.interval = Path(ca_file), disk_cap_gb, interval
        self.owner = str(self.state_dir.resolve())   # labels what this emulator made (teardown)
        self.disk_dir = self.state_dir / "disks"
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        self.health = HealthChecker()
        self.applied: dict[str, str] = {}     # what -> fingerprint of the rules last applied
        self.errors: dict[str, str] = {}      # resource -> last error (served by the admin API)
        self.host_errors: dict[str, float] = {}   # instance -> time its host comes back (host_error)
        self.stopping: set[str] = set()           # instances whose guest is shutting down
        self.deleting: set[str] = set()           # deleted instances whose guest is shutting down
        self.stop_event = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.host_setup()
        threading.Thread(target=self.loop, daemon=True, name="dataplane").start()

    def loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.reconcile()
            except Exception as exc:  # keep converging; the admin API shows the last error
                LOG.exception("reconcile failed")
                self.errors["reconcile"] = str(exc)
            self.stop_event.wait(self.interval)

    def host_setup(self) -> None:
        have = run("ip", "-4", "-o", "addr", "show", "dev", "lo").stdout.decode()
        for addr in HOST_ADDRESSES:
            if f" {addr}/32 " not in have:
                run("ip", "addr", "add", f"{addr}/32", "dev", "lo")
        for table, chain, parents in CHAINS:
            if run("iptables", "-t", table, "-n", "-L", chain, check=False).returncode != 0:
                run("iptables", "-t", table, "-N", chain)
            for parent in parents:
                if run("iptables", "-t", table, "-C", parent, "-j", chain, check=False).returncode != 0:
                    run("iptables", "-t", table, "-I", parent, "1", "-j", chain)

    # ------------------------------------------------------------------ snapshot
    def snapshot(self) -> dict[str, dict[str, dict]]:
        """collection -> {path: resource}, copied under the API's lock."""
        out: dict[str, dict[str, dict]] = {}
        with self.cloud.lock:
            self.cloud.tick()   # operations complete by time, not only when the next call comes
            for path, res in self.cloud.res.items():
                parts = path.split("/")
                if len(parts) >= 2:
                    out.setdefault(parts[-2], {})[path] = json.loads(json.dumps(res, default=str))
        return out

    def reconcile(self) -> None:
        snap = self.snapshot()
        networks = self.networks(snap)
        disks = self.disks(snap)
        self.instances(snap, networks, disks)
        self.firewall(snap, networks)
        self.load_balancers(snap, networks)

    # ------------------------------------------------------------------ networks
    @staticmethod
    def bridge_name(path: str) -> str:
        return "gce" + hashlib.sha1(path.encode()).hexdigest()[:10]

    @staticmethod
    def network_name(path: str) -> str:
        parts = path.split("/")   # projects/P/regions/R/subnetworks/N
        return f"gce-{parts[1]}-{parts[-1]}"

    def networks(self, snap) -> dict[str, dict]:
        """subnetwork path -> {name, bridge, cidr, vpc}; creates the missing Docker networks."""
        existing = set(run("docker", "network", "ls", "--format", "{{.Name}}").stdout.decode().split())
        out = {}
        for path, sub in snap.get("subnetworks", {}).items():
            name, bridge = self.network_name(path), self.bridge_name(path)
            cidr = ipaddress.ip_network(sub["ipCidrRange"])
            if name not in existing:
                # Docker's own masquerading would come before ours and hide every client address
                # between subnets: NAT_KEEP_CHAIN masquerades only what leaves the VPC.
                run("docker", "network", "create", "--driver", "bridge", "--subnet", str(cidr),
                    "--gateway", str(cidr[1]), "-o", f"com.docker.network.bridge.name={bridge}",
                    "-o", "com.docker.network.bridge.enable_ip_masquerade=false",
                    "--label", "gce-emulator=1", "--label", f"gce-emulator.owner={self.owner}",
                    "--label", f"gce-emulator.subnetwork={path}", name)
            out[path] = {"name": name, "bridge": bridge, "cidr": cidr, "vpc": short(sub["network"])}
        return out

    # ------------------------------------------------------------------ disks
    def disk_file(self, path: str) -> Path:
        return self.disk_dir / (path.replace("/", "_") + ".img")

    def disks(self, snap) -> dict[str, str]:
        """persistent disk path -> loop device (created, sized, attached to a loop device)."""
        out = {}
        for path, disk in snap.get("disks", {}).items():
            # boot disks are the container's own file system; only attached data disks get a device
            if not self.attached_as_data(snap, path):
                continue
            f = self.disk_file(path)
            size = min(int(disk.get("sizeGb", 10)), self.disk_cap_gb) * 1024 ** 3
            if not f.exists():
                with open(f, "wb") as fh:
                    fh.truncate(size)
            elif f.stat().st_size < size:   # a disk resize grows the device (the guest grows the fs)
                with open(f, "r+b") as fh:
                    fh.truncate(size)
            loop = run("losetup", "-j", str(f)).stdout.decode().split(":", 1)[0]
            if not loop:
                loop = run("losetup", "--find", "--show", str(f)).stdout.decode().strip()
            else:
                run("losetup", "-c", loop, check=False)
            out[path] = loop
        return out

    @staticmethod
    def attached_as_data(snap, disk_path: str) -> bool:
        return any(short(d.get("source", "")) == disk_path and not d.get("boot")
                   for inst in snap.get("instances", {}).values() for d in inst.get("disks", []))

    # ------------------------------------------------------------------ instances
    @staticmethod
    def container_name(path: str) -> str:
        parts = path.split("/")   # projects/P/zones/Z/instances/N
        return f"gce-{parts[1]}-{parts[-1]}"

    def containers(self) -> dict[str, dict]:
        out = run("docker", "ps", "-a", "--filter", f"label=gce-emulator.owner={self.owner}",
                  "--format", '{{.Names}}\t{{.State}}\t{{.Label "gce-emulator.instance"}}\t{{.Label "gce-emulator.id"}}')
        found = {}
        for line in out.stdout.decode().splitlines():
            name, state, path, ident = (line.split("\t") + ["", "", "", ""])[:4]
            found[path] = {"name": name, "state": state, "id": ident}
        return found

    def image_for(self, inst: dict, snap) -> str:
        boot = next((d for d in inst.get("disks", []) if d.get("boot")), {})
        template = snap.get("instanceTemplates", {}).get(short(inst.get("_template", "")), {})
        template_boot = next((d for d in template.get("properties", {}).get("disks", []) if d.get("boot")), {})
        src = boot.get("initializeParams", {}).get("sourceImage") or \
            snap.get("disks", {}).get(short(boot.get("source", "")), {}).get("sourceImage", "") or \
            template_boot.get("initializeParams", {}).get("sourceImage", "")
        src = short(src)
        for key, image in self.image_map.items():
            if src.endswith(key):
                return image
        return self.image_map.get("*", "")

    def instances(self, snap, networks, disks) -> None:
        have = self.containers()
        want = snap.get("instances", {})
        for path, cur in have.items():
            inst = want.get(path)
            if inst is None and cur["state"] == "running":
                self.delete_gracefully(path, cur)
                have[path] = None
            elif path in self.deleting:
                have[path] = None                     # still shutting down
            elif inst is None or cur["id"] != inst.get("id"):
                run("docker", "rm", "-f", cur["name"], check=False)
                have[path] = None
        for path, inst in want.items():
            cur = have.get(path)
            running = inst.get("status") in ("RUNNING", "PROVISIONING", "STAGING")
            if self.host_errors.get(path, 0) > time.time():
                continue                          # its host is down: no restart before then
            self.host_errors.pop(path, None)
            try:
                if cur is None and running:
                    LOG.info("creating the stand-in of %s", path)
                    self.create_container(path, inst, snap, networks, disks)
                elif cur and running and cur["state"] != "running":
                    run("docker", "start", cur["name"])
                elif inst.get("status") == "STOPPING":
                    self.shut_down(path, cur)
                elif cur and not running and cur["state"] == "running":
                    run("docker", "stop", "-t", "90", cur["name"])
                self.errors.pop(path, None)
            except RuntimeError as exc:
                LOG.warning("%s: %s", path, exc)
                self.errors[path] = str(exc)

    def shut_down(self, path: str, cur: dict | None) -> None:
        """A STOPPING instance: the guest shuts down (systemd stops every unit in order, up to 90 s)
        in a thread of its own, so the load balancers keep following their health checks
        meanwhile; then the instance is TERMINATED (its stop operation completes)."""
        if path in self.stopping:
            return
        self.stopping.add(path)

        def shutdown():
            try:
                if cur and cur["state"] == "running":
                    run("docker", "stop", "-t", "90", cur["name"], check=False)
            finally:
                with self.cloud.lock:
                    res = self.cloud.res.get(path)
                    if res and res.get("status") == "STOPPING":
                        res["status"] = "TERMINATED"
                self.stopping.discard(path)
        threading.Thread(target=shutdown, daemon=True, name=f"stop {path}").start()

    def delete_gracefully(self, path: str, cur: dict) -> None:
        """A deleted instance (instances.delete, a MIG shrinking): its guest shuts down in order as
        it does on a stop (the app's unit drains), then the stand-in goes. The instance has
        already left its groups, so load balancers send it no new connection meanwhile."""
        if path in self.deleting:
            return
        self.deleting.add(path)

        def delete():
            try:
                run("docker", "stop", "-t", "90", cur["name"], check=False)
                run("docker", "rm", "-f", cur["name"], check=False)
            finally:
                self.deleting.discard(path)
        threading.Thread(target=delete, daemon=True, name=f"delete {path}").start()

    def host_error(self, path: str, down_seconds: float) -> bool:
        """The instance's host fails: every process stops at once (SIGKILL, no shutdown: no
        service releases anything) and the instance stays down for down_seconds, then restarts
        from its disks, as Compute Engine's automatic restart after a host error does."""
        name = self.container_name(path)
        self.host_errors[path] = time.time() + down_seconds   # before the kill: no restart in between
        return run("docker", "kill", "--signal", "KILL", name, check=False).returncode == 0

    def create_container(self, path, inst, snap, networks, disks) -> None:
        name = self.container_name(path)
        nic = inst["networkInterfaces"][0]
        net = networks.get(short(nic["subnetwork"]))
        image = self.image_for(inst, snap)
        if net is None or not image:
            raise RuntimeError(f"{path}: no network ({nic.get('subnetwork')}) or no image mapping")
        args = ["docker", "create", "--name", name, "--hostname", path.rsplit("/", 1)[1],
                "--network", net["name"], "--ip", nic["networkIP"],
                "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-timeout", "90",
                # systemd's shutdown (an ACPI power-off), not SIGTERM, which PID 1 ignores
                "--stop-signal", "SIGRTMIN+3",
                "--restart", "unless-stopped",
                "--label", f"gce-emulator.instance={path}", "--label", f"gce-emulator.id={inst.get('id')}",
                "--label", f"gce-emulator.owner={self.owner}",
                "--add-host", f"metadata.google.internal:{METADATA_ADDRESS}"]
        for host in self.api_hosts:
            args += ["--add-host", f"{host}:{PRIVATE_GOOGLE_ACCESS}"]
        for d in inst.get("disks", []):
            loop = disks.get(short(d.get("source", "")))
            if loop and not d.get("boot"):
                args += ["--device", f"{loop}:/dev/disk/by-id/google-{d.get('deviceName') or 'persistent-disk'}",
                         "--device", f"{loop}:{loop}"]
        run(*args, image, "/lib/systemd/systemd")
        run("docker", "cp", "-", f"{name}:/", stdin=self.guest_tar())
        run("docker", "start", name)

    def guest_tar(self) -> bytes:
        """The guest environment's files, as a tar for `docker cp`: the units and their enablement
        (the agent; fstab's mounts at boot), the agent script and the emulator's CA (trusted like
        a public one)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            def add(name: str, data: bytes, mode: int = 0o644):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))

            def unit(name: str, wanted_by: str):
                """The unit file, enabled as `systemctl enable` would (a symlink in <target>.wants)."""
                add(f"etc/systemd/system/{name}", (GUEST_DIR / name).read_bytes())
                link = tarfile.TarInfo(f"etc/systemd/system/{wanted_by}.wants/{name}")
                link.type, link.linkname = tarfile.SYMTYPE, f"/etc/systemd/system/{name}"
                tar.addfile(link)
            unit("gce-guest.service", "multi-user.target")
            unit("gce-fstab.service", "local-fs.target")
            add("usr/lib/gce-emulator/guest.sh", (GUEST_DIR / "guest.sh").read_bytes(), 0o755)
            add("usr/local/share/ca-certificates/gce-emulator.crt", self.ca_file.read_bytes())
        return buf.getvalue()

    # ------------------------------------------------------------------ firewall
    def instance_addresses(self, snap) -> list[dict]:
        out = []
        for path, inst in snap.get("instances", {}).items():
            for nic in inst.get("networkInterfaces", []):
                out.append({"path": path, "ip": nic.get("networkIP"), "vpc": short(nic.get("network", "")),
                            "subnet": short(nic.get("subnetwork", "")),
                            "tags": set((inst.get("tags") or {}).get("items", [])),
                            "sas": {sa.get("email") for sa in inst.get("serviceAccounts", [])}})
        return out

    def firewall(self, snap, networks) -> None:
        addrs = [a for a in self.instance_addresses(snap) if a["ip"]]
        rules = sorted((r for r in snap.get("firewalls", {}).values()
                        if r.get("direction", "INGRESS") == "INGRESS" and not r.get("disabled")),
                       key=lambda r: (int(r.get("priority", 1000)), "denied" in r))
        lines = ["-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT" % FILTER_CHAIN]
        for a in addrs:
            for rule in rules:
                if short(rule.get("network", "")) != a["vpc"] and a["vpc"]:
                    continue
                if rule.get("targetTags") and not a["tags"] & set(rule["targetTags"]):
                    continue
                if rule.get("targetServiceAccounts") and not a["sas"] & set(rule["targetServiceAccounts"]):
                    continue
                sources = list(rule.get("sourceRanges") or [])
                for other in addrs:
                    if (rule.get("sourceTags") and other["tags"] & set(rule["sourceTags"])) or \
                            (rule.get("sourceServiceAccounts") and other["sas"] & set(rule["sourceServiceAccounts"])):
                        sources.append(other["ip"] + "/32")
                verdict = "ACCEPT" if "allowed" in rule else "DROP"
                for entry in rule.get("allowed") or rule.get("denied") or []:
                    proto = entry.get("IPProtocol", "all").lower()
                    for src in sorted(set(sources)):
                        for ports in (port_spec(entry.get("ports", [])) if proto in ("tcp", "udp") else [[]]):
                            lines.append(" ".join(["-A", FILTER_CHAIN, "-d", a["ip"] + "/32", "-s", src,
                                                   *(["-p", proto] if proto != "all" else []), *ports,
                                                   "-j", verdict]))
            lines.append(f"-A {FILTER_CHAIN} -d {a['ip']}/32 -j DROP")   # the implied deny
        self.apply("filter", FILTER_CHAIN, lines)
        # Inside a VPC addresses are kept (no masquerading between its subnets); what leaves it
        # (egress to Debian's mirror, as Cloud NAT would carry it) is masqueraded.
        keep = []
        for vpc in sorted({n["vpc"] for n in networks.values()}):
            cidrs = sorted(str(n["cidr"]) for n in networks.values() if n["vpc"] == vpc)
            keep += [f"-A {NAT_KEEP_CHAIN} -s {s} -d {d} -j ACCEPT" for s in cidrs for d in cidrs if s != d]
            keep += [f"-A {NAT_KEEP_CHAIN} -s {n['cidr']} ! -o {n['bridge']} -j MASQUERADE"
                     for n in sorted(networks.values(), key=lambda n: str(n["cidr"])) if n["vpc"] == vpc]
        self.apply("nat", NAT_KEEP_CHAIN, keep)

    def apply(self, table: str, chain: str, lines: list[str]) -> None:
        text = f"*{table}\n:{chain} - [0:0]\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"
        digest = hashlib.sha1(text.encode()).hexdigest()
        if self.applied.get(f"{table}/{chain}") == digest:
            return
        run("iptables-restore", "--noflush", stdin=text.encode())
        self.applied[f"{table}/{chain}"] = digest

    # ------------------------------------------------------------------ load balancers
    def group_members(self, snap, group_path: str) -> list[str]:
        group = snap.get("instanceGroups", {}).get(group_path, {})
        if "_instances" in group:
            return [short(p) for p in group["_instances"]]
        mig = group_path.replace("/instanceGroups/", "/instanceGroupManagers/")
        return sorted(p for p, r in snap.get("instances", {}).items() if r.get("_managedBy") == mig)

    def backend_health(self, snap, bs: dict) -> list[dict]:
        """[{instance, ip, failover, healthy}] of a backend service, as its health check sees them."""
        check_path = short(bs["healthChecks"][0])
        out = []
        for backend in bs.get("backends", []):
            for inst_path in self.group_members(snap, short(backend["group"])):
                inst = snap.get("instances", {}).get(inst_path)
                if not inst:
                    continue
                ip = inst["networkInterfaces"][0]["networkIP"]
                out.append({"instance": inst_path, "ip": ip, "failover": bool(backend.get("failover")),
                            # a STOPPING guest still answers until its services stop: its health check decides
                            "healthy": inst.get("status") in ("RUNNING", "STOPPING")
                            and self.health.healthy(check_path, ip)})
        return out

    @staticmethod
    def targets(members: list[dict], policy: dict | None) -> list[str] | None:
        """Where new connections go (None: dropped), per Google's failover rules for internal
        passthrough load balancers (failoverRatio 0: fail over when no primary VM is healthy)."""
        primary = [m for m in members if not m["failover"]]
        backup = [m for m in members if m["failover"]]
        ratio = float((policy or {}).get("failoverRatio", 0))
        healthy_primary = [m["ip"] for m in primary if m["healthy"]]
        if primary and (len(healthy_primary) > ratio * len(primary) if ratio else healthy_primary):
            return healthy_primary
        healthy_backup = [m["ip"] for m in backup if m["healthy"]]
        if healthy_backup:
            return healthy_backup
        if healthy_primary:
            return healthy_primary
        if (policy or {}).get("dropTrafficIfUnhealthy"):
            return None
        return [m["ip"] for m in primary] or [m["ip"] for m in backup] or None

    def load_balancers(self, snap, networks) -> None:
        checks = snap.get("healthChecks", {})
        pairs = {}
        for bs in snap.get("backendServices", {}).values():
            check_path = short(bs["healthChecks"][0]) if bs.get("healthChecks") else None
            if not check_path or check_path not in checks:
                continue
            check = dict(checks[check_path], fingerprint=json.dumps(checks[check_path], sort_keys=True))
            for backend in bs.get("backends", []):
                for inst_path in self.group_members(snap, short(backend["group"])):
                    inst = snap.get("instances", {}).get(inst_path)
                    if inst and inst.get("status") == "RUNNING":
                        pairs[(check_path, inst["networkInterfaces"][0]["networkIP"])] = check
        # autohealing checks probe MIG members too
        for mig_path, mig in snap.get("instanceGroupManagers", {}).items():
            for pol in mig.get("autoHealingPolicies") or []:
                check_path = short(pol["healthCheck"])
                if check_path in checks:
                    check = dict(checks[check_path], fingerprint=json.dumps(checks[check_path], sort_keys=True))
                    for inst in snap.get("instances", {}).values():
                        if inst.get("_managedBy") == mig_path and inst.get("status") == "RUNNING":
                            pairs[(check_path, inst["networkInterfaces"][0]["networkIP"])] = check
        self.health.wanted(pairs)

        nat, drop = [], []
        have = run("ip", "-4", "-o", "addr").stdout.decode()
        for rule in snap.get("forwardingRules", {}).values():
            bs = snap.get("backendServices", {}).get(short(rule.get("backendService", "")))
            net = networks.get(short(rule.get("subnetwork", "")))
            if not bs or not net:
                continue
            vip = rule["IPAddress"]
            if f" {vip}/32 " not in have:
                run("ip", "addr", "add", f"{vip}/32", "dev", net["bridge"], check=False)
            ports = rule.get("ports") or []
            proto = rule.get("IPProtocol", "TCP").lower()
            match = ["-d", vip + "/32", "-p", proto] + (["-m", "multiport", "--dports", ",".join(ports)] if ports else [])
            targets = self.targets(self.backend_health(snap, bs), bs.get("failoverPolicy"))
            if targets is None:
                drop.append(" ".join(["-A", INPUT_CHAIN, *match, "-j", "DROP"]))
                continue
            for i, ip in enumerate(targets):   # spread new connections evenly
                left = len(targets) - i
                stat = ["-m", "statistic", "--mode", "random", "--probability", f"{1 / left:.5f}"] if left > 1 else []
                nat.append(" ".join(["-A", NAT_LB_CHAIN, *match, *stat, "-j", "DNAT", "--to-destination", ip]))
        self.apply("nat", NAT_LB_CHAIN, nat)
        self.apply("filter", INPUT_CHAIN, drop)

    def health_of(self, bs_path: str, group_path: str) -> list[dict]:
        """For the API's backendServices.getHealth: one backend group's members."""
        snap = self.snapshot()
        bs = snap.get("backendServices", {}).get(bs_path)
        if not bs:
            return []
        members = set(self.group_members(snap, group_path))
        return [m for m in self.backend_health(snap, bs) if m["instance"] in members]

    def instance_address(self, project: str, zone: str, name: str) -> str | None:
        """The internal IP of a RUNNING instance whose container runs (for the IAP tunnel)."""
        path = f"projects/{project}/zones/{zone}/instances/{name}"
        with self.cloud.lock:
            inst = self.cloud.res.get(path)
            if not inst or inst.get("status") != "RUNNING":
                return None
            return inst["networkInterfaces"][0]["networkIP"]

    def teardown(self) -> None:
        """Remove every stand-in, network, loop device, rule and host address of this emulator."""
        self.stop_event.set()
        for cur in self.containers().values():
            run("docker", "rm", "-f", cur["name"], check=False)
        nets = run("docker", "network", "ls", "--filter", f"label=gce-emulator.owner={self.owner}", "--format", "{{.Name}}",
                   check=False).stdout.decode().split()
        for net in nets:
            run("docker", "network", "rm", net, check=False)
        for f in self.disk_dir.glob("*.img"):
            for loop in run("losetup", "-j", str(f), check=False).stdout.decode().splitlines():
                run("losetup", "-d", loop.split(":", 1)[0], check=False)
        for table, chain, parents in CHAINS:
            for parent in parents:
                run("iptables", "-t", table, "-D", parent, "-j", chain, check=False)
            run("iptables", "-t", table, "-F", chain, check=False)
            run("iptables", "-t", table, "-X", chain, check=False)
        for addr in HOST_ADDRESSES:
            run("ip", "addr", "del", f"{addr}/32", "dev", "lo", check=False)

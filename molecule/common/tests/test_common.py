"""Checks of the common baseline on a VM stand-in."""
import re
import socket
import subprocess
import tempfile
from pathlib import Path

OPS = "vpcops"
# The account Ansible connects as in this scenario (molecule.yml): not the ops user, as on GCE.
OPERATOR = "operator_example_com"


def test_ops_user_has_sudo_and_no_password(host):
    user = host.user(OPS)
    assert user.exists
    assert host.file("/etc/sudoers.d/50-vpcstack").mode == 0o440
    assert host.run(f"sudo -l -U {OPS}").stdout.count("NOPASSWD: ALL") == 1
    shadow = host.run(f"getent shadow {OPS}").stdout.split(":")
    assert shadow[1] in ("!", "*", "!*"), "the ops account must have no usable password"
    keys = host.file(f"/home/{OPS}/.ssh/authorized_keys")
    assert keys.exists and "molecule" in keys.content_string


def test_sshd_effective_configuration(host):
    effective = host.run("sshd -T").stdout.lower()
    for line in ("permitrootlogin no", "passwordauthentication no", "x11forwarding no",
                 "maxauthtries 3"):
        assert line in effective, line
    # The ops user and the account Ansible connects as, nobody else.
    allowed = {line.split()[1] for line in effective.splitlines() if line.startswith("allowusers ")}
    assert allowed == {OPS, OPERATOR}, allowed
    assert host.service("ssh").is_running
    assert host.service("ssh").is_enabled


def test_login_defs_and_pwquality(host):
    defs = host.file("/etc/login.defs").content_string
    assert re.search(r"^PASS_MAX_DAYS\s+90$", defs, re.M)
    assert re.search(r"^UMASK\s+027$", defs, re.M)
    assert "minlen = 14" in host.file("/etc/security/pwquality.conf.d/50-vpcstack.conf").content_string
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string


def test_audit_rules_installed(host):
    rules = host.file("/etc/audit/rules.d/50-vpcstack.rules")
    assert rules.exists and rules.mode == 0o640
    assert "-w /etc/shadow -p wa -k identity" in rules.content_string
    assert "-F path=/usr/bin/sudo" in rules.content_string
    # A container cannot own the kernel audit socket: the role leaves auditd stopped here.
    assert not host.service("auditd").is_running


def test_unattended_upgrades_configured_not_run(host):
    auto = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "0";' in auto
    assert "Debian-Security" in host.file("/etc/apt/apt.conf.d/52vpcstack-unattended-upgrades").content_string


def _rules(text, port):
    """Sources of the accept rules of a TCP port in `nft list` output, as one set."""
    sources = set()
    for m in re.finditer(rf"tcp dport {re.escape(str(port))} ip saddr (\{{ [^}}]+ \}}|\S+) accept", text):
        sources |= {s.strip() for s in m[1].strip("{} ").split(",")}
    return sources


def test_nftables_default_deny_with_service_drop_ins(host):
    assert host.service("nftables").is_enabled
    assert 'include "/etc/nftables.d/*.nft"' in host.file("/etc/nftables.conf").content_string
    ruleset = host.run("nft list table inet vpcstack_filter")
    assert ruleset.rc == 0
    text = ruleset.stdout
    assert "policy drop" in text.split("chain input")[1].split("}")[0]
    assert _rules(text, 22) == {"35.235.240.0/20", "172.16.0.0/12"}
    # The service's drop-in: every rule with sources, none for the rule without.
    assert _rules(text, 8080) == {"10.99.0.0/24", "198.51.100.7"}
    assert _rules(text, "9100-9101") == {"10.98.0.0/16"}
    assert _rules(text, 8082) == set()
    assert 'comment "test_app: exporters"' in text
    dropin = host.file("/etc/nftables.d/test_app.nft")
    assert dropin.exists and dropin.mode == 0o600
    # A service whose rules all lack sources has no drop-in at all.
    assert not host.file("/etc/nftables.d/test_closed.nft").exists


def test_loaded_ruleset_is_the_file(host):
    """The drop-ins were loaded when written: reloading the file (as a reboot would) changes nothing."""
    def loaded():
        text = host.run("nft list table inet vpcstack_filter").stdout
        return re.sub(r"counter packets \d+ bytes \d+", "counter", text)

    assert host.run("nft -c -f /etc/nftables.conf").rc == 0
    before = loaded()
    assert host.run("systemctl reload nftables").rc == 0
    assert loaded() == before


def _listen(host, port):
    host.run(f"systemd-run --unit=probe-{port} python3 -m http.server {port}")
    host.run(f"for i in $(seq 50); do ss -ltn | grep -q ':{port} ' && break; sleep 0.1; done")


def _connects(address, port):
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def test_nftables_filters_real_connections(host):
    """From the Docker host: an allowed port connects, an unlisted one is dropped."""
    address = host.run("hostname -I").stdout.split()[0]
    _listen(host, 8081)
    _listen(host, 2222)
    try:
        assert _connects(address, 8081), "allowed source/port must connect"
        assert not _connects(address, 2222), "a port with no allow-rule must be dropped"
    finally:
        host.run("systemctl stop probe-8081 probe-2222")


def _ssh(address, user, key):
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
         "-o", "LogLevel=ERROR", f"{user}@{address}", "id -un"],
        capture_output=True, text=True, timeout=30)


def test_the_operator_ansible_connects_as_can_still_log_in(host):
    """AllowUsers keeps the account Ansible connects as (ansible_user, the operator's OS Login
    user on GCE): over real SSH it gets in, an account with the same key outside the list does not."""
    address = host.run("hostname -I").stdout.split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = key.with_suffix(".pub").read_text().strip()
        host.run("id stranger >/dev/null 2>&1 || useradd -m -s /bin/bash stranger")
        for user in (OPERATOR, "stranger"):
            home = host.user(user).home
            assert host.run(f"install -d -m 700 -o {user} -g {user} {home}/.ssh && "
                            f"echo '{public}' > {home}/.ssh/authorized_keys && "
                            f"chown {user}:{user} {home}/.ssh/authorized_keys && "
                            f"chmod 600 {home}/.ssh/authorized_keys").rc == 0
        try:
            admitted = _ssh(address, OPERATOR, key)
            assert admitted.returncode == 0 and admitted.stdout.strip() == OPERATOR, admitted.stderr
            refused = _ssh(address, "stranger", key)
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
        finally:
            host.run("userdel -r stranger")

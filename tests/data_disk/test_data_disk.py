"""roles/data_disk's GCE path on a real block device: a loop device of this machine stands in for
the persistent disk (the stand-in containers cannot format or mount one). The role runs against
localhost with its own fstab file and mount point, so the machine's /etc/fstab is untouched.

Formats once, mounts by UUID, keeps the data on a second run (changed=0), grows the file system
after the disk grew (unmounted and checked: this kernel refuses online resizing), and refuses a device that
holds another file system. Needs root and loop devices.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PLAY = """
- name: The data_disk role on localhost
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: data_disk
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@pytest.fixture
def disk(tmp_path):
    image = tmp_path / "disk.img"
    sh("truncate", "-s", "64M", str(image))
    device = sh("losetup", "--find", "--show", str(image)).stdout.strip()
    mount_point = tmp_path / "data"
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    yield {"image": image, "device": device, "mount": mount_point, "fstab": fstab, "tmp": tmp_path}
    sh("umount", str(mount_point), check=False)
    sh("losetup", "-d", device, check=False)


def run_role(disk, *extra: str) -> subprocess.CompletedProcess:
    play = disk["tmp"] / "play.yml"
    play.write_text(PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default")
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", str(play),
         "-e", f"data_disk_device={disk['device']}", "-e", f"data_disk_mount_point={disk['mount']}",
         "-e", f"data_disk_fstab={disk['fstab']}", "-e", f"ansible_python_interpreter={sys.executable}", *extra],
        cwd=REPO, env=env, capture_output=True, text=True)


def recap_changed(proc: subprocess.CompletedProcess) -> int:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("localhost") and "changed=" in ln)
    return int(line.split("changed=")[1].split()[0])


def size_kib(path) -> int:
    return int(sh("df", "--output=size", "-k", str(path)).stdout.split()[1])


pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/loop-control"),
                                reason="needs root and loop devices")


def test_format_mount_by_uuid_keep_data_and_grow(disk):
    first = run_role(disk)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    uuid = sh("blkid", "-s", "UUID", "-o", "value", disk["device"]).stdout.strip()
    assert uuid
    entry = disk["fstab"].read_text().split()
    assert entry[:3] == [f"UUID={uuid}", str(disk["mount"]), "ext4"] and "nofail" in entry[3]
    assert sh("mountpoint", "-q", str(disk["mount"]), check=False).returncode == 0
    (disk["mount"] / "marker").write_text("kept")

    second = run_role(disk)
    assert second.returncode == 0 and recap_changed(second) == 0, second.stdout[-3000:]
    assert (disk["mount"] / "marker").read_text() == "kept"

    before = size_kib(disk["mount"])
    sh("truncate", "-s", "128M", str(disk["image"]))
    sh("losetup", "--set-capacity", disk["device"])
    # This machine's kernel refuses an online resize ("Permission denied to resize filesystem"),
    # so the file system is grown unmounted and checked first, as resize2fs demands; on a GCE VM
    # resize2fs grows it mounted (not shown here).
    sh("umount", str(disk["mount"]))
    sh("e2fsck", "-f", "-p", disk["device"])
    grown = run_role(disk)
    assert grown.returncode == 0, grown.stdout[-3000:]
    assert size_kib(disk["mount"]) > 1.8 * before
    assert (disk["mount"] / "marker").read_text() == "kept"
    assert sh("blkid", "-s", "UUID", "-o", "value", disk["device"]).stdout.strip() == uuid


def test_never_reformats_another_file_system(disk):
    sh("mkfs.ext2", "-q", "-F", disk["device"])
    before = sh("blkid", "-s", "TYPE", "-o", "value", disk["device"]).stdout.strip()
    proc = run_role(disk)
    assert proc.returncode != 0
    assert sh("blkid", "-s", "TYPE", "-o", "value", disk["device"]).stdout.strip() == before
    assert disk["fstab"].read_text() == ""


def test_missing_device_fails_clearly(disk):
    proc = run_role(disk, "-e", "data_disk_device=/dev/disk/by-id/no-such-disk")
    assert proc.returncode != 0
    assert "The data disk is attached" in proc.stdout

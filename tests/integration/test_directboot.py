"""The build VM's kernel, initrd and command line are read from the disk itself: a real qcow2
with an MBR, a bootable ext4 partition (at the base recipe's offset) and an extlinux.conf."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from goldenimage.adapters import directboot
from goldenimage.adapters.baseimage import EXTLINUX_CONF, PART_START, ROOT_UUID

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("mkfs.ext4", "sfdisk", "qemu-img", "debugfs")),
                                reason="needs e2fsprogs, fdisk and qemu-utils")


def make_disk(tmp: Path, *, bootable: bool = True, conf: str | None = None) -> Path:
    root = tmp / "root"
    (root / "boot" / "extlinux").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.1.0-9-cloud-amd64").write_bytes(b"kernel bytes" * 100)
    (root / "boot" / "initrd.img-6.1.0-9-cloud-amd64").write_bytes(b"initrd bytes" * 100)
    (root / "vmlinuz").symlink_to("boot/vmlinuz-6.1.0-9-cloud-amd64")
    (root / "initrd.img").symlink_to("boot/initrd.img-6.1.0-9-cloud-amd64")
    (root / "boot" / "extlinux" / "extlinux.conf").write_text(conf or EXTLINUX_CONF.format(uuid=ROOT_UUID))
    raw = tmp / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(64 << 20)
    flag = ", bootable" if bootable else ""
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=f"label: dos\nstart={PART_START}, type=83{flag}\n",
                   text=True, check=True, capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), "-E", f"offset={PART_START * 512}", str(raw), "32M"],
                   check=True, capture_output=True)
    disk = tmp / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], check=True)
    return disk


def test_the_disks_own_kernel_initrd_and_command_line(tmp_path: Path) -> None:
    files = directboot.boot_files(make_disk(tmp_path), tmp_path / "boot")
    assert files is not None
    assert (files.kernel_path, files.initrd_path) == ("/boot/vmlinuz-6.1.0-9-cloud-amd64",
                                                      "/boot/initrd.img-6.1.0-9-cloud-amd64")
    assert files.kernel.read_bytes() == b"kernel bytes" * 100
    assert files.kernel_sha256 == hashlib.sha256(b"kernel bytes" * 100).hexdigest()
    assert files.initrd_sha256 == hashlib.sha256(b"initrd bytes" * 100).hexdigest()
    assert files.append == f"root=UUID={ROOT_UUID} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0"
    assert not (tmp_path / "boot" / "disk.raw").exists()  # the raw copy does not stay


def test_a_disk_without_a_bootable_partition_boots_the_usual_way(tmp_path: Path) -> None:
    assert directboot.boot_files(make_disk(tmp_path, bootable=False), tmp_path / "boot") is None


def test_a_disk_without_an_extlinux_entry_boots_the_usual_way(tmp_path: Path) -> None:
    disk = make_disk(tmp_path, conf="# GRUB lives elsewhere\n")
    assert directboot.boot_files(disk, tmp_path / "boot") is None

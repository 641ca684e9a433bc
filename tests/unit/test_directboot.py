"""The build VM's direct kernel boot: reading the disk's own boot configuration and the
credentials that replace cloud-init in the build boot (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldenimage.adapters import directboot as db
from goldenimage.adapters.baseimage import EXTLINUX_CONF, PART_START, ROOT_UUID


def mbr(*entries: tuple[int, int, int]) -> bytes:
    """A boot sector with (boot flag, type, start sector) partition entries."""
    out = bytearray(512)
    for i, (flag, kind, start) in enumerate(entries):
        e = 446 + 16 * i
        out[e] = flag
        out[e + 4] = kind
        out[e + 8:e + 12] = start.to_bytes(4, "little")
    out[510:512] = b"\x55\xaa"
    return bytes(out)


def test_boot_partition_is_the_first_bootable_linux_partition() -> None:
    assert db.boot_partition(mbr((0x80, 0x83, PART_START))) == PART_START * 512
    assert db.boot_partition(mbr((0, 0x83, 2048), (0x80, 0x83, 4096))) == 4096 * 512
    assert db.boot_partition(mbr((0, 0x83, 2048))) is None  # nothing bootable
    assert db.boot_partition(mbr((0x80, 0xEE, 1))) is None  # a GPT disk's protective MBR
    assert db.boot_partition(bytes(512)) is None  # no boot signature


def test_extlinux_entry_of_the_base_recipe() -> None:
    conf = EXTLINUX_CONF.format(uuid=ROOT_UUID)
    assert db.extlinux_entry(conf) == (
        "/vmlinuz", "/initrd.img",
        f"root=UUID={ROOT_UUID} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0")


def test_extlinux_entry_follows_default_and_needs_an_initrd() -> None:
    conf = "DEFAULT b\nLABEL a\n  KERNEL /a\n  INITRD /ia\nLABEL b\n  LINUX /b\n  INITRD /ib,/extra\n  APPEND x=1\n"
    assert db.extlinux_entry(conf) == ("/b", "/ib", "x=1")
    assert db.extlinux_entry("LABEL a\n  LINUX /a\n") is None
    assert db.extlinux_entry("") is None


@pytest.mark.parametrize(("path", "target", "resolved"), [
    ("/vmlinuz", "boot/vmlinuz-6.1.0-57-cloud-amd64", "/boot/vmlinuz-6.1.0-57-cloud-amd64"),
    ("/boot/vmlinuz", "vmlinuz-6.1", "/boot/vmlinuz-6.1"),
    ("/boot/initrd.img", "../initrd.img-6.1", "/initrd.img-6.1"),
    ("/vmlinuz", "/boot/vmlinuz-6.1", "/boot/vmlinuz-6.1"),
])
def test_symlinks_resolve_against_their_directory(path: str, target: str, resolved: str) -> None:
    assert db.resolve(path, target) == resolved


def test_link_target_from_debugfs_stat() -> None:
    stat = 'Inode: 18193   Type: symlink    Mode:  0777\nFast link dest: "boot/vmlinuz-6.1"\n'
    assert db.link_target(stat) == "boot/vmlinuz-6.1"
    assert db.link_target("Inode: 32   Type: regular    Mode:  0644\n") is None


def files(append: str) -> db.BootFiles:
    return db.BootFiles(Path("k"), Path("i"), append, "/boot/vmlinuz-6.1", "/boot/initrd.img-6.1", "a" * 64, "b" * 64)


def test_command_line_keeps_the_disks_own_and_disables_cloud_init() -> None:
    line = files("root=UUID=x ro net.ifnames=0").command_line()
    assert line.startswith("root=UUID=x ro net.ifnames=0 ")
    assert line.count("net.ifnames=0") == 1
    assert "cloud-init=disabled" in line.split()
    assert "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off" in line.split()
    assert "panic=5" in line.split()  # a panicked build VM boots again while Packer waits for SSH
    # eth0 is named so only with the old interface names
    assert "net.ifnames=0" in files("root=UUID=x ro").command_line().split()


def test_boot_check_names_the_files_on_the_disk() -> None:
    assert files("").check() == f"{'a' * 64}:/boot/vmlinuz-6.1 {'b' * 64}:/boot/initrd.img-6.1"


def test_credentials_give_the_build_user_its_key_sudo_and_a_host_key() -> None:
    lines = db.tmpfiles("gi", "ssh-ed25519 AAAA key").splitlines()
    assert "f /home/gi/.ssh/authorized_keys 0600 gi gi - ssh-ed25519 AAAA key" in lines
    assert f"f {db.SUDOERS} 0440 root root - gi ALL=(ALL) NOPASSWD:ALL" in lines
    assert "C /etc/ssh/ssh_host_ed25519_key - - - - /run/credentials/@system/gi.hostkey" in lines
    assert db.sysusers("gi") == 'u gi - "goldenimage build" /home/gi /bin/bash\n'
    assert len(f"{db.CREDENTIALS}/{db.HOST_KEY_CREDENTIAL}") <= 55  # QEMU's fw_cfg name limit


def test_shutdown_removes_what_the_build_boot_added_then_stops() -> None:
    cmd = db.shutdown_command("gi")
    assert cmd.startswith("sudo sh -c ")
    assert cmd.index(f"rm -f {db.SUDOERS}") < cmd.index("userdel --force --remove gi") < cmd.index("shutdown -P now")

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from goldenimage.adapters.qemu import convert_args, host_view, raw_disk_args, seed_files, write_ssh_config


def test_ssh_control_socket_path_stays_short(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 80) / ("e" * 80)
    deep.mkdir(parents=True)
    short = Path(tempfile.mkdtemp(prefix="gi-ssh-"))
    cfg = write_ssh_config(deep / "ssh_config", 2222, "gi", deep / "key", control_dir=short)
    control = next(ln.split()[1] for ln in cfg.read_text().splitlines() if "ControlPath" in ln)
    assert len(control.replace("%C", "x" * 40)) < 108
    short.rmdir()


def test_seed_grants_the_key_and_a_fresh_instance_id(tmp_path: Path) -> None:
    one = seed_files(tmp_path / "a", "gi", "ssh-ed25519 AAAA test", "web")
    two = seed_files(tmp_path / "b", "gi", "ssh-ed25519 AAAA test", "web")
    user_data = one[0].read_text()
    assert user_data.startswith("#cloud-config\n")
    assert "ssh-ed25519 AAAA test" in user_data and '"lock_passwd": true' in user_data
    assert one[1].read_text() != two[1].read_text()  # a new instance id: cloud-init runs again


@pytest.mark.parametrize(("version", "zstd"), [
    ("7.2.22", True), ("5.1.0", True), ("10.0", True), ("5.0.1", False), ("4.2.1", False), ("", False),
])
def test_final_disk_is_zstd_compressed_where_qemu_has_it(version: str, zstd: bool) -> None:
    args = convert_args(version)
    assert ("compression_type=zstd" in args) is zstd
    assert args[-3:] == ["-m", "8", "-W"]


def test_raw_disks_use_blockdev_and_a_serial_the_guest_finds(tmp_path: Path) -> None:
    ro = raw_disk_args(tmp_path / "a,b.tar", "gi-apt-in", read_only=True, slot=0x1E)
    assert ro == [["-blockdev", f"driver=raw,node-name=gi-apt-in,read-only=on,file.driver=file,"
                                f"file.filename={tmp_path}/a,,b.tar"],
                  ["-device", "virtio-blk-pci,drive=gi-apt-in,serial=gi-apt-in,addr=0x1e"]]
    rw = raw_disk_args(tmp_path / "out.raw", "gi-apt-out", read_only=False, slot=0x1F)
    assert "read-only" not in rw[0][1] and not any(a[0] == "-drive" for a in ro + rw)  # Packer keeps its drives


def test_console_tail_names_the_trouble_before_the_last_line(tmp_path: Path) -> None:
    from goldenimage.adapters.qemu import console_tail

    log = tmp_path / "serial.log"
    assert console_tail(log) == ""  # no console yet
    log.write_text("[    0.1] Linux version 6.1\n\x1b[0;32m  OK  \x1b[0m] Started ssh.service\n\nlocalhost login: \n")
    assert console_tail(log) == "localhost login:"
    log.write_text("[    1.2] Kernel panic - not syncing: IO-APIC + timer doesn't work!\n[    1.3] ---[ end trace ]---\n")
    assert console_tail(log).startswith("[    1.2] Kernel panic - not syncing")
    log.write_text("[ TIME ] Timed out waiting for device /dev/disk/by-id/virtio-gi-apt-in.\nmore\n")
    assert "Timed out waiting for device" in console_tail(log)


@pytest.mark.parametrize(("url", "seen"), [
    ("http://10.0.2.2:8080/debian", "http://127.0.0.1:8080/debian"),
    ("http://10.0.2.2/debian", "http://127.0.0.1/debian"),
    ("https://user:pw@10.0.2.2:8443/x", "https://user:pw@127.0.0.1:8443/x"),
    ("http://deb.debian.org/debian", "http://deb.debian.org/debian"),
    ("http://10.0.2.20/debian", "http://10.0.2.20/debian"),
    ("file:///srv/mirror", "file:///srv/mirror"),
])
def test_the_guests_host_address_is_this_hosts_loopback(url: str, seen: str) -> None:
    assert host_view(url) == seen

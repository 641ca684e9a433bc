"""QEMU: pick the accelerator, make NoCloud seeds, boot a disk and wait for SSH.

A VM is always booted through a copy-on-write overlay, so the disk it starts from (the
final artifact, during validation) is never written to.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import timing
from ..errors import OperationFailed
from ..fsutil import atomic_write_json, file_lock, short_tempdir
from ..progress import Reporter
from . import proc

QEMU = "qemu-system-x86_64"
# virtio serials of a build VM's package index disks (/dev/disk/by-id/virtio-<serial>): the
# parent's, read-only, and the one an image that others are built on writes its own to
APT_IN, APT_OUT = "gi-apt-in", "gi-apt-out"
APT_IN_SLOT, APT_OUT_SLOT = 0x1E, 0x1F  # the last PCI slots of the bus: after the system disk


@functools.cache
def qemu_version() -> str:
    """The installed QEMU's version, asked once while the binary is unchanged."""
    from .hostcache import version_output

    out = version_output([QEMU, "--version"], hint="qemu-system-x86")
    m = re.search(r"version (\S+)", out)
    return m[1] if m else out.split("\n")[0]


def convert_args(version: str) -> list[str]:
    """Extra `qemu-img convert` arguments for the final compressed disk. zstd clusters (QEMU
    5.1+) compress ~6x faster than the default zlib on this kind of host, and no larger; 8
    coroutines writing out of order keep both cores busy. Older QEMU keeps zlib."""
    args = ["-m", "8", "-W"]
    m = re.match(r"(\d+)\.(\d+)", version)
    if m and (int(m[1]), int(m[2])) >= (5, 1):
        args = ["-o", "compression_type=zstd", *args]
    return args


def raw_disk_args(path: Path, serial: str, *, read_only: bool, slot: int) -> list[list[str]]:
    """QEMU arguments attaching the raw file `path` as a virtio disk that the guest finds at
    /dev/disk/by-id/virtio-<serial>. `-blockdev`, not `-drive`: Packer replaces all of its
    own drives when the template's qemuargs name one. A high PCI `slot`: the BIOS boots the
    first disk on the bus, which must stay the system disk (QEMU adds Packer's `if=virtio`
    drives after the command line's devices)."""
    name = str(path).replace(",", ",,")
    ro = ",read-only=on" if read_only else ""
    return [["-blockdev", f"driver=raw,node-name={serial}{ro},file.driver=file,file.filename={name}"],
            ["-device", f"virtio-blk-pci,drive={serial},serial={serial},addr={slot:#x}"]]


USER_NET_HOST = "10.0.2.2"  # QEMU user networking: the host (its loopback) as a guest reaches it


def host_view(url: str) -> str:
    """`url` as written in a guest on QEMU's user network, as this host reaches it: the
    gateway address is the host's own loopback; any other URL is the same on both sides."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname != USER_NET_HOST:
        return url
    netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_key(path: Path) -> str:
    """A fresh ed25519 key pair; returns the public key line."""
    proc.output(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "goldenimage-ephemeral",
                 "-f", str(path)], what="ssh-keygen")
    return Path(f"{path}.pub").read_text().strip()


def seed_files(directory: Path, user: str, pubkey: str, hostname: str) -> list[Path]:
    """NoCloud `user-data` and `meta-data` granting `user` sudo and `pubkey`."""
    directory.mkdir(parents=True, exist_ok=True)
    user_data = directory / "user-data"
    meta_data = directory / "meta-data"
    user_data.write_text(
        "#cloud-config\n"
        + json.dumps({
            "users": [{
                "name": user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True, "ssh_authorized_keys": [pubkey],
            }],
            "ssh_pwauth": False,
            "manage_etc_hosts": "localhost",
        })
        + "\n"
    )
    meta_data.write_text(f"instance-id: i-{uuid.uuid4().hex[:16]}\nlocal-hostname: {hostname}\n")
    return [user_data, meta_data]


def seed_iso(directory: Path, files: list[Path]) -> Path:
    iso = directory / "seed.iso"
    tool = proc.which("genisoimage", "genisoimage")
    proc.output([tool, "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
                 *map(str, files)], what="genisoimage")
    return iso


def overlay(base: Path, dest: Path) -> Path:
    proc.output(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base.resolve()), "-F", "qcow2",
                 str(dest)], what="qemu-img create")
    return dest


def choose_accelerator(setting: str, probe_disk: Path | None, cache: Path, reporter: Reporter) -> str:
    """`kvm` only where a short probe boot reaches user space; else `tcg`. Cached in `cache`
    (the base-disk cache: the answer belongs to the host, its QEMU and its kernel)."""
    if setting in ("kvm", "tcg"):
        return setting
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = f"{qemu_version()}|{platform.release()}"
    cache_file = cache / "accelerator.json"

    def cached() -> str | None:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            doc = json.loads(cache_file.read_text())
            if doc["key"] == key:
                return str(doc["accelerator"])
        return None

    if (hit := cached()) is not None:
        return hit
    if probe_disk is None:
        return "tcg"
    with file_lock(cache / "accelerator.lock"):  # one probe at a time; the others take its answer
        if (hit := cached()) is not None:
            return hit
        reporter.step("probing kvm with a short boot")
        with tempfile.TemporaryDirectory(prefix=".probe-", dir=cache) as tmp:
            accel = "kvm" if _probe_kvm(probe_disk, Path(tmp)) else "tcg"
        atomic_write_json(cache_file, {"key": key, "accelerator": accel})
    return accel


def _probe_kvm(disk: Path, work: Path, timeout: float = 45.0) -> bool:
    ov = overlay(disk, work / "probe-overlay.qcow2")
    log = work / "probe-serial.log"
    argv = [QEMU, "-accel", "kvm", "-m", "512", "-display", "none", "-monitor", "none",
            "-serial", f"file:{log}", "-drive", f"file={ov},if=virtio,format=qcow2", "-net", "none"]
    with proc.background(argv, log=work / "probe-qemu.log") as vm:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and vm.poll() is None:
            with contextlib.suppress(FileNotFoundError):
                text = log.read_text(errors="replace")
                if "systemd[1]" in text or "Welcome to" in text or "login:" in text:
                    return True
            time.sleep(0.5)
    return False


@dataclass
class Vm:
    port: int
    user: str
    key: Path
    ssh_config: Path
    serial_log: Path
    host: str = "target"
    boot: dict[str, Any] = field(default_factory=dict)  # timing.boot_analysis, and when SSH answered

    def ssh(self, command: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), self.host, command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )


def write_ssh_config(path: Path, port: int, user: str, key: Path, control_dir: Path,
                     host: str = "target", hostname: str = "127.0.0.1") -> Path:
    """An ssh_config for the VM (or instance at `hostname`). The control socket lives in
    `control_dir`, a short path: a socket path longer than 107 bytes makes every ssh fail
    ("ControlPath too long")."""
    path.write_text(
        f"Host {host}\n"
        f"  HostName {hostname}\n  Port {port}\n  User {user}\n  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 5\n"
        f"  ControlMaster auto\n  ControlPath {control_dir}/%C\n  ControlPersist 60\n"
    )
    return path


class _Panicked(Exception):
    """The guest's kernel panicked before SSH answered (its console says so)."""


BOOT_ATTEMPTS = 2  # a kernel panic under emulation is booted once more; a second one fails


@contextlib.contextmanager
def boot(
    disk: Path, work: Path, *, accelerator: str, cpus: int, memory: int, timeout: float,
    reporter: Reporter, user: str = "gi",
) -> Iterator[Vm]:
    """Boot `disk` (through an overlay) with a fresh key; yield once SSH answers. A boot
    whose kernel panics before that (an emulated CPU starved on a busy host can fail the
    kernel's timer checks) is stopped at once and started again from a fresh overlay, once;
    the first console is kept as serial-1.log."""
    work.mkdir(parents=True, exist_ok=True)
    key = work / "id_ed25519"
    pubkey = make_key(key)
    iso = seed_iso(work, seed_files(work / "seed", user, pubkey, "validate"))
    serial = work / "serial.log"
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        try:
            with _booted(disk, work, iso, serial, key, accelerator=accelerator, cpus=cpus, memory=memory,
                         timeout=timeout, reporter=reporter, user=user) as vm:
                vm.boot["attempts"] = attempt
                yield vm
            return
        except _Panicked as panicked:
            if attempt == BOOT_ATTEMPTS:
                raise OperationFailed(f"the VM's kernel panicked in {BOOT_ATTEMPTS} boots: {panicked} "
                                      f"(log: {serial})") from None
            os.replace(serial, work / f"serial-{attempt}.log")
            reporter.warn(f"the VM's kernel panicked during boot ({panicked}): booting it once more")


@contextlib.contextmanager
def _booted(
    disk: Path, work: Path, iso: Path, serial: Path, key: Path, *, accelerator: str, cpus: int, memory: int,
    timeout: float, reporter: Reporter, user: str,
) -> Iterator[Vm]:
    ov = overlay(disk, work / "overlay.qcow2")
    port = free_port()
    argv = [
        QEMU, "-accel", accelerator, "-smp", str(cpus), "-m", str(memory),
        "-display", "none", "-monitor", "none", "-serial", f"file:{serial}",
        "-drive", f"file={ov},if=virtio,format=qcow2",
        "-drive", f"file={iso},media=cdrom,format=raw,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]
    if accelerator == "kvm":
        argv += ["-cpu", "host"]
    with short_tempdir("gi-ssh-") as control, proc.background(argv, log=work / "qemu.log") as child:
        vm = Vm(port, user, key, write_ssh_config(work / "ssh_config", port, user, key, control), serial)
        start = time.monotonic()
        last_ssh = ""
        while True:
            waited = time.monotonic() - start
            if child.poll() is not None:
                raise OperationFailed(
                    f"the VM exited during boot (exit {child.returncode}): "
                    f"{console_tail(work / 'qemu.log') or console_tail(serial)}"
                )
            said = console_tail(serial)
            if "Kernel panic" in said:
                raise _Panicked(said)
            if waited > timeout:
                raise OperationFailed(
                    f"no SSH after {timeout:.0f}s (ssh said: {last_ssh or 'nothing'}); "
                    f"last console line: {said} (log: {serial})"
                )
            reporter.step(f"booting, waiting for SSH on 127.0.0.1:{port} ({waited:.0f}s)")
            try:
                res = vm.ssh("true", timeout=15)
                if res.returncode == 0:
                    break
                last_ssh = " ".join(res.stderr.split())[-200:]
            except subprocess.TimeoutExpired:
                last_ssh = "timed out"
            time.sleep(2)
        ssh_up = time.monotonic() - start
        reporter.step(f"SSH up after {ssh_up:.0f}s; waiting for cloud-init")
        # cloud-init may still restart sshd, which resets the next new connection
        # ("kex_exchange_identification: Connection reset"); ours goes through the control
        # master, which survives that. A degraded status is for the image suite to judge.
        left = max(30.0, timeout - (time.monotonic() - start))
        try:
            vm.ssh("cloud-init status --wait >/dev/null 2>&1 || true", timeout=left)
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"cloud-init did not finish within {left:.0f}s of SSH coming up "
                                  f"(last console line: {console_tail(serial)})") from None
        vm.boot = {"mode": "bootloader", "ssh_seconds": round(ssh_up, 1),
                   "ready_seconds": round(time.monotonic() - start, 1), **analyse_boot(vm)}
        try:
            yield vm
        finally:
            subprocess.run(["ssh", "-F", str(vm.ssh_config), "-O", "exit", vm.host],
                           capture_output=True, stdin=subprocess.DEVNULL)


def analyse_boot(vm: Vm) -> dict[str, Any]:
    """The guest's own account of its boot (`timing.BOOT_ANALYSIS`); empty parts when the
    guest cannot give it (no systemd-analyze, no sudo)."""
    try:
        res = vm.ssh(f"sudo sh -c {shlex.quote(timing.BOOT_ANALYSIS)}", timeout=180)
    except subprocess.TimeoutExpired:
        return timing.boot_analysis("")
    return timing.boot_analysis(res.stdout)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TROUBLE = re.compile(r"Kernel panic|BUG: |self-detected stall|blocked for more than|Timed out waiting for device|"
                      r"Dependency failed|emergency mode")


def console_tail(path: Path) -> str:
    """What a VM's serial console says about a boot that went wrong: the last line that names
    a panic, stall or failed wait, if any, else its last line (colours stripped)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    lines = [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    trouble = [ln for ln in lines if _TROUBLE.search(ln)]
    return (trouble or lines or [""])[-1][:200]



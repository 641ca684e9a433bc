"""The build VM's fast boot: the disk's own kernel and initrd, started by QEMU directly, with
the build key handed over as systemd credentials instead of cloud-init.

A production boot of the image (validation, every instance) goes through the disk's boot
loader and cloud-init, which under emulation spend most of a minute before sshd starts
(cloud-init's Python stages are ordered before sysinit.target). The build VM only has to run
Ansible, so it boots differently, and nothing of that stays in the image:

- kernel, initrd and command line come from the disk itself: its MBR's bootable partition,
  its `/boot/extlinux/extlinux.conf` (the default label's LINUX, INITRD, APPEND), read with
  debugfs from a raw copy; the build's first step checks their sha256 on the booted disk
  (`boot_check`). A disk without that layout (a user's cloud image with GRUB) boots the
  usual way, with a NoCloud seed.
- the command line adds `cloud-init=disabled` (cloud-init does not run; hygiene's
  `cloud-init clean` leaves it to run afresh at the image's first boot), a static address
  for QEMU's user network (systemd-network-generator + systemd-networkd, in /run only),
  no wait for DHCP, a transient hostname, and `no_timer_check` (on a busy host the emulated
  CPU can fail the kernel's IO-APIC timer check: "IO-APIC + timer doesn't work!", a panic);
  `panic=5`: a build VM whose kernel panics anyway restarts 5 s later (QEMU boots the same
  kernel again, the credentials are still there) while Packer waits for SSH, instead of
  hanging until the SSH timeout.
- systemd (PID 1 reads QEMU's fw_cfg credentials) creates the build user from
  `sysusers.extra` and, from `tmpfiles.extra`, its authorized key, a sudo rule, one ed25519
  host key (made here: no RSA key generation under emulation) and resolv.conf.
- the shutdown command removes the sudo rule and the build user after the last provisioner;
  hygiene has already removed the host key and the authorized keys.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import sha256_file
from . import proc

SECTOR = 512
CREDENTIALS = "opt/io.systemd.credentials"
HOST_KEY_CREDENTIAL = "gi.hostkey"  # fw_cfg names are at most 55 characters
SUDOERS = "/etc/sudoers.d/90-goldenimage-build"
GUEST_ADDRESS = "10.0.2.15"  # QEMU user networking's fixed guest, gateway and DNS addresses
BUILD_APPEND = (  # no_timer_check: a starved emulated CPU can fail the kernel's IO-APIC timer check (a panic)
    "cloud-init=disabled systemd.hostname=localhost no_timer_check panic=5 "
    "systemd.wants=systemd-network-generator.service systemd.wants=systemd-networkd.service "
    f"ip={GUEST_ADDRESS}::10.0.2.2:255.255.255.0::eth0:off"
)
RESOLV = "nameserver 10.0.2.3"
USER_GECOS = "goldenimage build"


@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    initrd: Path
    append: str
    kernel_path: str  # where they are on the disk (symlinks resolved)
    initrd_path: str
    kernel_sha256: str
    initrd_sha256: str

    def check(self) -> str:
        """`boot_check` of packer/build.pkr.hcl: the files the guest must find on its disk."""
        return f"{self.kernel_sha256}:{self.kernel_path} {self.initrd_sha256}:{self.initrd_path}"

    def command_line(self) -> str:
        extra = "" if re.search(r"(^|\s)net\.ifnames=0(\s|$)", self.append) else " net.ifnames=0"
        return f"{self.append}{extra} {BUILD_APPEND}"

    def as_dict(self) -> dict[str, str]:
        return {"kernel": self.kernel_path, "kernel_sha256": self.kernel_sha256, "initrd": self.initrd_path,
                "initrd_sha256": self.initrd_sha256, "append": self.command_line()}


# -- pure readers -----------------------------------------------------------------------------
def boot_partition(mbr: bytes) -> int | None:
    """Byte offset of the first bootable Linux partition of an MBR, None if there is none."""
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        return None
    for i in range(4):
        entry = mbr[446 + 16 * i: 462 + 16 * i]
        start = int.from_bytes(entry[8:12], "little")
        if entry[0] == 0x80 and entry[4] == 0x83 and start:
            return start * SECTOR
    return None


def extlinux_entry(text: str) -> tuple[str, str, str] | None:
    """(kernel, initrd, append) of the DEFAULT label of an extlinux.conf (the first label
    without a DEFAULT); None without a kernel or initrd."""
    labels: dict[str, dict[str, str]] = {}
    default = None
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        key, rest = word.upper(), rest.strip()
        if key == "DEFAULT":
            default = rest
        elif key == "LABEL":
            current = labels.setdefault(rest, {})
        elif current is not None and key in ("LINUX", "KERNEL", "INITRD", "APPEND"):
            current["LINUX" if key == "KERNEL" else key] = rest
    entry = labels.get(default or "") or next(iter(labels.values()), None)
    if not entry or not entry.get("LINUX") or not entry.get("INITRD"):
        return None
    return entry["LINUX"], entry["INITRD"].split(",")[0], entry.get("APPEND", "")


def link_target(stat_output: str) -> str | None:
    """The target of a symlink from debugfs's `stat` output, None for another file type."""
    if "Type: symlink" not in stat_output:
        return None
    m = re.search(r'Fast link dest: "([^"]*)"', stat_output)
    return m[1] if m else None


def resolve(path: str, target: str) -> str:
    """`target` of the symlink at `path`, as an absolute path."""
    if target.startswith("/"):
        return target
    parent = path.rsplit("/", 1)[0]
    parts: list[str] = []
    for part in f"{parent}/{target}".split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def tmpfiles(user: str, pubkey: str, host_key_credential: str = HOST_KEY_CREDENTIAL) -> str:
    """The `tmpfiles.extra` credential of the build boot."""
    home = f"/home/{user}"
    return "\n".join([
        f"d {home} 0755 {user} {user} -",
        f"d {home}/.ssh 0700 {user} {user} -",
        f"f {home}/.ssh/authorized_keys 0600 {user} {user} - {pubkey}",
        f"f {SUDOERS} 0440 root root - {user} ALL=(ALL) NOPASSWD:ALL",
        f"C /etc/ssh/ssh_host_ed25519_key - - - - /run/credentials/@system/{host_key_credential}",
        "z /etc/ssh/ssh_host_ed25519_key 0600 root root -",
        f"f+ /etc/resolv.conf 0644 root root - {RESOLV}\\n",
    ]) + "\n"


def sysusers(user: str) -> str:
    return f'u {user} - "{USER_GECOS}" /home/{user} /bin/bash\n'


def shutdown_command(user: str) -> str:
    """Packer's shutdown command after a direct boot: what the build boot added goes first."""
    undo = f"rm -f {SUDOERS}; userdel --force --remove {shlex.quote(user)} 2>/dev/null; shutdown -P now"
    return f"sudo sh -c {shlex.quote(undo)}"


# -- I/O ----------------------------------------------------------------------------------
def _debugfs(image: str, request: str) -> str:
    """debugfs's answer (stdout) to one request on the ext4 file system `image`."""
    res = subprocess.run([proc.which("debugfs", "e2fsprogs"), "-R", request, image],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return res.stdout if res.returncode == 0 else ""


def boot_files(disk: Path, work: Path) -> BootFiles | None:
    """The kernel, initrd and command line `disk` (qcow2) boots with, copied to `work`; None
    when the disk has no bootable MBR partition with an extlinux configuration."""
    if shutil.which("debugfs") is None:
        return None
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "disk.raw"
    try:
        proc.output(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], what="qemu-img convert")
        with raw.open("rb") as fh:
            offset = boot_partition(fh.read(SECTOR))
        if offset is None:
            return None
        image = f"{raw}?offset={offset}"
        conf = ""
        for candidate in ("/boot/extlinux/extlinux.conf", "/extlinux.conf", "/boot/syslinux/syslinux.cfg"):
            conf = _debugfs(image, f"cat {candidate}")
            if "LABEL" in conf.upper():
                break
        entry = extlinux_entry(conf)
        if entry is None:
            return None
        found: list[tuple[Path, str, str]] = []
        for name, path in (("vmlinuz", entry[0]), ("initrd.img", entry[1])):
            path = "/" + path.lstrip("/")
            for _ in range(8):  # symlinks, e.g. /vmlinuz -> boot/vmlinuz-6.1.0-...
                target = link_target(_debugfs(image, f"stat {path}"))
                if target is None:
                    break
                path = resolve(path, target)
            out = work / name
            _debugfs(image, f"dump {path} {out}")
            if not out.is_file() or out.stat().st_size == 0:
                return None
            found.append((out, path, sha256_file(out)))
    finally:
        raw.unlink(missing_ok=True)
    (kernel, kernel_path, kernel_sha), (initrd, initrd_path, initrd_sha) = found
    return BootFiles(kernel, initrd, entry[2], kernel_path, initrd_path, kernel_sha, initrd_sha)


def qemu_args(files: BootFiles, work: Path, user: str, pubkey: str) -> list[list[str]]:
    """QEMU arguments of the build boot: the kernel, initrd and command line, and the
    credentials (written to `work`)."""
    host_key = work / "build_host_key"
    host_key.unlink(missing_ok=True)
    proc.output(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "goldenimage-build", "-f", str(host_key)],
                what="ssh-keygen")
    (work / "tmpfiles.extra").write_text(tmpfiles(user, pubkey))
    (work / "sysusers.extra").write_text(sysusers(user))
    creds = {"tmpfiles.extra": work / "tmpfiles.extra", "sysusers.extra": work / "sysusers.extra",
             HOST_KEY_CREDENTIAL: host_key}
    args = [["-kernel", str(files.kernel)], ["-initrd", str(files.initrd)], ["-append", files.command_line()]]
    args += [["-fw_cfg", f"name={CREDENTIALS}/{name},file={path}"] for name, path in creds.items()]
    return args

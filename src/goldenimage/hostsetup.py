"""`invoke setup`: install (apt, idempotent) or check the host tools, and print versions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

from .errors import MissingToolError, OperationFailed
from .progress import Reporter

# tool on PATH -> (Debian package, version command)
TOOLS: dict[str, tuple[str, list[str]]] = {
    "packer": ("packer", ["packer", "version"]),
    "qemu-system-x86_64": ("qemu-system-x86", ["qemu-system-x86_64", "--version"]),
    "qemu-img": ("qemu-utils", ["qemu-img", "--version"]),
    "mmdebstrap": ("mmdebstrap", ["mmdebstrap", "--version"]),
    "extlinux": ("extlinux", ["extlinux", "--version"]),
    "sfdisk": ("fdisk", ["sfdisk", "--version"]),
    "mkfs.ext4": ("e2fsprogs", ["mkfs.ext4", "-V"]),
    "genisoimage": ("genisoimage", ["genisoimage", "--version"]),
    "ssh": ("openssh-client", ["ssh", "-V"]),
    "ssh-keygen": ("openssh-client", ["ssh", "-V"]),
    "git": ("git", ["git", "--version"]),
    # the validation's compliance audit: brought into the booted image, never installed in it
    "lynis": ("lynis", ["lynis", "--version"]),
}
# needed as files, not commands
EXTRA_PACKAGES = ["syslinux-common", "debian-archive-keyring", "ca-certificates"]


def _version(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (res.stdout + res.stderr).strip()
    m = re.search(r"\d+\.\d+(?:[.\-+~:\w]*)?", text)
    return m.group(0) if m else (text.splitlines()[0] if text else "?")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def setup(check_only: bool, reporter: Reporter) -> dict[str, Any]:
    missing = missing_tools()
    packages = sorted({TOOLS[t][0] for t in missing} | set(EXTRA_PACKAGES))
    installed: list[str] = []
    if missing and not check_only:
        if shutil.which("apt-get") is None:
            raise MissingToolError(
                f"missing {', '.join(missing)} and no apt-get here: install the packages "
                f"{' '.join(sorted(TOOLS[t][0] for t in missing))} (or your system's equivalents)"
            )
        if os.geteuid() != 0:
            raise MissingToolError(f"missing {', '.join(missing)}: run `invoke setup` as root, or "
                                   f"`sudo apt-get install {' '.join(packages)}`")
        reporter.info(f"installing {' '.join(packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
            res = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if res.returncode != 0:
                last = (res.stderr or res.stdout).strip().splitlines()
                raise OperationFailed(f"{' '.join(argv[:2])} failed: {last[-1] if last else res.returncode}")
        installed = packages
        missing = missing_tools()
    versions = {t: (_version(cmd) if shutil.which(t) else None) for t, (_, cmd) in TOOLS.items()}
    from ansible.release import __version__ as ansible_version

    versions["ansible-core"] = ansible_version
    result: dict[str, Any] = {"versions": versions, "installed": installed, "missing": missing}
    if missing:
        pkgs = " ".join(sorted(TOOLS[t][0] for t in missing))
        raise MissingToolError(f"missing {', '.join(missing)}: `apt-get install {pkgs}` or `invoke setup`")
    return result


def human(result: dict[str, Any]) -> list[str]:
    lines = [f"installed: {' '.join(result['installed'])}"] if result["installed"] else []
    lines += [f"{tool:<20} {ver}" for tool, ver in result["versions"].items()]
    return lines

"""Benchmark: seconds from QEMU's start to SSH under TCG, for the two ways a disk boots.

Prints one JSON document:
  production   the disk through its own boot loader with a NoCloud seed, as the validation
               VM and every instance boot (goldenimage.adapters.qemu.boot): seconds to SSH,
               to cloud-init done, and the guest's systemd-analyze (phases, ssh.service's
               critical chain, slowest units)
  build        the build VM's boot (goldenimage.adapters.directboot): the disk's own kernel
               and initrd, systemd credentials, no cloud-init; the same figures (no
               cloud-init to wait for)
  load_average the host's 1-minute load before and after (wall times move with it)

A disk without the base recipe's extlinux layout has no `build` figures. Each boot is a
real one; ~1-2 minutes in all on 2 cores.

Usage: .venv/bin/python bench/boot.py DISK.qcow2 [--only production|build]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from goldenimage.adapters import directboot, proc, qemu
from goldenimage.fsutil import short_tempdir
from goldenimage.progress import Reporter

USER = "gi"


def production(disk: Path, work: Path) -> dict[str, Any]:
    with qemu.boot(disk, work, accelerator="tcg", cpus=2, memory=1024, timeout=600,
                   reporter=Reporter(), user=USER) as vm:
        return vm.boot


def build(disk: Path, work: Path) -> dict[str, Any] | None:
    files = directboot.boot_files(disk, work / "boot")
    if files is None:
        return None
    key = work / "id_ed25519"
    pubkey = qemu.make_key(key)
    ov = qemu.overlay(disk, work / "overlay.qcow2")
    port = qemu.free_port()
    argv = [qemu.QEMU, "-accel", "tcg", "-smp", "2", "-m", "1024", "-display", "none", "-monitor", "none",
            "-serial", f"file:{work / 'serial.log'}", "-drive", f"file={ov},if=virtio,format=qcow2",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0"]
    argv += [a for pair in directboot.qemu_args(files, work / "boot", USER, pubkey) for a in pair]
    with short_tempdir("gi-ssh-") as control, proc.background(argv, log=work / "qemu.log") as child:
        vm = qemu.Vm(port, USER, key, qemu.write_ssh_config(work / "ssh_config", port, USER, key, control),
                     work / "serial.log")
        start = time.monotonic()
        while vm.ssh("true", timeout=15).returncode != 0:
            if child.poll() is not None or time.monotonic() - start > 600:
                raise SystemExit(f"build boot: no SSH ({work / 'serial.log'})")
            time.sleep(0.5)
        ssh = time.monotonic() - start
        doc = {"mode": "direct kernel boot", "ssh_seconds": round(ssh, 1), **qemu.analyse_boot(vm)}
        subprocess.run(["ssh", "-F", str(vm.ssh_config), "-O", "exit", vm.host], capture_output=True)
        return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("disk", type=Path)
    ap.add_argument("--only", choices=["production", "build"])
    args = ap.parse_args()
    out: dict[str, Any] = {"disk": str(args.disk), "load_average": {"before": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="gi-bench-boot-") as tmp:
        if args.only in (None, "build"):
            out["build"] = build(args.disk, Path(tmp) / "build")
        if args.only in (None, "production"):
            out["production"] = production(args.disk, Path(tmp) / "production")
    out["load_average"]["after"] = os.getloadavg()[0]
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()

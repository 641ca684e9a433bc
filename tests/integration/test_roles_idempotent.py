"""The base and web roles converge: a second run on the same VM changes nothing.

Boots a throwaway VM from the base image (env GOLDENIMAGE_BASE_IMAGE, a bootable qcow2 with
cloud-init NoCloud) in QEMU, runs playbooks/web.yml with hygiene switched off twice, and
asserts the second run reports changed=0. The small QEMU helper below is deliberately local
to this file; the library's QEMU adapter will replace it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE_ENV = "GOLDENIMAGE_BASE_IMAGE"
SSH_OPTIONS = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
]
EXTRA_VARS = {
    "hygiene_enabled": False,
    "goldenimage_image_name": "web",
    "goldenimage_fingerprint": "sha256:" + "0" * 64,
    "goldenimage_build_time": "2026-01-01T00:00:00Z",
}
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


# --- a small QEMU helper -------------------------------------------------------------------


@dataclass(frozen=True)
class Vm:
    user: str
    port: int
    key: Path
    console: Path
    process: subprocess.Popen[bytes]

    def ssh(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "ssh",
                *SSH_OPTIONS,
                "-o",
                "ConnectTimeout=10",
                "-i",
                str(self.key),
                "-p",
                str(self.port),
                f"{self.user}@127.0.0.1",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def make_key(path: Path) -> str:
    """Creates an ed25519 key pair at path; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "goldenimage-test", "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def make_seed(directory: Path, user: str, pubkey: str) -> Path:
    """A NoCloud seed ISO: one sudo user with one key, a new instance id."""
    directory.mkdir(parents=True, exist_ok=True)
    user_data = directory / "user-data"
    meta_data = directory / "meta-data"
    user_data.write_text(
        "#cloud-config\n"
        + json.dumps(
            {
                "users": [
                    {
                        "name": user,
                        "sudo": "ALL=(ALL) NOPASSWD:ALL",
                        "shell": "/bin/bash",
                        "ssh_authorized_keys": [pubkey],
                    }
                ],
            }
        )
        + "\n"
    )
    meta_data.write_text(f"instance-id: i-{uuid.uuid4().hex}\n")
    seed = directory / "seed.iso"
    subprocess.run(["cloud-localds", str(seed), str(user_data), str(meta_data)], check=True)
    return seed


def make_overlay(base: Path, path: Path) -> Path:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(path)],
        check=True,
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def booted(
    disk: Path, seed: Path, key: Path, user: str, workdir: Path, boot_timeout: float = 600
) -> Iterator[Vm]:
    """Boots disk with the seed attached; yields once SSH answers; always stops QEMU."""
    port = free_port()
    console = workdir / f"console-{port}.log"
    accel = os.environ.get("GOLDENIMAGE_QEMU_ACCEL", "tcg")
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-accel",
            accel,
            "-m",
            "1024",
            "-smp",
            "2",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            f"file:{console}",
            "-drive",
            f"file={disk},if=virtio",
            "-drive",
            f"file={seed},media=cdrom",
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device",
            "virtio-net-pci,netdev=n0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    vm = Vm(user=user, port=port, key=key, console=console, process=proc)
    try:
        deadline = time.monotonic() + boot_timeout
        while True:
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"QEMU exited with {proc.returncode}: {stderr.strip()}")
            try:
                if vm.ssh("true", timeout=30).returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SSH after {boot_timeout:.0f} s; console: {console}")
            time.sleep(3)
        yield vm
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_inventory(path: Path, vm: Vm) -> Path:
    inventory = {
        "all": {
            "children": {
                "web": {
                    "hosts": {
                        "build": {
                            "ansible_host": "127.0.0.1",
                            "ansible_port": vm.port,
                            "ansible_user": vm.user,
                            "ansible_ssh_private_key_file": str(vm.key),
                            "ansible_ssh_common_args": " ".join(SSH_OPTIONS),
                        }
                    }
                }
            }
        }
    }
    path.write_text(json.dumps(inventory))
    return path


def run_playbook(
    inventory: Path, extra_vars: dict[str, object], timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "default",
    }
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            str(inventory),
            "-e",
            json.dumps(extra_vars),
            str(REPO / "playbooks" / "web.yml"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def recap(output: str) -> dict[str, int]:
    match = RECAP.search(output)
    assert match, f"no PLAY RECAP in ansible-playbook output:\n{output[-3000:]}"
    return {k: int(v) for k, v in match.groupdict().items() if k != "host"}


def changed_tasks(output: str) -> list[str]:
    """Names of the tasks that reported a change (default callback output)."""
    names, task = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line[line.index("[") + 1 : line.rindex("]")]
        elif line.startswith("changed:"):
            names.append(task)
    return names


# --- the test -------------------------------------------------------------------------------


@pytest.fixture
def base_image() -> Path:
    value = os.environ.get(BASE_IMAGE_ENV)
    if not value:
        pytest.skip(f"{BASE_IMAGE_ENV} is not set (path of a bootable base qcow2)")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"{BASE_IMAGE_ENV}={value}: no such file")
    for tool in ("qemu-system-x86_64", "qemu-img", "cloud-localds", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    return path


def test_base_and_web_are_idempotent(base_image: Path, tmp_path: Path) -> None:
    pubkey = make_key(tmp_path / "id_ed25519")
    seed = make_seed(tmp_path / "seed", "gi", pubkey)
    disk = make_overlay(base_image, tmp_path / "disk.qcow2")
    with booted(disk, seed, tmp_path / "id_ed25519", "gi", tmp_path) as vm:
        inventory = write_inventory(tmp_path / "inventory.json", vm)

        first = run_playbook(inventory, EXTRA_VARS)
        first_recap = recap(first.stdout)
        assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
        assert first_recap["failed"] == 0 and first_recap["unreachable"] == 0

        second = run_playbook(inventory, EXTRA_VARS)
        assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-2000:]
        second_recap = recap(second.stdout)
        print(f"first run: {first_recap}\nsecond run: {second_recap}")
        assert second_recap["changed"] == 0, (
            f"second run changed {second_recap['changed']} task(s): {changed_tasks(second.stdout)}"
        )

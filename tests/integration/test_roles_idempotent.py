"""The base, web and cache roles converge: a second run on the same VM changes nothing.

Boots a throwaway VM from the default base disk (built once per test session) with the
library's QEMU adapter, runs the family's playbooks (base.yml, then web.yml and cache.yml,
which bakes run on the base image) with hygiene switched off twice (with the
Ansible strategy bakes use, adapters/ansible.py), and asserts the second run reports changed=0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage.adapters import ansible, qemu
from goldenimage.progress import Reporter

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
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
PLAYBOOKS = ("base", "web", "cache")  # in one ansible-playbook run: one recap
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


def write_inventory(path: Path, vm: qemu.Vm) -> Path:
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
        **ansible.environment(),  # the strategy the bake runs the roles with
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
            *(str(REPO / "playbooks" / f"{p}.yml") for p in PLAYBOOKS),
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


def test_the_family_roles_are_idempotent(base_image: Path, tmp_path: Path) -> None:
    reporter = Reporter(quiet=True)
    accel = qemu.choose_accelerator("auto", base_image, base_image.parent.parent, reporter)
    with qemu.boot(base_image, tmp_path / "vm", accelerator=accel, cpus=2, memory=1024, timeout=600,
                   reporter=reporter) as vm:
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

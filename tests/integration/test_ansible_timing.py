"""The bake's Ansible environment, for real: the timing callback records every task (roles,
loops, handlers, failures, skips) under both strategies the bake may run with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage import timing
from goldenimage.adapters import ansible

pytestmark = pytest.mark.integration

PLAYBOOK = """
- name: Timed
  hosts: all
  gather_facts: false
  roles:
    - timed
  tasks:
    - name: Loop over two items
      ansible.builtin.command: "true {{ item }}"
      loop: [1, 2]
      changed_when: false
    - name: Fail but go on
      ansible.builtin.command: /bin/false
      ignore_errors: true
    - name: Never runs
      ansible.builtin.debug:
        msg: skipped
      when: false
"""


def write_project(tmp: Path) -> Path:
    role = tmp / "roles" / "timed"
    (role / "tasks").mkdir(parents=True)
    (role / "handlers").mkdir()
    (role / "tasks" / "main.yml").write_text(
        "- name: Sleep a little\n  ansible.builtin.command: sleep 0.3\n  notify: Say done\n")
    (role / "handlers" / "main.yml").write_text(
        "- name: Say done\n  ansible.builtin.debug:\n    msg: done\n")
    (tmp / "play.yml").write_text(PLAYBOOK)
    return tmp / "play.yml"


@pytest.mark.parametrize("strategy", ["linear", ansible.MITOGEN])
def test_every_task_is_timed(tmp_path: Path, strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDENIMAGE_ANSIBLE_STRATEGY", strategy)
    play = write_project(tmp_path)
    times = tmp_path / "times.jsonl"
    env = {**os.environ, **ansible.environment(times), "ANSIBLE_ROLES_PATH": str(tmp_path / "roles"),
           "ANSIBLE_NOCOLOR": "1"}
    assert env["ANSIBLE_STRATEGY"] == strategy
    res = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    tasks = timing.task_times(times.read_text().splitlines())
    got = [(t["role"], t["task"], t["status"]) for t in tasks]
    assert got == [
        ("timed", "Sleep a little", "changed"),
        ("", "Loop over two items", "ok"),  # one record for the whole loop
        ("", "Fail but go on", "failed"),
        ("", "Never runs", "skipped"),
        ("timed", "Say done", "ok"),  # the handler, at the end of the play
    ]
    assert tasks[0]["seconds"] >= 0.3 and all(t["host"] == "localhost" for t in tasks)


def test_strategy_falls_back_to_linear_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDENIMAGE_ANSIBLE_STRATEGY", "linear")
    env = ansible.environment()
    assert env["ANSIBLE_STRATEGY"] == "linear" and "ANSIBLE_STRATEGY_PLUGINS" not in env
    assert "GOLDENIMAGE_TASK_TIMES" not in env  # nothing is written without a file
    monkeypatch.delenv("GOLDENIMAGE_ANSIBLE_STRATEGY")
    env = ansible.environment()
    assert env["ANSIBLE_STRATEGY"] == ansible.MITOGEN  # installed with the project
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / f"{ansible.MITOGEN}.py").is_file()

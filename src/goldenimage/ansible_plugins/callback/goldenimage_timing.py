"""Ansible callback: how long each task took on each host, one JSON line per result.

Enabled by the bake through the environment of Packer's Ansible provisioner:
ANSIBLE_CALLBACK_PLUGINS=<this directory>, ANSIBLE_CALLBACKS_ENABLED=goldenimage_timing,
GOLDENIMAGE_TASK_TIMES=<file>. Each line: {"task", "role", "host", "status", "start",
"seconds"} (start: Unix time). Handlers count as tasks. Nothing is written without the file.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: goldenimage_timing
type: aggregate
short_description: per-task wall time as JSON lines (for goldenimage bakes)
description:
  - Appends one JSON line per task result to the file named by GOLDENIMAGE_TASK_TIMES.
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "goldenimage_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("GOLDENIMAGE_TASK_TIMES", "")
        self._started: dict[str, tuple[float, str, str]] = {}  # task uuid -> (start, name, role)

    def _start(self, task: Any) -> None:
        role = task._role.get_name(include_role_fqcn=False) if getattr(task, "_role", None) else ""
        self._started[task._uuid] = (time.time(), str(task.name or task.action).strip(), role)

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._start(task)

    def _record(self, result: Any, status: str) -> None:
        if not self._path:
            return
        start, name, role = self._started.get(result._task._uuid, (time.time(), str(result._task.name), ""))
        line = {"task": name, "role": role, "host": result._host.get_name(), "status": status,
                "start": round(start, 3), "seconds": round(time.time() - start, 3)}
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

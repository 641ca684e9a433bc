"""Where a build's time went: Packer's steps and Ansible's tasks, from their raw records.

Pure: the bake hands over the lines it collected (the Ansible callback's JSON lines and the
times at which Packer announced each step) and keeps the summary with the image's manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

SLOWEST = 10
STEP_CHARS = 100


def task_times(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The Ansible callback's records (one JSON object a line), in run order; a torn or
    foreign line is skipped (the build may have been cut off mid-write)."""
    out: list[dict[str, Any]] = []
    for ln in lines:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("seconds"), int | float) and rec.get("task"):
            out.append({"task": str(rec["task"]), "role": str(rec.get("role") or ""),
                        "host": str(rec.get("host") or ""), "status": str(rec.get("status") or ""),
                        "seconds": round(float(rec["seconds"]), 1)})
    return out


def step_times(marks: list[tuple[float, str]], end: float) -> list[dict[str, Any]]:
    """Packer's steps from the times they were announced: each lasts until the next one
    (the last until `end`)."""
    steps: list[dict[str, Any]] = []
    for i, (at, name) in enumerate(marks):
        until = marks[i + 1][0] if i + 1 < len(marks) else end
        short = name if len(name) <= STEP_CHARS else name[:STEP_CHARS - 1] + "…"  # e.g. Ansible's command line
        steps.append({"step": short, "seconds": round(max(0.0, until - at), 1)})
    return steps


def label(task: dict[str, Any]) -> str:
    return f"{task['role']} : {task['task']}" if task.get("role") else str(task["task"])


def summary(tasks: list[dict[str, Any]], steps: list[dict[str, Any]], top: int = SLOWEST) -> dict[str, Any]:
    """The document kept with the manifest: every step and task, totals, and the slowest tasks."""
    ranked = sorted(tasks, key=lambda t: (-t["seconds"], label(t)))
    return {
        "packer_steps": steps,
        "ansible_tasks": tasks,
        "ansible_seconds": round(sum(t["seconds"] for t in tasks), 1),
        "slowest_tasks": [{"task": label(t), "seconds": t["seconds"]} for t in ranked[:top]],
    }


def human(timings: dict[str, Any], top: int = 5) -> list[str]:
    """A few lines for the end of a bake or `invoke images --image-id`: a `summary`, or a
    bake's result fields (`slowest_tasks`, `ansible_task_count`, `ansible_seconds`)."""
    rows = timings.get("slowest_tasks") or []
    if not rows:
        return []
    width = max(len(r["task"]) for r in rows[:top])
    count = timings.get("ansible_task_count")  # a bake's result keeps the count, not the tasks
    count = len(timings.get("ansible_tasks") or []) if count is None else count
    lines = [f"slowest tasks (of {count}, "
             f"{timings.get('ansible_seconds', 0):.0f}s in Ansible):"]
    lines += [f"  {r['seconds']:>6.1f}s  {r['task']:<{width}}" for r in rows[:top]]
    return lines

"""Where a build's time went: Packer's steps and Ansible's tasks, from their raw records.

Pure: the bake hands over the lines it collected (the Ansible callback's JSON lines and the
times at which Packer announced each step) and keeps the summary with the image's manifest.
"""

from __future__ import annotations

import json
import re
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
    bake's result fields (`slowest_tasks`, `ansible_task_count`, `ansible_seconds`); then the
    slowest units of the build and the validation boot."""
    boots = [ln for name, boot in sorted((timings.get("boot") or {}).items())
             for ln in boot_lines(name, boot, top)]
    rows = timings.get("slowest_tasks") or []
    if not rows:
        return boots
    width = max(len(r["task"]) for r in rows[:top])
    count = timings.get("ansible_task_count")  # a bake's result keeps the count, not the tasks
    count = len(timings.get("ansible_tasks") or []) if count is None else count
    lines = [f"slowest tasks (of {count}, "
             f"{timings.get('ansible_seconds', 0):.0f}s in Ansible):"]
    lines += [f"  {r['seconds']:>6.1f}s  {r['task']:<{width}}" for r in rows[:top]]
    return lines + boots


# -- the guest's own view of a boot (systemd-analyze) ----------------------------------------
# One shell command, run in the guest once its boot has finished, for the build VM (the
# first step of packer/build.pkr.hcl, which holds the same text) and the validation VM.
BOOT_ANALYSIS = ("timeout 120 systemctl is-system-running --wait >/dev/null 2>&1; "
                 "systemd-analyze time; echo @@chain; systemd-analyze critical-chain ssh.service; "
                 "echo @@blame; systemd-analyze blame")
SLOWEST_UNITS = 10
_DURATION = re.compile(r"(?:(\d+)min\s*)?(?:(\d+(?:\.\d+)?)(ms|s|us))?")
_TIME_PART = re.compile(r"((?:\d+min\s*)?\d+(?:\.\d+)?(?:ms|s|us)|\d+min) \((\w+)\)")


def seconds(text: str) -> float | None:
    """systemd's duration text ("1min 2.503s", "422ms", "17.792s") in seconds."""
    text = text.strip()
    m = _DURATION.fullmatch(text)
    if not text or not m or not (m[1] or m[2]):
        return None
    total = 60.0 * int(m[1] or 0)
    if m[2]:
        total += float(m[2]) * {"ms": 1e-3, "s": 1.0, "us": 1e-6}[m[3]]
    return round(total, 3)


def boot_analysis(text: str, top: int = SLOWEST_UNITS) -> dict[str, Any]:
    """The guest's output of BOOT_ANALYSIS as data: the phases of `systemd-analyze time`
    (kernel, initrd, userspace, total), sshd's critical chain (its lines) and the `top`
    slowest units of `systemd-analyze blame`. Parts the guest could not give are empty."""
    head, _, rest = text.partition("@@chain")
    chain_text, _, blame_text = rest.partition("@@blame")
    phases: dict[str, float] = {}
    for line in head.splitlines():
        if line.startswith("Startup finished in"):
            for part, name in _TIME_PART.findall(line):
                if (value := seconds(part)) is not None:
                    phases[name] = value
            if (total := seconds(line.rsplit("=", 1)[-1])) is not None:
                phases["total"] = total
    chain = [ln.rstrip() for ln in chain_text.splitlines() if ln.strip() and not ln.startswith("The time ")]
    units: list[dict[str, Any]] = []
    for line in blame_text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        value = seconds(" ".join(parts[:-1]))
        if value is not None:
            units.append({"unit": parts[-1], "seconds": value})
    units.sort(key=lambda u: (-u["seconds"], u["unit"]))
    return {"phases": phases, "critical_chain": chain, "slowest_units": units[:top]}


def boot_lines(name: str, boot: dict[str, Any], top: int = 5) -> list[str]:
    """A few lines for one boot (build or validation) of `timings["boot"]`."""
    phases = boot.get("phases") or {}
    if not phases and not boot.get("slowest_units"):
        return []
    outside = f"; SSH after {boot['ssh_seconds']:.0f}s" if boot.get("ssh_seconds") is not None else ""
    how = f" ({boot['mode']})" if boot.get("mode") else ""
    shown = " + ".join(f"{v:.1f}s {k}" for k, v in phases.items() if k != "total")
    lines = [f"{name} boot{how}: {shown or '?'}{outside}; slowest units:"]
    lines += [f"  {u['seconds']:>6.1f}s  {u['unit']}" for u in (boot.get("slowest_units") or [])[:top]]
    return lines

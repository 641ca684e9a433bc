"""Where a build's time went: the pure summary of Ansible's and Packer's records."""

from __future__ import annotations

import json

from goldenimage import timing


def rec(task: str, seconds: float, role: str = "base", status: str = "ok") -> str:
    return json.dumps({"task": task, "role": role, "host": "default", "status": status, "start": 1.0,
                       "seconds": seconds})


def test_task_times_keeps_run_order_and_skips_torn_or_foreign_lines() -> None:
    lines = [rec("Install", 40.04), "", '{"task": "cut off', "not json", json.dumps(["a list"]),
             json.dumps({"task": "no seconds"}), rec("Write", 0.26, role="", status="changed")]
    assert timing.task_times(lines) == [
        {"task": "Install", "role": "base", "host": "default", "status": "ok", "seconds": 40.0},
        {"task": "Write", "role": "", "host": "default", "status": "changed", "seconds": 0.3},
    ]


def test_step_times_last_until_the_next_step_or_the_end() -> None:
    marks = [(100.0, "Starting VM"), (130.5, "Provisioning with Ansible..."), (300.0, "Converting")]
    assert timing.step_times(marks, end=320.25) == [
        {"step": "Starting VM", "seconds": 30.5},
        {"step": "Provisioning with Ansible...", "seconds": 169.5},
        {"step": "Converting", "seconds": 20.2},
    ]
    assert timing.step_times([], end=5.0) == []
    long = "Executing Ansible: ansible-playbook " + "-e x=y " * 40
    [step] = timing.step_times([(1.0, long)], end=2.0)
    assert len(step["step"]) == timing.STEP_CHARS and step["step"].startswith("Executing Ansible: ")
    # a clock step backwards never gives a negative duration
    assert timing.step_times([(10.0, "a")], end=9.0) == [{"step": "a", "seconds": 0.0}]


def test_summary_ranks_the_slowest_tasks_with_their_role() -> None:
    tasks = timing.task_times([rec(f"t{i}", float(i)) for i in range(15)] + [rec("Gathering Facts", 7.0, role="")])
    doc = timing.summary(tasks, [{"step": "x", "seconds": 1.0}])
    assert doc["ansible_seconds"] == sum(range(15)) + 7.0
    assert len(doc["slowest_tasks"]) == timing.SLOWEST
    assert doc["slowest_tasks"][:3] == [{"task": "base : t14", "seconds": 14.0},
                                        {"task": "base : t13", "seconds": 13.0},
                                        {"task": "base : t12", "seconds": 12.0}]
    # ties are ordered by name, so the same records always give the same summary
    assert [t["task"] for t in doc["slowest_tasks"][7:9]] == ["Gathering Facts", "base : t7"]
    assert doc["packer_steps"] == [{"step": "x", "seconds": 1.0}]
    assert doc["ansible_tasks"] == tasks


def test_human_lists_the_slowest_tasks_or_nothing() -> None:
    doc = timing.summary(timing.task_times([rec("Install nginx", 25.1, role="web"), rec("Write", 0.2)]), [])
    lines = timing.human(doc)
    assert lines[0] == "slowest tasks (of 2, 25s in Ansible):"
    assert lines[1].split() == ["25.1s", "web", ":", "Install", "nginx"]
    assert timing.human({}) == []
    assert timing.human(timing.summary([], [])) == []

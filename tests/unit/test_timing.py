"""Where a build's time went: the pure summary of Ansible's and Packer's records."""

from __future__ import annotations

import json
from pathlib import Path

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


# -- the guest's own account of a boot -------------------------------------------------------
ANALYSIS = """\
Startup finished in 5.197s (kernel) + 1min 6.899s (userspace) = 1min 12.096s
graphical.target reached after 34.707s in userspace.
@@chain
The time when unit became active or started is printed after the "@" character.
The time the unit took to start is printed after the "+" character.

ssh.service +422ms
\u2514\u2500basic.target @33.163s
  \u2514\u2500cloud-init.service @15.328s +17.792s
@@blame
17.792s cloud-init.service
1min 2.5s slow.service
 422ms ssh.service
   88us tiny.mount
garbage line
"""


def test_seconds_reads_systemd_durations() -> None:
    assert timing.seconds("1min 2.503s") == 62.503
    assert timing.seconds("422ms") == 0.422
    assert timing.seconds("2min") == 120.0
    assert timing.seconds("17.792s") == 17.792
    assert timing.seconds("") is None
    assert timing.seconds("cloud-init.service") is None


def test_boot_analysis_reads_phases_chain_and_slowest_units() -> None:
    doc = timing.boot_analysis(ANALYSIS, top=3)
    assert doc["phases"] == {"kernel": 5.197, "userspace": 66.899, "total": 72.096}
    assert doc["critical_chain"] == ["ssh.service +422ms", "\u2514\u2500basic.target @33.163s",
                                     "  \u2514\u2500cloud-init.service @15.328s +17.792s"]
    assert doc["slowest_units"] == [{"unit": "slow.service", "seconds": 62.5},
                                    {"unit": "cloud-init.service", "seconds": 17.792},
                                    {"unit": "ssh.service", "seconds": 0.422}]


def test_boot_analysis_of_a_guest_that_could_not_answer_is_empty() -> None:
    """`systemd-analyze` failing ("Bootup is not yet finished") leaves empty parts."""
    assert timing.boot_analysis("Bootup is not yet finished.\n@@chain\n@@blame\n") == {
        "phases": {}, "critical_chain": [], "slowest_units": []}
    assert timing.boot_analysis("") == {"phases": {}, "critical_chain": [], "slowest_units": []}


def test_human_shows_the_slowest_units_of_each_boot() -> None:
    boot = {**timing.boot_analysis(ANALYSIS), "mode": "direct kernel boot", "ssh_seconds": 19.6}
    lines = timing.human({"slowest_tasks": [], "boot": {"build": boot, "validation": {}}}, top=2)
    assert lines == ["build boot (direct kernel boot): 5.2s kernel + 66.9s userspace; SSH after 20s; slowest units:",
                     "    62.5s  slow.service", "    17.8s  cloud-init.service"]


def test_the_build_template_runs_the_same_boot_analysis() -> None:
    """packer/build.pkr.hcl holds BOOT_ANALYSIS's text (HCL cannot import it)."""
    hcl = (Path(__file__).resolve().parents[2] / "packer" / "build.pkr.hcl").read_text()
    assert f"sudo sh -c '{timing.BOOT_ANALYSIS}' > /dev/shm/goldenimage-boot.txt" in hcl

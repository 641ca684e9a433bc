"""The schedulers in contrib/: the systemd units pass `systemd-analyze verify`; the GitHub
workflow parses and every `invoke` it runs is a task of tasks.py with options it has."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from goldenimage.settings import load_environment
from tests.conftest import ROOT

SYSTEMD = ROOT / "contrib" / "systemd"
WORKFLOW = ROOT / "contrib" / "github" / "nightly.yml"


def _verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True,
                          timeout=60)


def _installed(tmp_path: Path, edit: str = "") -> list[Path]:
    """The units as installed for this checkout: /opt/goldenimage is where the checkout is."""
    service = tmp_path / "goldenimage-nightly.service"
    service.write_text((SYSTEMD / service.name).read_text().replace("/opt/goldenimage", str(ROOT)) + edit)
    timer = tmp_path / "goldenimage-nightly.timer"
    shutil.copy2(SYSTEMD / timer.name, timer)
    return [timer, service]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt package systemd; scripts/bootstrap installs it)")
def test_systemd_units_verify(tmp_path: Path) -> None:
    assert (ROOT / ".venv" / "bin" / "invoke").is_file(), "run scripts/bootstrap first"
    res = _verify(*_installed(tmp_path))
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    timer = (SYSTEMD / "goldenimage-nightly.timer").read_text()
    assert "\nPersistent=true\n" in timer and "\nUnit=goldenimage-nightly.service\n" in timer
    assert "ExecStart=/opt/goldenimage/.venv/bin/invoke nightly --env local\n" in \
        (SYSTEMD / "goldenimage-nightly.service").read_text()
    # the check can fail: a unit naming a program that is not there does not verify
    (tmp_path / "bad").mkdir()
    bad = _verify(*_installed(tmp_path / "bad", "ExecStartPost=/nonexistent/notify\n"))
    assert bad.returncode != 0 and "/nonexistent/notify" in bad.stderr


def _invocations(workflow: dict[str, object]) -> list[list[str]]:
    runs: list[str] = []
    for job in workflow["jobs"].values():  # type: ignore[attr-defined]
        runs += [step["run"] for step in job["steps"] if "run" in step]
    calls = []
    for script in runs:
        script = script.replace("\\\n", " ")
        for line in script.splitlines():
            if re.search(r"(^|[\s/])invoke\s", line):
                words = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", line))
                at = next(i for i, w in enumerate(words) if w.endswith("invoke"))
                calls.append(words[at + 1:])
    return calls


def test_the_workflow_parses_and_calls_tasks_that_exist() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert on["schedule"][0]["cron"] == "17 2 * * *"
    jobs = doc["jobs"]
    assert set(jobs) == {"ancestors", "leaf", "site"}
    assert jobs["leaf"]["needs"] == "ancestors" and jobs["leaf"]["strategy"]["fail-fast"] is False
    assert set(jobs["site"]["needs"]) == {"ancestors", "leaf"}
    uses = [s.get("uses", "") for job in jobs.values() for s in job["steps"]]
    assert not any(u.startswith("actions/cache@") for u in uses)  # the bucket holds the state, not a runner cache
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    calls = _invocations(doc)
    assert calls and calls[0][0] == "nightly"
    # the ancestors job bakes the images others are built on, the matrix every other image
    env = load_environment("local", ROOT)
    parents = {p for p in env.parents.values() if p}
    ancestors = [c[c.index("--image") + 1] for c in calls if c[0] == "nightly" and "X" not in c]
    assert set(ancestors) == parents, (ancestors, parents)
    assert set(jobs["leaf"]["strategy"]["matrix"]["image"]) == set(env.settings.images) - parents

    from tasks import ns

    for call in calls:
        name, args = call[0], call[1:]
        assert name in ns.task_names, f"the workflow runs `invoke {name}`, which tasks.py does not have"
        known = {n for a in ns[name].get_arguments() for n in a.names}
        for flag in (a for a in args if a.startswith("--")):
            assert flag[2:].split("=")[0] in known, f"`invoke {name}` has no option {flag}"

"""The default environment of every task comes from Invoke's configuration: tasks.py's
`ns.configure`, overridden by an `invoke.yaml` beside it or `INVOKE_*` variables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import ROOT, run_invoke


def test_default_env_from_config_yaml_and_environment(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("tasks.py", "inventories", "packer", "playbooks"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, project / name)  # type: ignore[operator]
    home = tmp_path / "home"

    doc = json.loads(run_invoke("images", "--json", root=project, home=home).stdout)
    assert doc["env"] == "local"  # ns.configure
    assert json.loads(run_invoke("sandbox.status", "--json", root=project, home=home).stdout)["env"] == "sandbox"

    (project / "invoke.yaml").write_text("goldenimage:\n  env: nope\n")
    res = run_invoke("images", root=project, home=home)
    assert res.returncode == 2 and "unknown environment 'nope'" in res.stderr

    res = run_invoke("images", root=project, home=home, env={"INVOKE_GOLDENIMAGE_ENV": "gone"})
    assert res.returncode == 2 and "unknown environment 'gone'" in res.stderr

    doc = json.loads(run_invoke("images", "--env", "local", "--json", root=project, home=home).stdout)
    assert doc["env"] == "local"  # the command line wins

"""How Ansible runs during a build: the strategy and the per-task timing callback.

Both reach Packer's Ansible provisioner through the environment it inherits, and the roles'
own tests use the same environment, so what is tested is how images are built.

Mitogen's strategy (PyPI `mitogen`) keeps one Python interpreter in the guest for the whole
play instead of starting one per task: under software emulation a task's own work is often
far shorter than that start-up. Where `ansible_mitogen` is not importable, Ansible's own
`linear` strategy runs; GOLDENIMAGE_ANSIBLE_STRATEGY=linear chooses it explicitly.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CALLBACKS = Path(__file__).resolve().parent.parent / "ansible_plugins" / "callback"
TIMING_CALLBACK = "goldenimage_timing"
MITOGEN = "mitogen_linear"


def strategy_plugins() -> Path | None:
    """The directory of Mitogen's strategy plugins, if Mitogen is installed and wanted."""
    if os.environ.get("GOLDENIMAGE_ANSIBLE_STRATEGY", MITOGEN) != MITOGEN:
        return None
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugins = Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"
    return plugins if (plugins / f"{MITOGEN}.py").is_file() else None


def strategy() -> str:
    return MITOGEN if strategy_plugins() else "linear"


def environment(task_times: Path | None = None) -> dict[str, str]:
    """Variables for an ansible-playbook run (or a Packer run that starts one)."""
    env = {"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": TIMING_CALLBACK}
    if task_times is not None:
        env["GOLDENIMAGE_TASK_TIMES"] = str(task_times)
    plugins = strategy_plugins()
    if plugins:
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(plugins)
        env["ANSIBLE_STRATEGY"] = MITOGEN
    else:
        env["ANSIBLE_STRATEGY"] = "linear"
    return env

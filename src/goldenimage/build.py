"""What every target's build shares: the host tools, the new image's identity, the Packer
run in a workspace, and the build's variables.

The targets (`targets.local`, `aws.target`) build with these; the bake pipeline
(`bake`) decides whether to build at all.
"""

from __future__ import annotations

import datetime as dt
import functools
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, hostsetup, requirements, timing
from .adapters import galaxy, packer, proc, qemu
from .errors import BuildFailed
from .fsutil import atomic_write_json
from .models import ImageRecord
from .progress import Reporter
from .settings import Environment

BUILD_USER = "gi"
TIMINGS = "timings.json"  # beside build.log: where the build's time went (goldenimage.timing)
BOOT_ANALYSIS = "build-boot.txt"  # in the workspace: the build VM's systemd-analyze (packer/build.pkr.hcl)
BAKE_TOOLS = ("qemu-system-x86_64", "qemu-img", "genisoimage", "ssh", "ssh-keygen")  # packages: hostsetup.TOOLS


@dataclass(frozen=True)
class Tools:
    packer: packer.Packer
    ansible: str
    qemu: str

    def versions(self) -> dict[str, str]:
        return {"packer": self.packer.version_text, "ansible-core": self.ansible, "qemu": self.qemu,
                "goldenimage": __version__}


@functools.cache
def detect_tools(*, local: bool = True) -> Tools:
    """The host tools of a bake; an AMI bake (`local=False`) boots nothing here. Asked once
    per process: a family's bakes share the answer."""
    for tool in BAKE_TOOLS if local else ("ssh", "ssh-keygen"):
        proc.which(tool, hostsetup.TOOLS[tool][0])
    from ansible.release import __version__ as ansible_version

    return Tools(packer.Packer.detect(), ansible_version, qemu.qemu_version() if local else "")


def fingerprint_extra(base_identity: str, packer_version: str, ansible_version: str) -> dict[str, str]:
    """The fingerprint inputs that are not files: the base identity and the tool versions."""
    return {"base:image": base_identity, "tool:packer": packer_version, "tool:ansible-core": ansible_version}


def parent_inputs(parent: ImageRecord | None) -> dict[str, str]:
    """The fingerprint inputs of a child image's parent: a new parent image (even of the same
    fingerprint) means a new child."""
    if parent is None:
        return {}
    return {"parent:image": parent.id, "parent:fingerprint": parent.fingerprint}


def ancestry(parent: ImageRecord | None, channel: str | None) -> dict[str, Any] | None:
    """What a child's manifest, catalog entry and AMI tags record of its parent."""
    if parent is None:
        return None
    return {"id": parent.id, "name": parent.name, "fingerprint": parent.fingerprint, "channel": channel}


def git_state(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


ID_WILDCARD = "????????-??????-????????"  # what follows the name in `NewImage.id`, as EC2 name wildcards


@dataclass(frozen=True)
class NewImage:
    """The image a bake is making: what the build stamps into it and validation expects."""

    name: str
    fingerprint: str
    created: dt.datetime

    @classmethod
    def start(cls, name: str, fingerprint: str) -> NewImage:
        return cls(name, fingerprint, now_utc())

    @property
    def id(self) -> str:
        return f"{self.name}-{self.created:%Y%m%d-%H%M%S}-{self.fingerprint[:8]}"  # ID_WILDCARD after the name

    @property
    def build_time(self) -> str:
        return self.created.isoformat().replace("+00:00", "Z")

    def facts(self) -> dict[str, str]:
        return {"image_name": self.name, "image_id": self.id, "fingerprint": self.fingerprint,
                "build_time": self.build_time}


def packer_build(env: Environment, img: NewImage, tools: Tools, ws: Path, source: str, reporter: Reporter,
                 *, grace: float = 90, extra_vars: dict[str, Any] | None = None,
                 boot: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
    """Stage the templates and the inventory in `ws`, write the build's variables (`values`
    are the source's own; `extra_vars` are more playbook variables, named `goldenimage_*`
    like the image's facts), then `packer validate` and `packer build -only=source`;
    Packer's log is `ws/image/build.log`. Returns where the build's time went (`goldenimage.timing`,
    with the build VM's own account of its boot under `boot.build`, merged with `boot`: how it
    was started), also written to `ws/image/timings.json`, even when the build fails."""
    staged = tools.packer.stage(env.root / "packer", ws / "packer")
    shutil.copytree(env.directory, ws / "inventory")
    atomic_write_json(ws / "extra-vars.json", {f"goldenimage_{k}": v for k, v in
                                               {**img.facts(), **(extra_vars or {})}.items()})
    var_file = ws / "build.pkrvars.json"
    atomic_write_json(var_file, common_packer_vars(env, img.name, ws, image_id=img.id,
                                                   fingerprint=img.fingerprint, **values))
    tools.packer.validate(staged, var_file, source, rel_to=env.root, work=ws)
    steps: list[tuple[float, str]] = []
    try:
        tools.packer.build(staged, var_file, source, reporter=reporter, work=ws,
                           log=ws / "image" / "build.log", grace=grace, steps=steps)
    except BuildFailed as err:
        said = qemu.console_tail(ws / "build-serial.log") if "waiting for SSH" in err.message else ""
        if said:  # a build VM that never answered: what its console shows is the first clue
            err.message += f" (the build VM's console last showed: {said!r})"
        raise
    finally:
        times = ws / packer.TASK_TIMES
        tasks = timing.task_times(times.read_text().splitlines() if times.is_file() else [])
        timings = timing.summary(tasks, timing.step_times(steps, time.time()))
        analysis = ws / BOOT_ANALYSIS
        if analysis.is_file():
            waited = [st["seconds"] for st in timings["packer_steps"] if st["step"].startswith("Waiting for SSH")]
            timings["boot"] = {"build": {**(boot or {}), **({"ssh_seconds": waited[0]} if waited else {}),
                                         **timing.boot_analysis(analysis.read_text(errors="replace"))}}
        atomic_write_json(ws / "image" / TIMINGS, timings)
    return timings


def common_packer_vars(env: Environment, name: str, ws: Path, **values: Any) -> dict[str, Any]:
    """The variables of every build (both sources) for workspace `ws`; `values` add or override."""
    spec, q = env.image(name), env.settings.qemu
    reqs = requirements.load(env.root)  # installed by the bake's preflight
    doc: dict[str, Any] = {
        "image_name": name, "playbook": str(env.root / spec.playbook),
        "inventory_directory": str(ws / "inventory"), "groups": spec.groups,
        "extra_vars_file": str(ws / "extra-vars.json"),
        "roles_path": galaxy.roles_path(env.root, reqs), "collections_path": galaxy.collections_path(env.root, reqs),
        "manifest_path": str(ws / "packer-manifest.json"), "ssh_username": BUILD_USER,
        "output_directory": str(ws / "output"), "disk_size": spec.disk_size,
        "cpus": q.cpus, "memory": q.memory, "ssh_timeout": f"{q.boot_timeout}s",
        "serial_log": str(ws / "build-serial.log"), "boot_analysis_file": str(ws / BOOT_ANALYSIS),
    }
    doc.update(values)
    return doc

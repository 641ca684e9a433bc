"""Packer: stage the HCL2 templates for the installed version, validate, build.

`packer/` is split by block kind. `plugins.pkr.hcl` holds `required_plugins`, which Packer
1.7+ needs and 1.6.x rejects, so for Packer < 1.7 the templates are staged into a private
directory without it. Settings only newer Packer knows sit between the comment lines
`# packer >= 1.7 only` and `# end packer >= 1.7` and are blanked out of the staged copy for
older Packer (blanked, not removed: line numbers in Packer's messages stay true). Messages
that name a staged file are mapped back to `packer/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BuildFailed, TemplateError
from ..fsutil import short_tempdir
from ..progress import Reporter
from . import ansible, proc

PLUGINS_FILE = "plugins.pkr.hcl"
TASK_TIMES = "task-times.jsonl"  # written in the work directory by the timing callback
ONLY_NEW_PACKER = (PLUGINS_FILE,)  # files Packer < 1.7 must not see
NEW_PACKER = (1, 7, 0)
_NEW_BEGIN = re.compile(r"^\s*# packer >= 1\.7 only")
_NEW_END = re.compile(r"^\s*# end packer >= 1\.7")
_ON_LINE = re.compile(r"^\s*on (\S+) line (\d+)")
_STAGE = re.compile(r"^==> [\w.-]+: (.*)$")
_MSG = re.compile(r"^\s{4}[\w.-]+: (.*)$")


@dataclass(frozen=True)
class Packer:
    path: str
    version: tuple[int, int, int]

    @classmethod
    def detect(cls) -> Packer:
        from .hostcache import version_output

        path = proc.which("packer", "Debian's `packer` package")
        out = version_output([path, "version"], what="packer version")
        m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
        if not m:
            raise BuildFailed(f"cannot read the Packer version from {out.strip()!r}")
        return cls(path, (int(m[1]), int(m[2]), int(m[3])))

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def stage(self, templates: Path, dest: Path) -> Path:
        """Copy the templates this Packer understands into `dest`."""
        dest.mkdir(parents=True, exist_ok=True)
        old = self.version < NEW_PACKER
        for f in sorted(templates.glob("*.pkr.hcl")):
            if old and f.name in ONLY_NEW_PACKER:
                continue
            shutil.copy2(f, dest / f.name)
            if old:
                text = f.read_text()
                kept = for_old_packer(text, f.name)
                if kept != text:
                    (dest / f.name).write_text(kept)
        return dest

    @contextlib.contextmanager
    def env(self, work: Path) -> Iterator[dict[str, str]]:
        """The environment of one Packer run. Its TMPDIR is a short private directory:
        Packer talks to its plugins over unix sockets there, and a socket path longer than
        107 bytes fails (`bind: invalid argument`, then a Packer crash)."""
        venv_bin = str(Path(sys.executable).parent)
        with short_tempdir("gi-packer-") as tmp:
            yield {
                **os.environ,
                "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
                "PACKER_CACHE_DIR": str(work / "packer_cache"),
                "TMPDIR": str(tmp),
                "CHECKPOINT_DISABLE": "1",
                "PACKER_NO_COLOR": "1",
                # Packer's Ansible provisioner inherits these: strategy and per-task times
                **ansible.environment(work / TASK_TIMES),
            }

    def _args(self, staged: Path, var_file: Path, only: str) -> list[str]:
        return [f"-only={only}", f"-var-file={var_file}", str(staged)]

    def validate(self, staged: Path, var_file: Path, only: str, *, rel_to: Path, work: Path) -> None:
        with self.env(work) as env:
            res = proc.run([self.path, "validate", *self._args(staged, var_file, only)], env=env, cwd=work)
        if res.returncode != 0:
            raise TemplateError(f"packer validate: {summarise_hcl_error(res.lines, staged, rel_to)}")

    def build(
        self, staged: Path, var_file: Path, only: str, *, reporter: Reporter, work: Path,
        log: Path, on_line: Callable[[str], None] | None = None, grace: float = 90,
        steps: list[tuple[float, str]] | None = None,
    ) -> list[str]:
        """Run the build; on Ctrl-C Packer gets SIGINT and `grace` seconds to clean up.
        `steps` receives (wall time, step) as Packer announces each of its steps."""
        argv = [self.path, "build", "-color=false", "-on-error=cleanup", *self._args(staged, var_file, only)]
        with self.env(work) as env:
            def line(ln: str) -> None:
                if steps is not None and (m := _STAGE.match(ln)):
                    steps.append((time.time(), m[1].strip()))
                step = condense(ln)
                if step:
                    reporter.step(step)
                if on_line:
                    on_line(ln)
            # Packer writes `log` itself: killed outright, we take its pipe with us, but
            # it must live on to clean up (it gets SIGTERM: proc's PDEATHSIG)
            res = proc.run(argv, env=env, cwd=work, on_line=line, log=log,
                           stop_signal=signal.SIGINT, grace=grace)
        if res.returncode != 0:
            crash = work / "crash.log"
            if crash.is_file():  # Packer writes its panic there; keep it with the build log
                with log.open("a") as fh:
                    fh.write("\n--- crash.log ---\n" + crash.read_text(errors="replace"))
            raise BuildFailed(f"packer build failed: {summarise_build_error(res.lines)}")
        return res.lines


def for_old_packer(text: str, name: str) -> str:
    """`text` with its `# packer >= 1.7 only` regions blanked (line count unchanged)."""
    out: list[str] = []
    inside = False
    for number, ln in enumerate(text.splitlines(keepends=True), 1):
        if _NEW_BEGIN.match(ln):
            if inside:
                raise TemplateError(f"packer/{name}:{number}: a `# packer >= 1.7 only` region inside another")
            inside = True
        if inside:
            out.append("\n" if ln.endswith("\n") else "")
            if _NEW_END.match(ln):
                inside = False
        else:
            if _NEW_END.match(ln):
                raise TemplateError(f"packer/{name}:{number}: `# end packer >= 1.7` without its start")
            out.append(ln)
    if inside:
        raise TemplateError(f"packer/{name}: a `# packer >= 1.7 only` region is never ended")
    return "".join(out)


def condense(line: str) -> str:
    """The part of a Packer output line worth showing as the current step."""
    m = _STAGE.match(line)
    if m:
        return m[1]
    m = _MSG.match(line)
    if m:
        text = m[1].strip()
        if text.startswith(("TASK [", "PLAY [", "RUNNING HANDLER [")):
            return text.rstrip("* ").strip()
        if text.startswith(("fatal:", "failed:")):
            return text[:160]
    return ""


def summarise_hcl_error(lines: list[str], staged: Path, rel_to: Path) -> str:
    """First error of `packer validate`, with its file:line mapped to the repository."""
    msg, where, detail = "", "", ""
    for i, ln in enumerate(lines):
        if ln.startswith("Error:") and not msg:
            msg = ln[len("Error:"):].strip()
            for nxt in lines[i + 1:i + 12]:
                m = _ON_LINE.match(nxt)
                if m and not where:
                    where = f"{_map_path(m[1], staged, rel_to)}:{m[2]}"
                elif nxt.strip() and not nxt.startswith(("  ", "Error:")) and not detail:
                    detail = nxt.strip()
                if nxt.startswith("Error:"):
                    break
    if not msg:
        tail = [ln.strip() for ln in lines if ln.strip()]
        return tail[-1] if tail else "unknown error"
    parts = [p for p in (where, msg, detail) if p]
    return ": ".join(parts)


def _map_path(name: str, staged: Path, rel_to: Path) -> str:
    p = Path(name)
    if not p.is_absolute():
        p = staged / p
    try:
        return str(Path("packer") / p.relative_to(staged))
    except ValueError:
        try:
            return str(p.relative_to(rel_to))
        except ValueError:
            return name


# A role read a fact the play did not gather (Ansible says "'ansible_facts' is undefined", or,
# inside include_vars' first_found, only "Error while resolving value for '_raw_params'").
_FACT_NAMES = ("os_family|distribution|distribution_major_version|distribution_release|distribution_version|"
               "architecture|pkg_mgr|service_mgr|python|python_version|hostname|fqdn|default_ipv4|"
               "memtotal_mb|processor_vcpus|kernel|lsb|system|machine|userspace_architecture")
_UNDEFINED_FACT = re.compile(rf"'ansible_\w+' is undefined|'ansible_facts' is undefined|"
                             rf"has no attribute '({_FACT_NAMES})'")
FACTS_HINT = (" -- a fact is undefined: the play gathers no facts; set `gather_facts: true` and "
              "`gather_subset: [min]` in the image's playbook (README: Bring your own roles)")


def summarise_build_error(lines: list[str]) -> str:
    """Name the failing Ansible task and host, Packer's own error, or its crash."""
    if any("PACKER CRASH" in ln for ln in lines):
        panic = next((ln.strip() for ln in lines if ln.strip().startswith("panic:")), "")
        return f"packer crashed{': ' + panic if panic else ''}"
    task = ""
    for ln in lines:
        text = _MSG.match(ln)
        body = text[1].strip() if text else ln.strip()
        if body.startswith("TASK ["):
            task = body[6:body.index("]")] if "]" in body else body
        m = re.match(r"(fatal|failed): \[([^\]]+)\]:? .*?=> (\{.*\})\s*$", body)
        if m:
            reason = m[3]
            try:
                doc: dict[str, Any] = json.loads(reason)
                reason = str(doc.get("msg") or doc.get("stderr") or reason)
            except json.JSONDecodeError:
                pass
            hint = FACTS_HINT if _UNDEFINED_FACT.search(reason) else ""
            reason = " ".join(reason.split())[:300]
            return f"ansible task [{task}] failed on host {m[2]}: {reason}{hint}"
    errs = [ln for ln in lines if "Build '" in ln and "errored" in ln]
    if errs:
        return errs[-1].split("errored", 1)[-1].strip(" :") or errs[-1].strip()
    tail = [ln.strip() for ln in lines if ln.strip()]
    return tail[-1] if tail else "no output"


def read_manifest(path: Path) -> dict[str, Any]:
    """The last build recorded by the manifest post-processor."""
    try:
        doc = json.loads(path.read_text())
        last: dict[str, Any] = doc["builds"][-1]
    except (FileNotFoundError, KeyError, IndexError, json.JSONDecodeError) as exc:
        raise BuildFailed(f"packer manifest {path} missing or unreadable: {exc}") from None
    return last

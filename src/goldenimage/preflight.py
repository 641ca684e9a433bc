"""Preflight: the playbooks a bake will run are checked before anything is built.

For every image of the bake's plan (parents included), before the base disk or any VM:
requirements.yml is read (every entry pinned) and installed (`adapters.galaxy`, once per
content); each playbook parses and every role it names resolves (roles/ or the installed
requirements: the fingerprint's own walk); `ansible-playbook --syntax-check` passes on all of
them (one run); `ansible-lint` passes with the project's `.ansible-lint` (one run). A failure
is bad input: one line naming the playbook, role or line, exit 2, in seconds.

The two tool runs cost a few seconds, so a passing result is remembered under the hash of
what they read (the playbooks' and roles' files, the requirements, the lint config, the tool
versions): an up-to-date bake pays only the parse.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import fingerprint, requirements
from .adapters import galaxy, proc
from .errors import ConfigError
from .fsutil import atomic_write_bytes
from .paths import store_dir
from .progress import Reporter
from .settings import Environment

LINT_CONFIG = ".ansible-lint"
_PEP8 = re.compile(r"^(?P<path>[^:\s][^:]*):(?P<line>\d+)(?::\d+)?: (?P<rule>[\w\[\]/-]+)(?::\s*(?P<msg>.*))?$")


def check(env: Environment, names: Sequence[str], reporter: Reporter) -> galaxy.Installed | None:
    """Check the playbooks of images `names` (ConfigError on the first problem); returns the
    installed requirements (None: the project has none)."""
    root = env.root
    reqs = requirements.load(root)
    installed = galaxy.ensure(root, reqs, reporter) if reqs is not None else None
    playbooks: dict[str, str] = {}
    digest = hashlib.sha256()
    for name in names:
        spec = env.image(name)
        files, _ = fingerprint.collect_playbook(root, spec.playbook, reqs.role_names if reqs else frozenset())
        playbooks[spec.playbook] = name
        for f in files:
            digest.update(f"{f.name}\0{f.digest}\0".encode())
    lint_cfg = root / LINT_CONFIG
    digest.update(lint_cfg.read_bytes() if lint_cfg.is_file() else b"")
    digest.update((reqs.key if reqs else "").encode())
    digest.update(f"{sys.version}\0{_versions()}".encode())
    marker = store_dir() / "preflight" / digest.hexdigest()
    if marker.is_file():
        return installed
    with reporter.phase("preflight", f"{', '.join(sorted(playbooks))}: syntax check and ansible-lint"):
        venv_bin = str(Path(sys.executable).parent)
        e = {**os.environ, **galaxy.ansible_env(root, reqs), "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1",
             "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
        syntax_check(root, env, sorted(playbooks), e)
        lint(root, sorted(playbooks), e)
    atomic_write_bytes(marker, b"ok\n")
    return installed


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("ansible-core", "ansible-lint"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=none")
    return ",".join(out)


def syntax_check(root: Path, env: Environment, playbooks: list[str], e: dict[str, str]) -> None:
    res = proc.run([proc.venv_tool("ansible-playbook"), "--syntax-check", "-i", str(env.directory), *playbooks],
                   cwd=root, env=e)
    if res.returncode == 0:
        return
    lines = [ln.strip() for ln in res.lines if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if ln.startswith("ERROR") or ln.startswith("[ERROR]")), None)
    if first is None:
        raise ConfigError(f"{', '.join(playbooks)}: ansible-playbook --syntax-check failed: "
                          f"{lines[-1] if lines else 'no output'}")
    text = lines[first].removeprefix("[ERROR]:").removeprefix("ERROR!").strip()
    where = next((ln for ln in lines[first + 1:first + 8] if "Origin:" in ln or "The error appears" in ln), "")
    origin = re.search(r"Origin: (\S+)", where) or re.search(r"in '([^']+)': line (\d+)", where)
    spot = ""
    if origin is not None:
        spot = (origin[1] if origin.lastindex == 1 else f"{origin[1]}:{origin[2]}")
        spot = os.path.relpath(spot, root) if spot.startswith("/") else spot
    raise ConfigError(f"{spot or ', '.join(playbooks)}: ansible-playbook --syntax-check: {text}")


def lint(root: Path, playbooks: list[str], e: dict[str, str]) -> None:
    """`ansible-lint` on the playbooks (and so the roles they use), offline, in the project's
    config; the first violation as one line."""
    argv = [proc.venv_tool("ansible-lint"), "--offline", "--nocolor", "-f", "pep8", *playbooks]
    if (root / LINT_CONFIG).is_file():
        argv[1:1] = ["-c", str(root / LINT_CONFIG)]
    res = proc.run(argv, cwd=root, env=e)
    if res.returncode == 0:
        return
    for ln in res.lines:
        m = _PEP8.match(ln.strip())
        if m:
            raise ConfigError(f"{m['path']}:{m['line']}: ansible-lint {m['rule']}: {(m['msg'] or '').strip()}")
    tail = [ln.strip() for ln in res.lines if ln.strip()]
    raise ConfigError(f"{', '.join(playbooks)}: ansible-lint failed: {tail[-1] if tail else 'no output'}")

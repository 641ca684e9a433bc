"""`ansible-galaxy` installs the project's requirements (`goldenimage.requirements`) into
`.goldenimage/requirements/<key>/` (`roles/`, `collections/`), once per content of the
requirements: a second bake with the same file reuses the directory. The install goes to a
temporary directory beside it and is renamed into place when complete, so two bakes at once
or a killed install never leave half a directory in use. `installed.json` records what was
installed: each entry's name, version and the SHA-256 of its installed files (the image's
provenance keeps it)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BuildFailed, ConfigError
from ..fsutil import atomic_write_json
from ..progress import Reporter
from ..requirements import Requirements, content_digest
from . import proc

INSTALLED = "installed.json"
DEFAULT_COLLECTIONS = ["~/.ansible/collections", "/usr/share/ansible/collections"]


@dataclass(frozen=True)
class Installed:
    directory: Path
    items: list[dict[str, Any]]

    @property
    def roles_dir(self) -> Path:
        return self.directory / "roles"

    @property
    def collections_dir(self) -> Path:
        return self.directory / "collections"


def roles_path(root: Path, reqs: Requirements | None) -> str:
    """ANSIBLE_ROLES_PATH for the project's playbooks: the installed roles, then roles/."""
    own = str(root / "roles")
    return f"{reqs.install_dir(root) / 'roles'}{os.pathsep}{own}" if reqs and reqs.roles else own


def collections_path(root: Path, reqs: Requirements | None) -> str:
    """ANSIBLE_COLLECTIONS_PATH: the installed collections, then Ansible's defaults."""
    paths = [str(reqs.install_dir(root) / "collections")] if reqs and reqs.collections else []
    return os.pathsep.join([*paths, *DEFAULT_COLLECTIONS])


def ansible_env(root: Path, reqs: Requirements | None) -> dict[str, str]:
    return {"ANSIBLE_ROLES_PATH": roles_path(root, reqs), "ANSIBLE_COLLECTIONS_PATH": collections_path(root, reqs)}


def _installed_version(kind: str, path: Path) -> str:
    if kind == "role":
        info = path / "meta" / ".galaxy_install_info"
        if info.is_file():
            for line in info.read_text().splitlines():
                if line.startswith("version:"):
                    return line.split(":", 1)[1].strip().strip("'\"")
        return ""
    manifest = path / "MANIFEST.json"
    if manifest.is_file():
        return str(json.loads(manifest.read_text()).get("collection_info", {}).get("version", ""))
    return ""


def _collections(base: Path) -> dict[str, Path]:
    """namespace.name -> directory of each collection installed under `base`."""
    top = base / "ansible_collections"
    return {f"{ns.name}.{c.name}": c for ns in sorted(top.iterdir()) if ns.is_dir()
            for c in sorted(ns.iterdir()) if c.is_dir()} if top.is_dir() else {}


def ensure(root: Path, reqs: Requirements, reporter: Reporter) -> Installed:
    """The installed requirements, installing them first when this content was not yet."""
    dest = reqs.install_dir(root)
    if (dest / INSTALLED).is_file():
        return Installed(dest, json.loads((dest / INSTALLED).read_text())["items"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        offline = all(r.local for r in (*reqs.roles, *reqs.collections))
        if reqs.roles:
            reporter.step(f"ansible-galaxy: {len(reqs.roles)} role(s) from {reqs.path.name}")
            _run([proc.venv_tool("ansible-galaxy"), "role", "install", "-r", str(reqs.path), "-p", str(tmp / "roles")], root)
        if reqs.collections:
            reporter.step(f"ansible-galaxy: {len(reqs.collections)} collection(s) from {reqs.path.name}")
            _run([proc.venv_tool("ansible-galaxy"), "collection", "install", "-r", str(reqs.path), "-p", str(tmp / "collections"),
                  *(["--offline"] if offline else [])], root)
        items = []
        found = _collections(tmp / "collections")
        for r in (*reqs.roles, *reqs.collections):
            where = tmp / "roles" / r.name if r.kind == "role" else found.get(r.name)
            if where is None or not where.is_dir():
                raise BuildFailed(f"{reqs.path.name}: ansible-galaxy installed no {r.kind} {r.name!r}")
            items.append({**r.as_dict(), "installed_version": _installed_version(r.kind, where),
                          "files_sha256": content_digest(where)})
        atomic_write_json(tmp / INSTALLED, {"key": reqs.key, "items": items})
        try:
            tmp.rename(dest)
        except OSError:  # another bake installed the same content meanwhile
            if not (dest / INSTALLED).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Installed(dest, json.loads((dest / INSTALLED).read_text())["items"])


def _run(argv: list[str], root: Path) -> None:
    res = proc.run(argv, cwd=root, env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.lines if ln.strip()]
        err = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        if "Failed to resolve" in err or "could not be found" in err or "not found" in err.lower():
            raise ConfigError(f"requirements.yml: {err}")
        raise BuildFailed(f"requirements.yml: ansible-galaxy failed: {err}")


def installed_record(root: Path, reqs: Requirements | None) -> list[dict[str, Any]] | None:
    """What the bake's preflight installed for the project (for the image's manifest)."""
    if reqs is None:
        return None
    path = reqs.install_dir(root) / INSTALLED
    return list(json.loads(path.read_text())["items"]) if path.is_file() else None

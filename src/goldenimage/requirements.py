"""The project's Ansible requirements: `requirements.yml` at the project root, the
`ansible-galaxy` format (roles and collections from Galaxy names, Git URLs, or local
tarballs/directories).

Pure apart from reading the file and the local sources it names: every entry is pinned (an
exact version; a local source is pinned by the SHA-256 of its content), so the file and those
digests decide what `ansible-galaxy` installs. Their hash (`key`) names the install directory
(`.goldenimage/requirements/<key>/` in the project, see `adapters.galaxy`) and each entry is
a fingerprint input of every image (`requirement:role:NAME`, `requirement:collection:NAME`),
so a new version of a role means a new image, and no install is needed to know the
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

FILE = "requirements.yml"
INSTALL_ROOT = Path(".goldenimage") / "requirements"
# an exact version: 1.2.3, v1.2.3, 2024.1, 1.0.0-rc.1, or a Git commit/tag; not a range
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_RANGE_WORDS = {"latest", "head", "main", "master", "*"}
_LOCAL = ("/", "./", "../", "~")


@dataclass(frozen=True)
class Requirement:
    kind: str  # role | collection
    name: str  # the role's name as playbooks use it; the collection's namespace.name (or its path)
    source: str  # Galaxy name, Git URL, or local path
    version: str  # the pinned version ("" for a local source: pinned by `digest`)
    digest: str = ""  # sha256 of a local source's content

    @property
    def local(self) -> bool:
        return is_local(self.source)

    def pin(self) -> str:
        """What the fingerprint input says of it: version and/or content digest, and source."""
        return " ".join(p for p in (self.version, self.digest and f"sha256:{self.digest}", self.source) if p)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "source": self.source, "version": self.version,
                **({"digest": f"sha256:{self.digest}"} if self.digest else {})}


@dataclass(frozen=True)
class Requirements:
    path: Path  # the requirements file
    roles: tuple[Requirement, ...]
    collections: tuple[Requirement, ...]
    key: str  # sha256 of the file and every local source's content

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(r.name for r in self.roles)

    def install_dir(self, root: Path) -> Path:
        return root / INSTALL_ROOT / self.key[:16]

    def inputs(self) -> dict[str, str]:
        """Fingerprint inputs (name -> value) of every image of the project."""
        return {f"requirement:{r.kind}:{r.name}": r.pin() for r in (*self.roles, *self.collections)}


def is_local(source: str) -> bool:
    return source.startswith(_LOCAL) or source.startswith("file://")


def _local_path(source: str, root: Path) -> Path:
    text = source.removeprefix("file://")
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else root / p


def content_digest(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (their relative names and bytes)."""
    h = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__"))
        for f in sorted(filenames):
            full = Path(dirpath) / f
            h.update(full.relative_to(path).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(full.read_bytes()).digest())
    return h.hexdigest()


def collection_identity(path: Path, where: str) -> tuple[str, str]:
    """(namespace.name, version) of a collection tarball (its MANIFEST.json) or source
    directory (its galaxy.yml)."""
    try:
        if path.is_dir():
            info = yaml.safe_load((path / "galaxy.yml").read_text())
        else:
            with tarfile.open(path) as tar:
                member = tar.extractfile("MANIFEST.json")
                info = json.load(member)["collection_info"] if member else None
        return f"{info['namespace']}.{info['name']}", str(info["version"])
    except (OSError, KeyError, TypeError, ValueError, tarfile.TarError, yaml.YAMLError):
        raise ConfigError(f"{where}: {path} is not a collection (no namespace, name and version in its "
                          "MANIFEST.json or galaxy.yml)") from None


def _pinned(version: Any) -> bool:
    text = str(version).strip() if version is not None else ""
    return bool(text) and text.lower() not in _RANGE_WORDS and bool(_PINNED.match(text))


def _role_name(entry: dict[str, Any], where: str) -> str:
    if isinstance(entry.get("name"), str) and entry["name"]:
        return str(entry["name"])
    src = str(entry.get("src") or "")
    if src and not is_local(src) and "://" not in src and "," not in src and not src.startswith("git+"):
        return src  # a Galaxy name (namespace.role) is its own name
    raise ConfigError(f"{where}: give the role a `name` (how playbooks call it) for source {src!r}")


def _entry(kind: str, raw: Any, where: str, root: Path) -> Requirement:
    if isinstance(raw, str):
        raw = {"src": raw} if kind == "role" else {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping (src/name, version), got {raw!r}")
    if kind == "role":
        source = str(raw.get("src") or raw.get("name") or "")
        name = _role_name(raw, where)
    else:
        source = str(raw.get("source") if raw.get("type") in ("git", "url") and raw.get("source")
                     else raw.get("name") or "")
        name = str(raw.get("name") or "")
    if not source or not name:
        raise ConfigError(f"{where}: no {'src' if kind == 'role' else 'name'}")
    version = str(raw["version"]).strip() if raw.get("version") is not None else ""
    digest = ""
    local = is_local(source) or raw.get("type") in ("file", "dir")
    if local:
        path = _local_path(source, root)
        if not path.exists():
            raise ConfigError(f"{where}: {source}: no such file or directory")
        digest = content_digest(path)
        if kind == "collection":  # its namespace.name and version are in the artifact itself
            name, version = collection_identity(path, where)
    elif not _pinned(version):
        what = f"version {version!r} is not an exact version" if version else "no version"
        raise ConfigError(f"{where}: {kind} {name!r} is not pinned ({what}): give an exact version, "
                          "e.g. version: 1.2.3 (or a Git tag/commit)")
    return Requirement(kind, name, source, version, digest)


def load(root: Path) -> Requirements | None:
    """The project's requirements (None: no requirements.yml). ConfigError naming the file,
    the entry and the problem for an unpinned entry, a missing local source or bad YAML."""
    path = root / FILE
    if not path.is_file():
        return None
    text = path.read_bytes()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{FILE}{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if doc is None:
        doc = {}
    if isinstance(doc, list):  # the old form: a list of roles
        doc = {"roles": doc}
    if not isinstance(doc, dict) or set(doc) - {"roles", "collections"}:
        raise ConfigError(f"{FILE}: expected `roles:` and/or `collections:` lists")
    out: dict[str, list[Requirement]] = {"role": [], "collection": []}
    for kind, key in (("role", "roles"), ("collection", "collections")):
        entries = doc.get(key) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{FILE}: field {key}: expected a list")
        for i, raw in enumerate(entries):
            req = _entry(kind, raw, f"{FILE}: field {key}[{i}]", root)
            if any(r.name == req.name for r in out[kind]):
                raise ConfigError(f"{FILE}: field {key}[{i}]: {kind} {req.name!r} is listed twice")
            out[kind].append(req)
    h = hashlib.sha256(text)
    for r in (*out["role"], *out["collection"]):
        h.update(f"\0{r.kind}\0{r.name}\0{r.digest}".encode())
    return Requirements(path, tuple(out["role"]), tuple(out["collection"]), h.hexdigest())

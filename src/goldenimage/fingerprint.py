"""Content addressing: an image's fingerprint is a hash of every input that shapes it.

Two halves, as elsewhere in the toolkit:

* the pure core: `compute(inputs)` hashes a list of named digests, order-independent;
  `diff(old, new)` says which inputs were added, removed or changed; `as_manifest` and
  `explain` turn inputs into data. No I/O.
* the collectors (the I/O side) walk the project and produce the inputs for one image of
  one environment:

  - `packer/`: every `*.pkr.hcl` and `*.pkrvars.hcl` normalised through python-hcl2
    (comments, whitespace and the order of top-level blocks do not count; values do; the
    order of nested blocks such as provisioners does, since Packer runs them in order),
    `*.pkr.json`/`*.pkrvars.json` as canonical JSON, and every other file there (scripts,
    seeds) by its bytes;
  - the image's playbook, the playbooks it imports, its `vars_files`, the `group_vars`/
    `host_vars` next to it, and every file of every role it uses (its `roles:`, role
    `meta/main.yml` dependencies, and literal `import_role`/`include_role` names, followed
    transitively); a file's digest covers its bytes and its executable bit;
  - `ansible.cfg` at the project root, if any;
  - the environment's inventory (hosts, group_vars, host_vars), with the toolkit settings
    file reduced to the parts that shape this image (its own spec, the base, the target);
  - the image's suite directories (`Environment.suites`: `tests/image/common/` and
    `tests/image/<image>/`, or its `tests:` list) and the conftest they share
    (`tests/image/conftest.py`): what a validated image was checked against; a change to
    common changes every image, a change to `tests/image/web/` changes web only;
  - `extra`: values the caller resolves (base image identity, tool versions), e.g.
    `{"base:image": "sha256:...", "tool:packer": "1.11.2"}`.

Input names are stable, project-relative paths (`packer/sources.pkr.hcl`,
`roles/web/tasks/main.yml`) or `kind:name` keys (`settings:image`, `tool:packer`).
VCS, editor and bytecode files are ignored, and so are file modification times.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import requirements
from .errors import ConfigError, TemplateError
from .settings import IMAGE_SUITES, SETTINGS_FILE, Environment

FORMAT = "goldenimage-fingerprint-v1"

IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".idea",
        ".vscode",
        "packer_cache",
    }
)
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", ".gitkeep"})
IGNORED_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".swo", ".swx", ".orig", ".rej")

HCL_SUFFIXES = (".pkr.hcl", ".pkrvars.hcl")
JSON_SUFFIXES = (".pkr.json", ".pkrvars.json")

_HCL_OPTIONS = {
    "with_comments": False,  # comments do not shape the image
    "with_meta": False,  # neither do line numbers
    "explicit_blocks": True,  # tells blocks (sortable at top level) from object values
    "preserve_heredocs": False,  # <<EOF and <<-EOT spelling of the same string hash alike
}
_hcl_digests: MutableMapping[str, str] = {}  # sha256 of a template's text -> digest of its normal form


def keep_hcl_digests(store: MutableMapping[str, str]) -> None:
    """Where `hcl_digest` remembers what it computed (a dict per process by default; the CLI
    hands it the host's cache, adapters.hostcache)."""
    global _hcl_digests
    _hcl_digests = store


# -- pure core ---------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class FingerprintInput:
    """One input of an image: a stable name and the SHA-256 of its normalised content.

    `detail` is for people (a tool version, the base image id); it is not hashed — the
    digest already covers it.
    """

    name: str
    digest: str
    detail: str = ""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def value_input(name: str, value: str) -> FingerprintInput:
    """An input given as a value (a tool version, a base image id)."""
    return FingerprintInput(name, sha256_text(value), value)


def compute(inputs: Iterable[FingerprintInput]) -> str:
    """The fingerprint: SHA-256 over the sorted (name, digest) pairs; order-independent.

    Raises ValueError if two inputs share a name (a collector bug, not user input).
    """
    pairs = sorted((i.name, i.digest) for i in inputs)
    names = [n for n, _ in pairs]
    dupes = sorted({n for a, n in itertools.pairwise(names) if a == n})
    if dupes:
        raise ValueError(f"duplicate fingerprint inputs: {', '.join(dupes)}")
    doc = json.dumps([FORMAT, pairs], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()


def as_manifest(inputs: Iterable[FingerprintInput]) -> dict[str, str]:
    """`{name: digest}`, what an image's manifest keeps as `fingerprint_inputs`."""
    return {i.name: i.digest for i in sorted(inputs)}


def explain(inputs: Iterable[FingerprintInput]) -> list[dict[str, str]]:
    """Each input as data, sorted by name (the `--explain` listing)."""
    out = []
    for i in sorted(inputs):
        row = {"name": i.name, "digest": i.digest}
        if i.detail:
            row["detail"] = i.detail
        out.append(row)
    return out


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, list[str]]:
    """Which input names were added, removed or changed between two `{name: digest}` maps."""
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(n for n in set(old) & set(new) if old[n] != new[n]),
    }


def reasons(d: Mapping[str, list[str]]) -> list[str]:
    """Why two sets of inputs differ, in words: "parent changed", "base changed", "roles
    changed", ... (from `diff`'s changed/added/removed names)."""
    names = [n for kind in ("changed", "added", "removed") for n in d.get(kind, [])]
    kinds = [
        ("parent:", "parent changed"), ("base:", "base changed"), ("tool:", "tools changed"),
        ("roles/", "roles changed"), ("requirement:", "requirements changed"), ("playbooks/", "playbook changed"),
        ("packer/", "templates changed"),
        ("tests/", "image suites changed"), ("inventories/", "inventory or settings changed"),
    ]
    out = [why for prefix, why in kinds if any(n.startswith(prefix) for n in names)]
    return out or (["other inputs changed"] if names else [])


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _is_block(value: Any) -> bool:
    """A block as python-hcl2 serialises it: `{..., "__is_block__": true}`, wrapped in one
    single-key dict per label. A list of objects in a var file is a value, not blocks."""
    while isinstance(value, dict):
        if value.get("__is_block__") is True:
            return True
        if len(value) != 1:
            return False
        value = next(iter(value.values()))
    return False


def _sort_top_level_blocks(doc: dict[str, Any]) -> dict[str, Any]:
    """Top-level blocks of one kind (`variable`, `source`, `build`...) in a stable order.

    Packer does not care in which order top-level blocks appear (nor in which file), so
    their lists are sorted by content. Nested block order is kept: provisioners and
    post-processors run in the order they are written.
    """
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, list) and value and all(_is_block(v) for v in value):
            out[key] = sorted(value, key=_canonical)
        else:
            out[key] = value
    return out


def normalise_hcl(text: str, name: str) -> str:
    """The canonical JSON of an HCL2 document: what the fingerprint hashes for a template.

    Raises TemplateError naming `name` and the line if the text is not valid HCL2.
    """
    import hcl2  # python-hcl2 and its parser load only when a template is parsed (not cached)

    try:
        doc = hcl2.loads(text, serialization_options=hcl2.SerializationOptions(**_HCL_OPTIONS))
    except Exception as exc:  # lark raises its own tree of errors; all mean "malformed"
        line = getattr(exc, "line", None)
        col = getattr(exc, "column", None)
        where = f":{line}" if isinstance(line, int) and line > 0 else ""
        where += f":{col}" if where and isinstance(col, int) and col > 0 else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(first) > 160:  # lark quotes the offending token, which can be the whole file
            first = first[:157] + "..."
        raise TemplateError(f"{name}{where}: invalid HCL2: {first}") from None
    return _canonical(_sort_top_level_blocks(doc))


def hcl_digest(text: str, name: str) -> str:
    """`sha256_text(normalise_hcl(text, name))`, each distinct text parsed once per process
    (the images of one bake share the templates), or once per host (keep_hcl_digests). Keyed
    by the text's own hash, so an edited template is parsed again; an invalid one is never
    cached (its error names `name`)."""
    key = sha256_text(text)
    digest = _hcl_digests.get(key)
    if digest is None:
        digest = _hcl_digests[key] = sha256_text(normalise_hcl(text, name))
    return digest


def normalise_json(text: str, name: str) -> str:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    return _canonical(doc)


# -- file digests ------------------------------------------------------------------------
_EXEC = b"x\0"
_PLAIN = b"-\0"


_BUFFER_SIZE = 1 << 20
_local = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    """A read buffer per thread, reused for every file (no allocation per file)."""
    got: tuple[bytearray, memoryview] | None = getattr(_local, "buf", None)
    if got is None:
        buf = bytearray(_BUFFER_SIZE)
        got = _local.buf = (buf, memoryview(buf))
    return got


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's executable bit and bytes (mtime, owner and the rest ignored).

    Raises OSError (IsADirectoryError, ... ) for anything but a regular file, so that a
    FIFO in a role never blocks a bake.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file", os.fspath(path))
        h = hashlib.sha256(_EXEC if st.st_mode & stat.S_IXUSR else _PLAIN)
        buf, view = _buffer()
        left = st.st_size
        while n := os.readv(fd, [buf]):
            h.update(view[:n])  # hashlib releases the GIL for large updates
            left -= n
            if 0 < n < _BUFFER_SIZE and left <= 0:
                break  # a short read at the size fstat gave: end of file, skip one syscall
        return h.hexdigest()
    finally:
        os.close(fd)


def bytes_digest(data: bytes, executable: bool = False) -> str:
    """What `file_digest` returns for a file with these bytes and this executable bit."""
    h = hashlib.sha256(_EXEC if executable else _PLAIN)
    h.update(data)
    return h.hexdigest()


def ignored(name: str) -> bool:
    return (
        name in IGNORED_NAMES
        or name.endswith(IGNORED_SUFFIXES)
        or (name.startswith(".#"))  # emacs lock files
        or (name.startswith("#") and name.endswith("#"))  # emacs autosave
    )


def _walk(top: str) -> Iterator[str]:
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or a directory reached twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS and not ignored(d))
        for f in sorted(filenames):
            if not ignored(f):
                yield os.path.join(dirpath, f)


def walk_files(top: Path) -> Iterator[Path]:
    """Every file under `top` that can shape an image, in a stable order.

    Symlinked directories are followed once; VCS, editor and bytecode files are skipped.
    """
    return (Path(p) for p in _walk(os.fspath(top)))


def hash_files(
    paths: Sequence[str | os.PathLike[str]], root: Path, workers: int | None = None
) -> list[FingerprintInput]:
    """File inputs named relative to `root` (POSIX paths).

    Large sets are hashed by a few threads, each taking a batch of files: reads and
    hashlib release the GIL, and one task per batch (not per file) keeps the pool's own
    locking out of the way. `workers=1` hashes in this thread.
    """
    prefix = os.fspath(root).rstrip(os.sep) + os.sep

    def rel_of(p: str) -> str:
        if p.startswith(prefix):
            return p[len(prefix) :].replace(os.sep, "/")
        return Path(p).relative_to(root).as_posix()

    def batch(items: Sequence[str]) -> list[FingerprintInput]:
        out = []
        for p in items:
            rel = rel_of(p)
            try:
                out.append(FingerprintInput(rel, file_digest(p)))
            except FileNotFoundError:
                raise ConfigError(f"{rel}: broken symlink, or it vanished while hashing") from None
            except OSError as exc:
                raise ConfigError(f"{rel}: cannot read: {exc.strerror}") from None
        return out

    items = [os.fspath(p) for p in paths]
    n = workers or min(4, os.cpu_count() or 1)
    if n <= 1 or len(items) < 512:
        return batch(items)
    size = max(128, -(-len(items) // (n * 4)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="fingerprint") as pool:
        return [x for part in pool.map(batch, chunks) for x in part]


# -- collectors --------------------------------------------------------------------------
def collect_packer(root: Path) -> list[FingerprintInput]:
    """`packer/`: templates and var files normalised, every other file by its bytes."""
    top = root / "packer"
    if not top.is_dir():
        raise ConfigError(f"{top}: no packer/ directory")
    out: list[FingerprintInput] = []
    raw: list[Path] = []
    for p in walk_files(top):
        rel = p.relative_to(root).as_posix()
        if p.name.endswith(HCL_SUFFIXES + JSON_SUFFIXES):
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise TemplateError(f"{rel}: not UTF-8 text: {exc.reason}") from None
            digest = hcl_digest(text, rel) if p.name.endswith(HCL_SUFFIXES) else sha256_text(normalise_json(text, rel))
            out.append(FingerprintInput(rel, digest, "normalised"))
        else:
            raw.append(p)
    return out + hash_files(raw, root)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML that tolerates Ansible's tags (`!vault`, `!unsafe`) as opaque values."""


def _opaque(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
    return None


_Loader.add_multi_constructor("!", _opaque)

_ROLE_MODULES = frozenset(
    {
        "import_role",
        "include_role",
        "ansible.builtin.import_role",
        "ansible.builtin.include_role",
        "ansible.legacy.import_role",
        "ansible.legacy.include_role",
    }
)
_PLAYBOOK_MODULES = frozenset({"import_playbook", "ansible.builtin.import_playbook"})


def _load_yaml(path: Path, root: Path) -> Any:
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"{rel}: does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{rel}{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{rel}: not UTF-8 text: {exc.reason}") from None


def _role_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        for key in ("role", "name"):
            if isinstance(entry.get(key), str):
                return str(entry[key])
    return None


def _role_refs(data: Any) -> Iterator[str]:
    """Literal role names referenced by import_role/include_role anywhere in `data`."""
    if isinstance(data, dict):
        for key, value in data.items():
            name = value.get("name") if isinstance(value, dict) else None
            if key in _ROLE_MODULES and isinstance(name, str):
                yield name
            else:
                yield from _role_refs(value)
    elif isinstance(data, list):
        for item in data:
            yield from _role_refs(item)


class _PlaybookWalk:
    """Follows a playbook to the files and roles it uses."""

    def __init__(self, root: Path, external: frozenset[str] = frozenset()) -> None:
        self.root = root.resolve()
        self.files: set[str] = set()
        self.role_dirs: dict[str, Path] = {}
        self.external = external  # roles requirements.yml installs: pinned there, not walked
        self.external_used: set[str] = set()
        self._playbooks: set[Path] = set()

    def rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def _inside(self, p: Path, what: str, where: str) -> Path:
        real = p.resolve()
        if not real.is_relative_to(self.root):
            raise ConfigError(f"{where}: {what} {p} resolves outside the project ({real})")
        return p

    def playbook(self, path: Path, used_by: str = "") -> None:
        path = self._inside(path, "playbook", used_by or str(path))
        if not path.is_file():
            raise ConfigError(f"{used_by or 'playbook'}: {self.rel(path)} does not exist")
        if path in self._playbooks:
            return
        self._playbooks.add(path)
        self.files.add(os.fspath(path))
        pdir = path.parent
        search = [pdir / "roles", self.root / "roles", pdir]  # as ansible-playbook looks
        for vars_dir in ("group_vars", "host_vars"):
            if (pdir / vars_dir).is_dir():
                self.files.update(_walk(os.fspath(pdir / vars_dir)))
        plays = _load_yaml(path, self.root)
        if plays is None:
            return
        if not isinstance(plays, list):
            raise ConfigError(f"{self.rel(path)}: a playbook is a list of plays")
        for play in plays:
            if not isinstance(play, dict):
                continue
            for key in _PLAYBOOK_MODULES:
                target = play.get(key)
                if isinstance(target, str) and "{{" not in target:
                    self.playbook(pdir / target, self.rel(path))
            vars_files = play.get("vars_files") or []
            for vf in vars_files if isinstance(vars_files, list) else [vars_files]:
                # an entry may itself be a list: the first file found is loaded
                candidates = vf if isinstance(vf, list) else [vf]
                for c in candidates:
                    if not isinstance(c, str) or "{{" in c:
                        continue
                    f = self._inside(pdir / c, "vars file", self.rel(path))
                    if f.is_file():
                        self.files.add(os.fspath(f))
                        break
                    if not isinstance(vf, list):
                        raise ConfigError(f"{self.rel(path)}: vars_files: {c} does not exist")
            for entry in play.get("roles") or []:
                name = _role_name(entry)
                if name is None:
                    raise ConfigError(f"{self.rel(path)}: roles: cannot read entry {entry!r}")
                self.role(name, path, search)
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                for name in _role_refs(play.get(section)):
                    self.role(name, path, search)

    def role(self, name: str, used_by: Path, search: list[Path]) -> None:
        if "{{" in name:
            raise ConfigError(
                f"{self.rel(used_by)}: role name {name!r} is templated; the fingerprint "
                "needs literal role names"
            )
        if name in self.role_dirs:
            return
        if name in self.external:
            self.external_used.add(name)
            return
        for base in search:
            d = base / name
            if d.is_dir():
                break
        else:
            raise ConfigError(f"{self.rel(used_by)}: role {name!r} not found under roles/ "
                              "nor in requirements.yml")
        d = self._inside(d, "role", self.rel(used_by))
        self.role_dirs[name] = d
        search = [d.parent, *search]  # a role's dependencies may be its siblings
        files = list(_walk(os.fspath(d)))
        self.files.update(files)
        meta = d / "meta" / "main.yml"
        if not meta.is_file():
            meta = d / "meta" / "main.yaml"
        if meta.is_file():
            doc = _load_yaml(meta, self.root) or {}
            deps = doc.get("dependencies") if isinstance(doc, dict) else None
            for dep in deps or []:
                dep_name = _role_name(dep)
                if dep_name is None:
                    raise ConfigError(f"{self.rel(meta)}: dependencies: cannot read entry {dep!r}")
                self.role(dep_name, meta, search)
        prefix = os.fspath(d) + os.sep
        for f in files:
            sub = f[len(prefix) :]
            if sub.startswith(("tasks" + os.sep, "handlers" + os.sep)) and f.endswith((".yml", ".yaml")):
                for ref in _role_refs(_load_yaml(Path(f), self.root)):
                    self.role(ref, Path(f), search)


def collect_playbook(root: Path, playbook: str, external: frozenset[str] = frozenset(),
                     ) -> tuple[list[FingerprintInput], list[str]]:
    """The playbook's files and its roles' files; also returns the role names used (the
    `external` ones, roles requirements.yml installs, among them but not walked)."""
    walk = _PlaybookWalk(root, external)
    walk.playbook(walk.root / playbook)
    cfg = walk.root / "ansible.cfg"
    if cfg.is_file():
        walk.files.add(os.fspath(cfg))
    return hash_files(sorted(walk.files), walk.root), sorted({*walk.role_dirs, *walk.external_used})


def settings_inputs(env: Environment, image: str) -> list[FingerprintInput]:
    """The parts of the toolkit settings that shape this image (not QEMU sizing, not the
    other images): the image's spec, the base, the target."""
    spec = env.image(image)
    s = env.settings
    prefix = f"inventories/{env.name}/{SETTINGS_FILE}"
    return [
        FingerprintInput(f"{prefix}#images.{image}", _model_digest(spec.model_dump(mode="json"))),
        FingerprintInput(f"{prefix}#base", _model_digest(s.base.model_dump(mode="json"))),
        value_input(f"{prefix}#target", s.target),
    ]


def _model_digest(data: Any) -> str:
    return sha256_text(_canonical(data))


def collect_inventory(root: Path, env: Environment) -> list[FingerprintInput]:
    """Every file of the environment's inventory; the settings file reduced to its parts
    that shape images (see `settings_inputs`)."""
    root = root.resolve()
    top = root / "inventories" / env.name
    skip = os.fspath(top / SETTINGS_FILE)
    files = [p for p in _walk(os.fspath(top)) if p != skip]
    return hash_files(files, root)


def collect_suites(root: Path, env: Environment, image: str) -> list[FingerprintInput]:
    """Every file of the image's suite directories, and the image suites' shared conftest."""
    root = root.resolve()
    files: list[str] = []
    for top in env.suites(image):
        files += _walk(os.fspath(root / top.relative_to(env.root)))
    shared = root / IMAGE_SUITES / "conftest.py"
    if shared.is_file():
        files.append(os.fspath(shared))
    return hash_files(sorted(set(files)), root)


def collect(
    root: Path, env: Environment, image: str, extra: Mapping[str, str] | None = None
) -> list[FingerprintInput]:
    """All inputs of `image` in `env` of the project at `root`. `extra` holds what the
    caller resolved: the base image identity (`base:image`) and tool versions
    (`tool:packer`, `tool:ansible-core`)."""
    root = root.resolve()
    spec = env.image(image)
    found = collect_packer(root)
    reqs = requirements.load(root)
    files, roles = collect_playbook(root, spec.playbook, reqs.role_names if reqs else frozenset())
    found += files
    if reqs is not None:  # the requirements the image can use: the roles it names, every collection
        found += [value_input(name, pin) for name, pin in reqs.inputs().items()
                  if not name.startswith("requirement:role:") or name.split(":", 2)[2] in roles]
    found += collect_inventory(root, env)
    found += settings_inputs(env, image)
    found += collect_suites(root, env, image)
    for name, value in sorted((extra or {}).items()):
        if ":" not in name or "/" in name.split(":", 1)[0]:
            raise ValueError(f"extra fingerprint input {name!r} must look like 'kind:name'")
        found.append(value_input(name, value))
    # a file reached twice (a vars file that is also an inventory file) counts once
    return sorted({i.name: i for i in found}.values())

"""What this host remembers between processes, so that a command that will build nothing
(an up-to-date `invoke bake`, `invoke fingerprint`, nightly's plan) does not pay again for
answers that cannot have changed:

- **tool versions** (`packer version`, `qemu-system-x86_64 --version`, `mmdebstrap
  --version`: each a process start, 0.15 to 0.2 s), keyed by the binary's identity (its real
  path, inode, size and modification time) and the command line: an upgraded or replaced
  binary is asked again;
- **templates' normal-form digests** (python-hcl2 parses a template in 0.07 s), keyed by the
  text's sha256, the parser's version and the bytes of the code that normalises
  (goldenimage/fingerprint.py): an edited template, another parser or another normal form
  is parsed again. A template that does not parse is never remembered.

Both live under `<data home>/cache/` and are written atomically; a lost race or an
unreadable entry only means asking again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path

from ..fsutil import atomic_write_bytes
from ..paths import data_home
from . import proc


def cache_dir() -> Path:
    return data_home() / "cache"


def version_output(argv: Sequence[str], *, what: str = "", hint: str = "") -> str:
    """`proc.output(argv)` of a version query, remembered while the binary is unchanged.
    A tool not on PATH is proc.which's MissingToolError."""
    path = proc.which(argv[0], hint)
    real = os.path.realpath(path)
    st = os.stat(real)
    key = json.dumps([real, st.st_ino, st.st_size, st.st_mtime_ns, list(argv[1:])])
    file = cache_dir() / "tool-versions.json"
    try:
        known: dict[str, str] = json.loads(file.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    out = proc.output([path, *argv[1:]], what=what)
    known = known if isinstance(known, dict) else {}
    known[key] = out
    with contextlib.suppress(OSError):  # a read-only home: asked again next time
        atomic_write_bytes(file, json.dumps(known, indent=1, sort_keys=True).encode())
    return out


class HclDigests(MutableMapping[str, str]):
    """The normal-form digests of templates (goldenimage.fingerprint's `hcl_digest` cache),
    one small file per template text, below a directory named by the parser's version and
    the normalising code."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._mem: dict[str, str] = {}

    @property
    def root(self) -> Path:
        if self._root is None:
            from importlib.metadata import version

            from .. import fingerprint

            code = hashlib.sha256(Path(fingerprint.__file__).read_bytes()).hexdigest()[:16]
            self._root = cache_dir() / "hcl" / f"{version('python-hcl2')}-{code}"
        return self._root

    def __getitem__(self, key: str) -> str:
        if key in self._mem:
            return self._mem[key]
        try:
            value = (self.root / key).read_text().strip()
        except (OSError, ValueError):
            raise KeyError(key) from None
        if len(value) != 64:
            raise KeyError(key)
        self._mem[key] = value
        return value

    def __setitem__(self, key: str, value: str) -> None:
        self._mem[key] = value
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.root / key, value.encode())

    def __delitem__(self, key: str) -> None:
        self._mem.pop(key, None)
        (self.root / key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._mem)

    def __len__(self) -> int:
        return len(self._mem)

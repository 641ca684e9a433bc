"""The Debian archive over http(s) or file://: Release files and Packages indexes.

Used twice: when the base disk is built (the Release files it was built from are recorded
with it) and by nightly's drift check (`check`: the Release files again, and only when one
changed, the Packages indexes). The comparisons are `goldenimage.drift`'s (pure).
"""

from __future__ import annotations

import gzip
import lzma
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import drift
from ..errors import OperationFailed

TIMEOUT = 30.0
Fetch = Callable[[str], bytes]


class Missing(Exception):
    """The archive has no such file (HTTP 404, no such file:// path)."""


def fetch(url: str, timeout: float = TIMEOUT) -> bytes:
    """The bytes at `url` (http, https or file); Missing when it does not exist."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404, 410):
            raise Missing(url) from None
        raise OperationFailed(f"archive: GET {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if url.startswith("file:") and isinstance(exc.reason, FileNotFoundError | NotADirectoryError):
            raise Missing(url) from None
        raise OperationFailed(f"archive: GET {url}: {exc.reason}") from None
    except OSError as exc:
        raise OperationFailed(f"archive: GET {url}: {exc}") from None


def release(source: drift.Source, get: Fetch = fetch) -> drift.ReleaseState:
    """The source's InRelease (or, missing, its Release): Date and sha256."""
    for name in ("InRelease", "Release"):
        url = f"{source.dists()}/{name}"
        try:
            data = get(url)
        except Missing:
            continue
        try:
            return drift.release_state(source.suite, data)
        except ValueError as exc:
            raise OperationFailed(f"archive: {url}: {exc}") from None
    raise OperationFailed(f"archive: {source.dists()} has neither InRelease nor Release")


def releases(sources: Iterable[drift.Source], get: Fetch = fetch) -> list[drift.ReleaseState]:
    return [release(s, get) for s in sources]


def index(source: drift.Source, arch: str, wanted: set[str], get: Fetch = fetch) -> dict[str, list[drift.IndexEntry]]:
    """The source's Packages index for `arch` (xz, gz, or plain, the first the archive has),
    only the `wanted` packages."""
    base = f"{source.dists()}/{source.component}/binary-{arch}/Packages"
    for suffix, unpack in ((".xz", lzma.decompress), (".gz", gzip.decompress), ("", bytes)):
        try:
            data = get(base + suffix)
        except Missing:
            continue
        try:
            text = unpack(data).decode("utf-8", "replace")
        except (lzma.LZMAError, OSError, EOFError) as exc:
            raise OperationFailed(f"archive: {base}{suffix}: cannot unpack: {exc}") from None
        return drift.parse_packages(text, wanted)
    raise OperationFailed(f"archive: {base}(.xz|.gz) not found")


@dataclass(frozen=True)
class Checked:
    verdict: drift.Verdict
    releases: list[drift.ReleaseState]  # as fetched now
    indexes_read: bool
    security: frozenset[tuple[str, str]]  # (name, version) the security suites carry, when read

    def as_dict(self) -> dict[str, Any]:
        return {**self.verdict.as_dict(), "indexes_read": self.indexes_read,
                "releases": [r.as_dict() for r in self.releases]}


def check(record: Mapping[str, Any], get: Fetch = fetch) -> Checked:
    """Drift of a base disk from its archive record ({sources, releases, installed, arch}):
    Release files first; the indexes only if one of them changed."""
    sources = [drift.Source.from_dict(s) for s in record.get("sources", [])]
    if not sources:
        raise OperationFailed("base archive record names no sources")
    recorded = [drift.ReleaseState.from_dict(r) for r in record.get("releases", [])]
    now = releases(sources, get)
    changed = drift.changed_releases(recorded, now)
    if not changed:
        return Checked(drift.verdict([], None), now, False, frozenset())
    installed = [drift.Installed(str(p["name"]), str(p["version"]), str(p["arch"]), str(p.get("source", "")))
                 for p in record.get("installed", [])]
    wanted = {p.name for p in installed}
    arch = str(record.get("arch") or "amd64")
    indexes = [(s.suite, index(s, arch, wanted, get)) for s in sources]
    security = frozenset((name, v) for (suite, idx) in indexes if suite.endswith(drift.SECURITY_MARK)
                         for name, entries in idx.items() for v, _, _ in entries)
    return Checked(drift.verdict(changed, drift.newer_packages(installed, indexes)), now, True, security)


def security_versions(sources: Iterable[drift.Source], arch: str, names: set[str],
                      get: Fetch = fetch) -> frozenset[tuple[str, str]]:
    """(name, version) pairs the security suites among `sources` carry for `names`."""
    return frozenset((name, v) for s in sources if s.security
                     for name, entries in index(s, arch, names, get).items() for v, _, _ in entries)

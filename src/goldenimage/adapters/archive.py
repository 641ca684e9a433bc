"""The Debian archive over http(s) or file://: Release files and Packages indexes.

Used twice: when the base disk is built (the Release files it was built from are recorded
with it) and by nightly's drift check (`check`: the Release files again, and only when one
changed, the Packages indexes). The comparisons are `goldenimage.drift`'s (pure).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import lzma
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import drift
from ..errors import OperationFailed
from ..fsutil import atomic_write_json

TIMEOUT = 30.0
ATTEMPTS = 4  # a transient fault is tried again this many times in all ...
BACKOFF = 0.5  # ... after 0.5 s, 1 s, 2 s
Fetch = Callable[[str], bytes]


class Missing(Exception):
    """The archive has no such file (HTTP 404, no such file:// path)."""


class Transient(Exception):
    """A fault worth another try: a timeout, a reset or refused connection, a truncated
    body, HTTP 429 or 5xx."""


def _fetch_once(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: bytes = resp.read()  # a body shorter than its Content-Length: IncompleteRead
            return data
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404, 410):
            raise Missing(url) from None
        if exc.code == 429 or exc.code >= 500:
            raise Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise OperationFailed(f"archive: GET {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if url.startswith("file:") and isinstance(exc.reason, FileNotFoundError | NotADirectoryError):
            raise Missing(url) from None
        if isinstance(exc.reason, TimeoutError | socket.timeout | ConnectionError):
            raise Transient(str(exc.reason)) from None
        raise OperationFailed(f"archive: GET {url}: {exc.reason}") from None
    except http.client.IncompleteRead as exc:
        raise Transient(f"truncated body: {len(exc.partial)} bytes read, {exc.expected} more expected") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise OperationFailed(f"archive: GET {url}: {exc}") from None


def fetch(url: str, timeout: float = TIMEOUT, *, attempts: int = ATTEMPTS, backoff: float = BACKOFF,
          sleep: Callable[[float], None] = time.sleep) -> bytes:
    """The bytes at `url` (http, https or file); Missing when it does not exist. A transient
    fault is retried with exponential backoff, `attempts` tries in all; the last one's fault
    is the error, naming the URL."""
    for attempt in range(1, attempts + 1):
        try:
            return _fetch_once(url, timeout)
        except Transient as exc:
            if attempt == attempts:
                raise OperationFailed(f"archive: GET {url}: {exc} (after {attempts} attempts)") from None
            sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


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


@dataclass
class Indexes:
    """The Packages indexes nightly's drift check reads, each (source, arch) once per run,
    parsed for the union of the names every checked image holds. An index that cannot be
    read is None, with its error kept (one line naming the URL).

    With a `cache` directory, the suite's (In)Release file is fetched first: it lists the
    digest of every index of the suite, so the same Release bytes mean the same Packages.
    The parsed entries for the wanted names are kept under a key made of the Release's
    sha256, the component, the arch and the wanted names, and read back while the archive
    has not moved (`write_cache` false: read only, as `nightly --plan` does)."""

    wanted: set[str]
    get: Fetch = fetch
    cache: Path | None = None
    write_cache: bool = True
    read: dict[tuple[drift.Source, str], dict[str, list[drift.IndexEntry]] | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # index label -> error line
    bytes_read: int = 0
    cached: int = 0  # indexes answered from the cache

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _counting(self, url: str) -> bytes:
        data = self.get(url)
        with self._lock:
            self.bytes_read += len(data)
        return data

    def _key(self, source: drift.Source, arch: str, release_sha256: str) -> str:
        doc = json.dumps([release_sha256, source.uri, source.suite, source.component, arch, sorted(self.wanted)])
        return hashlib.sha256(doc.encode()).hexdigest()

    def _load(self, source: drift.Source, arch: str) -> dict[str, list[drift.IndexEntry]]:
        if self.cache is None:
            return index(source, arch, self.wanted, self._counting)
        key = self._key(source, arch, release(source, self._counting).sha256)
        path = self.cache / f"{key}.json"
        try:
            raw = json.loads(path.read_text())
            self.cached += 1
            return {str(k): [(str(v), str(a), str(src)) for v, a, src in entries] for k, entries in raw.items()}
        except (OSError, ValueError, TypeError):
            pass
        parsed = index(source, arch, self.wanted, self._counting)
        if self.write_cache:
            with contextlib.suppress(OSError):
                atomic_write_json(path, parsed)
        return parsed

    def _fill(self, source: drift.Source, arch: str) -> None:
        try:
            found: dict[str, list[drift.IndexEntry]] | None = self._load(source, arch)
        except OperationFailed as exc:
            found = None
            with self._lock:
                self.errors[drift.index_label(source)] = exc.message
        with self._lock:
            self.read[(source, arch)] = found

    def of(self, sources: Iterable[drift.Source], arch: str) -> dict[drift.Source, dict[str, list[drift.IndexEntry]] | None]:
        """The indexes of `sources`, those not read yet fetched at once (one thread each:
        the time is the network's)."""
        wanted = list(dict.fromkeys(sources))
        missing = [s for s in wanted if (s, arch) not in self.read]
        if len(missing) == 1:
            self._fill(missing[0], arch)
        elif missing:
            with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
                list(pool.map(lambda s: self._fill(s, arch), missing))
        return {s: self.read[(s, arch)] for s in wanted}

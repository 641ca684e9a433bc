"""Pure: has the Debian archive moved past a base disk? (nightly's drift check)

The base disk records, when it is built, the archive's Release files it was built from
(each source's `Date` and the sha256 of the file) and its installed packages. The check
goes cheapest first:

1. the Release files now: same Date and hash for every source -> no drift, nothing else
   is fetched;
2. otherwise the Packages indexes of the sources: a package installed in the base for
   which a source offers a newer version (Debian's version order, python-debian) -> drift,
   and the reason names it.

This module parses and compares; `adapters.archive` fetches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from debian.deb822 import Deb822
from debian.debian_support import Version

SECURITY_MARK = "-security"


@dataclass(frozen=True)
class Source:
    """One apt source of the base: `deb <uri> <suite> <component>`."""

    uri: str
    suite: str
    component: str = "main"

    def dists(self) -> str:
        return f"{self.uri.rstrip('/')}/dists/{self.suite}"

    @property
    def security(self) -> bool:
        return self.suite.endswith(SECURITY_MARK)

    def as_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "suite": self.suite, "component": self.component}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Source:
        return cls(str(doc["uri"]), str(doc["suite"]), str(doc.get("component", "main")))


@dataclass(frozen=True)
class ReleaseState:
    """A Release (or InRelease) file as fetched: its Date field and the file's sha256."""

    suite: str
    date: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"suite": self.suite, "date": self.date, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ReleaseState:
        return cls(str(doc["suite"]), str(doc.get("date", "")), str(doc.get("sha256", "")))


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    arch: str
    source: str = ""  # the source package ("" when unknown: same as name)

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "arch": self.arch, "source": self.source or self.name}


@dataclass(frozen=True)
class Newer:
    """A package the archive has in a newer version than the base."""

    name: str
    installed: str
    available: str
    suite: str
    source: str

    @property
    def security(self) -> bool:
        return self.suite.endswith(SECURITY_MARK)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "installed": self.installed, "available": self.available,
                "suite": self.suite, "source": self.source, "security": self.security}


@dataclass(frozen=True)
class Verdict:
    drift: bool
    reason: str
    newer: list[Newer] = field(default_factory=list)
    changed_releases: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"drift": self.drift, "reason": self.reason, "newer": [n.as_dict() for n in self.newer],
                "changed_releases": list(self.changed_releases)}


def _payload(text: str) -> str:
    """An InRelease file's signed text without its OpenPGP armour (a Release file as is)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    body: list[str] = []
    started = False
    for line in lines[1:]:
        if not started:
            if not line.strip():
                started = True  # the armour headers end at the first blank line
            continue
        if line.startswith("-----BEGIN PGP SIGNATURE-----"):
            break
        body.append(line[2:] if line.startswith("- ") else line)  # dash-escaping
    return "\n".join(body) + "\n"


def release_state(suite: str, data: bytes) -> ReleaseState:
    """The Date of a Release/InRelease file and the sha256 of its bytes."""
    para = Deb822(_payload(data.decode("utf-8", "replace")))
    date = para.get("Date", "")
    if not date:
        raise ValueError(f"Release file of {suite} has no Date field")
    return ReleaseState(suite=suite, date=str(date), sha256=hashlib.sha256(data).hexdigest())


def changed_releases(recorded: Iterable[ReleaseState], now: Iterable[ReleaseState]) -> list[str]:
    """The suites whose Release file differs (Date or hash) from the recorded one; a suite
    recorded but not fetched now, or fetched but never recorded, counts as changed."""
    old = {r.suite: r for r in recorded}
    new = {r.suite: r for r in now}
    out = []
    for suite in sorted(set(old) | set(new)):
        a, b = old.get(suite), new.get(suite)
        if a is None or b is None or (a.date, a.sha256) != (b.date, b.sha256):
            out.append(suite)
    return out


def parse_installed(text: str) -> list[Installed]:
    """`dpkg-query -W -f '${Package}\\t${Version}\\t${Architecture}\\t${source:Package}\\n'`
    (the fourth field optional)."""
    out: list[Installed] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 3 or not all(parts[:3]):
            raise ValueError(f"installed packages line {n}: expected name, version and arch: {line!r}")
        out.append(Installed(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return out


IndexEntry = tuple[str, str, str]  # (version, arch, source package)


def parse_packages(text: str, wanted: set[str] | None = None) -> dict[str, list[IndexEntry]]:
    """A Packages index: {package: [(version, arch, source), ...]}, only for `wanted`
    names when given (the index of a suite is tens of MB: paragraphs of other packages are
    skipped by their first line, not parsed)."""
    out: dict[str, list[IndexEntry]] = {}
    for chunk in text.split("\n\n"):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        first = chunk.split("\n", 1)[0]
        if wanted is not None and first.startswith("Package:") and first[8:].strip() not in wanted:
            continue
        para = Deb822(chunk)
        name, version = para.get("Package"), para.get("Version")
        if not name or not version:
            continue
        if wanted is not None and name not in wanted:
            continue
        source = str(para.get("Source", name)).split(" ", 1)[0]  # "openssl (3.0.14-1)" -> "openssl"
        out.setdefault(str(name), []).append((str(version), str(para.get("Architecture", "")), source))
    return out


def newer_packages(installed: Iterable[Installed],
                   indexes: Iterable[tuple[str, Mapping[str, list[IndexEntry]]]]) -> list[Newer]:
    """Installed packages that a suite's index offers in a newer version (the newest offer
    per package), security suites first, then by name."""
    idx = list(indexes)
    found: list[Newer] = []
    for pkg in installed:
        have: Version | None = None
        best: Newer | None = None
        for suite, index in idx:
            for version, arch, source in index.get(pkg.name, []):
                if version == pkg.version or (arch not in (pkg.arch, "all") and pkg.arch != "all"):
                    continue  # the same version (most of them): no need to parse it
                have = have or Version(pkg.version)
                v = Version(version)
                if v > have and (best is None or v > Version(best.available)):
                    best = Newer(pkg.name, pkg.version, version, suite, pkg.source or source)
        if best is not None:
            found.append(best)
    return sorted(found, key=lambda n: (not n.security, n.source, n.name))


def describe(newer: list[Newer]) -> str:
    """'archive bookworm-security has newer openssl 3.0.15-1~deb12u1 > 3.0.14-1~deb12u2, +3 more'"""
    if not newer:
        return "no installed package has a newer version in the archive"
    first = newer[0]
    more = f", +{len(newer) - 1} more" if len(newer) > 1 else ""
    return f"archive {first.suite} has newer {first.name} {first.available} > {first.installed}{more}"


def verdict(changed: list[str], newer: list[Newer] | None) -> Verdict:
    """The decision: nothing changed in the Release files -> no drift (indexes not read);
    changed but nothing newer -> no drift; something newer -> drift."""
    if not changed:
        return Verdict(False, "archive Release files unchanged since the base was built")
    if newer:
        return Verdict(True, describe(newer), newer, changed)
    return Verdict(False, f"archive changed ({', '.join(changed)}) but no installed package has a newer "
                          "version", [], changed)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders versions a and b."""
    va, vb = Version(a), Version(b)
    return (va > vb) - (va < vb)


# -- per image: its own packages (its SBOM) against the suites it installs from ---------------

APT_SOURCES_MARK = "### goldenimage-apt-source "
# what the validation runs on the image (over the SSH connection it already has): each apt
# source file, one-line (.list) or deb822 (.sources), after a marker line naming it
APT_SOURCES_DUMP = (
    "for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; "
    f"do [ -f \"$f\" ] && printf '{APT_SOURCES_MARK}%s\\n' \"$f\" && cat \"$f\" && echo; done; true"
)
SBOM_QUERY_FORMAT = r"${Package}\t${Version}\t${Architecture}\t${source:Package}\n"


def _one_line_sources(text: str) -> list[Source]:
    out: list[Source] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue  # deb-src and anything else: no binaries installed from it
        words = line.split()[1:]
        if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) < 2:
            continue
        uri, suite, *components = words
        if suite.endswith("/"):  # a flat repository: no dists/<suite>/<component>
            continue
        out += [Source(uri, suite, c) for c in components or ["main"]]
    return out


def _deb822_sources(text: str) -> list[Source]:
    out: list[Source] = []
    for para in Deb822.iter_paragraphs(text):
        if "deb" not in str(para.get("Types", "")).split() or str(para.get("Enabled", "yes")).lower() == "no":
            continue
        for uri in str(para.get("URIs", "")).split():
            for suite in str(para.get("Suites", "")).split():
                if suite.endswith("/"):
                    continue
                out += [Source(uri, suite, c) for c in str(para.get("Components", "main")).split() or ["main"]]
    return out


def parse_apt_sources(dump: str) -> list[Source]:
    """The binary apt sources of an image from `APT_SOURCES_DUMP`'s output, in file order,
    each (uri, suite, component) once."""
    files: list[tuple[str, list[str]]] = []
    for line in dump.splitlines():
        if line.startswith(APT_SOURCES_MARK):
            files.append((line[len(APT_SOURCES_MARK):].strip(), []))
        elif files:
            files[-1][1].append(line)
    out: list[Source] = []
    for name, lines in files:
        text = "\n".join(lines) + "\n"
        for s in _deb822_sources(text) if name.endswith(".sources") else _one_line_sources(text):
            if s not in out:
                out.append(s)
    return out


def sources_from_manifest(manifest: Mapping[str, Any]) -> list[Source] | None:
    """The image's recorded apt sources, or None when its manifest has none."""
    raw = manifest.get("apt_sources")
    if not isinstance(raw, list):
        return None
    return [Source.from_dict(s) for s in raw if isinstance(s, Mapping) and s.get("uri") and s.get("suite")]


def installed_from_manifest(manifest: Mapping[str, Any]) -> list[Installed] | None:
    """The image's SBOM as the manifest keeps it ([{name, version, arch, source?}])."""
    raw = manifest.get("packages")
    if not isinstance(raw, list):
        return None
    return [Installed(str(p["name"]), str(p["version"]), str(p.get("arch") or "all"), str(p.get("source") or ""))
            for p in raw if isinstance(p, Mapping) and p.get("name") and p.get("version")]


def image_arch(installed: Iterable[Installed]) -> str:
    """The image's dpkg architecture: the most common one that is not `all` (amd64 if none)."""
    counts: dict[str, int] = {}
    for p in installed:
        if p.arch != "all":
            counts[p.arch] = counts.get(p.arch, 0) + 1
    return max(sorted(counts), key=lambda a: counts[a]) if counts else "amd64"


CURRENT, DRIFTED, UNKNOWN = "current", "drifted", "unknown"


@dataclass(frozen=True)
class ImageDrift:
    """One image's packages against the indexes of the sources it installs from."""

    image: str
    state: str  # current | drifted | unknown
    packages_checked: int
    indexes: list[str]  # the suites read ("<uri> <suite>/<component>")
    newer: list[Newer] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # indexes that could not be read
    note: str = ""

    @property
    def drifted(self) -> bool:
        return self.state == DRIFTED

    def reasons(self) -> list[str]:
        return [package_reason(self.image, n) for n in self.newer]

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "state": self.state, "drifted": self.drifted,
                "packages_checked": self.packages_checked, "indexes": list(self.indexes),
                "newer": [n.as_dict() for n in self.newer], "unreadable": list(self.unreadable),
                "reasons": self.reasons(), **({"note": self.note} if self.note else {})}


def index_label(source: Source) -> str:
    return f"{source.uri.rstrip('/')} {source.suite}/{source.component}"


def package_reason(image: str, n: Newer) -> str:
    """'web: nginx 1.22.1-9 installed, 1.22.1-9+deb12u2 in bookworm-security (security fix)'"""
    kind = "security fix" if n.security else "update"
    return f"{image}: {n.name} {n.installed} installed, {n.available} in {n.suite} ({kind})"


def check_image(image: str, installed: list[Installed] | None, sources: list[Source] | None,
                indexes: Mapping[Source, Mapping[str, list[IndexEntry]] | None]) -> ImageDrift:
    """Drift of one image: any installed package with a newer version (Debian's order) in an
    index of the sources it installs from. An index that could not be read (None) makes the
    answer `unknown` unless another index already shows drift; so does an image without an
    SBOM or without recorded sources."""
    if installed is None:
        return ImageDrift(image, UNKNOWN, 0, [], note="its manifest has no package list (SBOM)")
    if not sources:
        return ImageDrift(image, UNKNOWN, len(installed), [], note="it records no apt sources")
    read = [(s, indexes.get(s)) for s in sources]
    unreadable = [index_label(s) for s, idx in read if idx is None]
    newer = newer_packages(installed, [(s.suite, idx) for s, idx in read if idx is not None])
    state = DRIFTED if newer else (UNKNOWN if unreadable else CURRENT)
    return ImageDrift(image, state, len(installed), [index_label(s) for s, idx in read if idx is not None],
                      newer, unreadable)

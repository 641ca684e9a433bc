"""Pure: which Debian packages changed between two images (from their SBOMs or manifests).

Each package is (name, version, arch). Packages are matched by name and arch; versions are
compared with Debian's rules, so `1.10` is an upgrade from `1.9` and `1:1.0` from `2.0`.
Changes are grouped by source package (when a name -> source map is known, else the binary
name stands for itself), and a new version that a security suite carries is marked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .drift import compare_versions

Package = tuple[str, str, str]  # (name, version, arch)
KINDS = ("added", "removed", "upgraded", "downgraded")


def packages_from_manifest(manifest: Mapping[str, Any]) -> list[Package] | None:
    """The manifest's `packages` ([{name, version, arch}]), or None when it has none."""
    raw = manifest.get("packages")
    if not isinstance(raw, list):
        return None
    return [(str(p["name"]), str(p["version"]), str(p.get("arch", ""))) for p in raw
            if isinstance(p, dict) and p.get("name") and p.get("version")]


def packages_from_sbom(doc: Mapping[str, Any]) -> list[Package]:
    """The packages of a CycloneDX document as `sbom.build` writes it (purl pkg:deb/...)."""
    out: list[Package] = []
    for comp in doc.get("components", []) or []:
        purl = str(comp.get("purl", ""))
        arch = ""
        if "?" in purl:
            for q in purl.split("?", 1)[1].split("&"):
                if q.startswith("arch="):
                    arch = q[5:]
        if comp.get("name") and comp.get("version"):
            out.append((str(comp["name"]), str(comp["version"]), arch))
    return out


def diff(old: Iterable[Package], new: Iterable[Package], *, sources: Mapping[str, str] | None = None,
         security: Collection[tuple[str, str]] = ()) -> dict[str, Any]:
    """Changes from `old` to `new`: {"changes": [...], "counts": {kind: n}, "by_source":
    {source: [change, ...]}}. A change is {name, arch, source, kind, old, new, security}.
    `security`: (name, version) pairs a security suite carries."""
    src = sources or {}
    a = {(n, arch): v for n, v, arch in old}
    b = {(n, arch): v for n, v, arch in new}
    changes: list[dict[str, Any]] = []
    for key in sorted(set(a) | set(b)):
        name, arch = key
        ov, nv = a.get(key), b.get(key)
        if ov == nv:
            continue
        if ov is None:
            kind = "added"
        elif nv is None:
            kind = "removed"
        else:
            kind = "upgraded" if compare_versions(nv, ov) > 0 else "downgraded"
            if compare_versions(nv, ov) == 0:
                continue  # the same version spelt differently ("1.0" and "0:1.0")
        changes.append({
            "name": name, "arch": arch, "source": src.get(name, name), "kind": kind, "old": ov, "new": nv,
            "security": nv is not None and (name, nv) in security,
        })
    by_source: dict[str, list[dict[str, Any]]] = {}
    for c in changes:
        by_source.setdefault(c["source"], []).append(c)
    return {
        "changes": changes,
        "counts": {k: sum(1 for c in changes if c["kind"] == k) for k in KINDS},
        "security": sum(1 for c in changes if c["security"]),
        "by_source": {k: by_source[k] for k in sorted(by_source)},
    }

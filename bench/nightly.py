"""Benchmark: a no-change `invoke nightly` (drift check included), against the bake it avoids.

Prints one JSON document:
  mode                    "baked": the home holds validated base, web and cache images for
                          the current inputs (made by `invoke bake --all`), measured as is;
                          "synthetic": it does not, so a temporary home stands in -- a cached
                          base disk record and the three images registered with the current
                          fingerprints, each with an SBOM of this host's ~770 package names
                          at the real archive's current versions -- and no bake is compared
  nightly_seconds         median wall time of `invoke nightly --json` (a new process each,
                          imports included) answering "no drift", over --runs runs, after
                          one unmeasured run that fills the index cache
  nightly_steps           seconds per step of the last run (drift, bake, promote, rotate, gc, report)
  packages_checked        per image, the SBOM packages compared with the archive's indexes
  index_bytes_read        bytes the measured run read from the archive (the InRelease files
                          when the archive has not moved); first_run_index_bytes_read: the
                          run that read the Packages indexes too
  full_bake_seconds       the avoided bakes: the sum of the three images' bake phases (mode "baked")
  archive_uncached_index_seconds  the three Packages.xz indexes of the real archive read and
                          parsed for ~770 names, no cache (null offline)

Usage: .venv/bin/python bench/nightly.py [--home DIR] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from goldenimage import commands, drift  # noqa: E402
from goldenimage import fingerprint as fp  # noqa: E402
from goldenimage.adapters import archive, baseimage  # noqa: E402
from goldenimage.errors import GoldenImageError  # noqa: E402
from goldenimage.progress import Reporter  # noqa: E402
from goldenimage.settings import load_environment  # noqa: E402
from goldenimage.store import ImageRecord, LocalStore  # noqa: E402
from goldenimage.targets import target_for  # noqa: E402


def bench_project(tmp: Path) -> Path:
    """A copy of the project's inputs whose local environment's nightly only plans gc and
    reports into `tmp` (the fingerprint does not read extra.nightly: the image stays up to date)."""
    import yaml

    root = tmp / "project"
    for part in ("packer", "playbooks", "roles", "inventories", "tests/image"):
        shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("tasks.py", "ansible.cfg"):
        shutil.copy2(ROOT / f, root / f)
    settings = root / "inventories" / "local" / "goldenimage.yml"
    doc = yaml.safe_load(settings.read_text())
    doc.setdefault("extra", {})["nightly"] = {"gc": "plan", "report_dir": str(tmp / "reports")}
    settings.write_text(yaml.safe_dump(doc))
    return root


def run_nightly(env: dict[str, str], root: Path) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "invoke", "nightly", "--json"], cwd=root, env=env,
                         capture_output=True, text=True)
    took = time.monotonic() - start
    try:
        doc: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError:
        sys.exit(f"invoke nightly printed no JSON (exit {res.returncode}): {res.stderr[-2000:]}")
    return took, doc


FAMILY = ("base", "web", "cache")


def baked_home(home: Path) -> dict[str, Any] | None:
    """The newest validated image of each of base, web and cache under `home` whose
    fingerprint is today's, with its manifest; None unless all three are there."""
    store = LocalStore(home / "store")
    if not store.catalog_path.is_file():
        return None
    os.environ["GOLDENIMAGE_HOME"] = str(home)
    out: dict[str, Any] = {}
    try:
        rows = commands.fingerprint_cmd("local", None, False, None, Reporter(quiet=True))["images"]
    except GoldenImageError:
        return None
    for row in rows:
        if row["image"] in FAMILY and row.get("up_to_date"):
            out[row["image"]] = {"image_id": row["up_to_date"], "manifest": store.manifest(row["up_to_date"])}
    return out if set(out) == set(FAMILY) else None


def current_sbom(sources: list[drift.Source], names: list[str]) -> list[dict[str, str]]:
    """An SBOM of `names` at the newest versions the archive has now (so the run is a
    no-change one): what a freshly baked image holds."""
    ix = archive.Indexes(set(names))
    found = ix.of(sources, "amd64")
    newest: dict[str, tuple[str, str, str]] = {}
    for idx in found.values():
        for name, entries in (idx or {}).items():
            for version, arch, source in entries:
                if arch not in ("amd64", "all"):
                    continue
                if name not in newest or drift.compare_versions(version, newest[name][0]) > 0:
                    newest[name] = (version, arch, source)
    return [{"name": n, "version": v, "arch": a, "source": src} for n, (v, a, src) in sorted(newest.items())]


def synthetic_home(tmp: Path) -> Path:
    """A home whose cached base record names the real archive and whose store holds validated
    base, web and cache images with today's fingerprints (no VM is built), each with an SBOM of
    this host's package names (~770) at the archive's current versions, and its apt sources."""
    home = tmp / "home"
    os.environ["GOLDENIMAGE_HOME"] = str(home)
    env = load_environment("local", ROOT)
    spec = env.settings.base
    version = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True).stdout.split()[-1]
    key = baseimage.recipe_key(spec, version)
    base = home / "base" / key
    base.mkdir(parents=True)
    (base / "base.qcow2").write_bytes(b"stand-in base disk")
    sources = baseimage.archive_sources(spec)
    releases = [r.as_dict() for r in archive.releases(sources)]
    names = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\n"], capture_output=True, text=True).stdout.split()
    sbom = current_sbom(sources, names)
    (base / "base.json").write_text(json.dumps({
        "sha256": hashlib.sha256(b"stand-in base disk").hexdigest(), "recipe": key,
        "archive": {"sources": [s.as_dict() for s in sources], "releases": releases, "arch": "amd64",
                    "installed": sbom[: len(sbom) // 2]}}))
    store = LocalStore(home / "store")
    target = target_for(env)
    extra = commands.bake_extra(env, "base", Reporter(quiet=True))
    known: dict[str, list[fp.FingerprintInput]] = {}

    def inputs_of(name: str) -> list[fp.FingerprintInput]:
        if name not in known:
            known[name] = fp.collect(ROOT, env, name, {
                **extra, **commands._parent_extra(env, target, target.parent_registry(), name, inputs_of)})
        return known[name]

    for n, name in enumerate(FAMILY):
        inputs = inputs_of(name)
        with store.workspace() as ws:
            (ws / "image").mkdir()
            (ws / "image" / "disk.qcow2").write_bytes(b"qcow2 " + name.encode())
            parent = env.bake_parents.get(name)
            ancestry = {"parent": {"name": parent, "id": f"{parent}-bench"}} if parent else {}
            rec = ImageRecord(id=f"{name}-bench", name=name, env="local", fingerprint=fp.compute(inputs),
                              created=f"2026-11-30T00:0{n}:00Z", status="validated", artifact="disk.qcow2",
                              extra=ancestry)
            store.put(rec, {"id": rec.id, "name": name, "env": "local", "fingerprint": rec.fingerprint,
                            "created": rec.created, "artifact": "disk.qcow2", "status": "validated",
                            "fingerprint_inputs": fp.as_manifest(inputs), "base": {"source": f"mmdebstrap:{key}"},
                            "packages": sbom, "apt_sources": [s.as_dict() for s in sources],
                            **ancestry}, ws / "image")
    return home


def archive_figures() -> dict[str, Any]:
    """The drift check's index path against the real Debian archive without the cache: the
    three Packages.xz indexes read and parsed for ~770 package names."""
    spec = load_environment("local", ROOT).settings.base
    sources = baseimage.archive_sources(spec)
    names = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\n"], capture_output=True, text=True).stdout.split()
    out: dict[str, Any] = {"archive_uncached_index_seconds": None}
    start = time.monotonic()
    ix = archive.Indexes(set(names))
    ix.of(sources, "amd64")
    if ix.errors:
        out["archive_error"] = sorted(ix.errors.values())
    else:
        out["archive_uncached_index_seconds"] = round(time.monotonic() - start, 3)
        out["archive_uncached_index_bytes"] = ix.bytes_read
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=os.environ.get("GOLDENIMAGE_HOME"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from goldenimage.paths import data_home

    home = Path(args.home).resolve() if args.home else data_home()
    tmp = Path(tempfile.mkdtemp(prefix="bench-nightly-"))
    try:
        baked = baked_home(home)
        mode = "baked" if baked else "synthetic"
        if baked is None:
            home = synthetic_home(tmp)
        # reports of the benchmark go to a temporary directory, and gc stays a plan
        project = bench_project(tmp)
        env = {**os.environ, "GOLDENIMAGE_ROOT": str(project), "GOLDENIMAGE_HOME": str(home)}
        times, doc = [], {}
        first: dict[str, Any] = {}
        for n in range(args.runs + 1):  # the first fills the index cache; the others are measured
            took, doc = run_nightly({**env}, project)
            if n == 0:
                first = doc
                continue
            times.append(took)
            if doc.get("bake", {}).get("images") or doc.get("drift", {}).get("drift"):
                sys.exit(f"not a no-change run: {doc.get('summary')}: {json.dumps(doc.get('drift'))[:2000]}")
        arch = (doc.get("drift") or {}).get("archive") or {}
        result: dict[str, Any] = {
            "mode": mode, "nightly_seconds": round(statistics.median(times), 3),
            "nightly_runs": [round(t, 3) for t in times],
            "nightly_steps": {s["step"]: s["seconds"] for s in doc.get("steps", [])},
            "nightly_ok": doc.get("ok"), "summary": doc.get("summary"),
            "packages_checked": {i["image"]: i.get("packages_checked") for i in doc["drift"]["images"]},
            "indexes": arch.get("indexes"), "index_bytes_read": arch.get("bytes_read"),
            "indexes_from_cache": arch.get("from_cache"),
            "first_run_index_bytes_read": ((first.get("drift") or {}).get("archive") or {}).get("bytes_read"),
        }
        if baked:
            full = sum(sum(b["manifest"].get("durations", {}).values()) for b in baked.values())
            result.update(image_ids={k: b["image_id"] for k, b in baked.items()}, full_bake_seconds=round(full, 1),
                          ratio=round(statistics.median(times) / full, 5) if full else None)
        else:
            result["note"] = ("no validated image for today's inputs under the home: the no-change run was "
                              "measured on a stand-in home (base record + registered image), and no bake to "
                              "compare with was measured")
        result.update(archive_figures())
        result["load_average_1min"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: a no-change `invoke nightly` (drift check included), against the bake it avoids.

Prints one JSON document:
  mode                    "baked": the home holds a validated `web` image for the current
                          inputs (made by `invoke bake`), measured as is; "synthetic": it
                          does not, so a temporary home stands in -- a cached base disk
                          record and a validated image registered with the current
                          fingerprint -- and no bake is compared
  nightly_seconds         median wall time of `invoke nightly --json` (a new process each,
                          imports included) answering "no drift", over --runs runs
  nightly_steps           seconds per step of the last run (drift, bake, promote, rotate, gc, report)
  full_bake_seconds       the avoided bake: the sum of the image's bake phases (mode "baked")
  archive_release_check_seconds   the cheap drift check against the real Debian archive:
                          the InRelease files of bookworm, -updates, -security (null offline)
  archive_index_check_seconds     the expensive path: the three Packages.xz indexes read and
                          compared for the base's packages (null offline)

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


def baked_home(home: Path) -> dict[str, Any] | None:
    """The newest validated web image of `home` whose fingerprint is today's, with its manifest."""
    store = LocalStore(home / "store")
    if not store.catalog_path.is_file():
        return None
    env = load_environment("local", ROOT)
    os.environ["GOLDENIMAGE_HOME"] = str(home)
    try:
        row = commands.fingerprint_cmd("local", "web", False, None, Reporter(quiet=True))["images"][0]
    except GoldenImageError:
        return None
    hit = row.get("up_to_date")
    if not hit:
        return None
    del env
    return {"image_id": hit, "manifest": store.manifest(hit)}


def synthetic_home(tmp: Path) -> Path:
    """A home whose cached base record matches the real archive now and whose store holds a
    validated web image with the current fingerprint (no VM is built)."""
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
    (base / "base.json").write_text(json.dumps({
        "sha256": hashlib.sha256(b"stand-in base disk").hexdigest(), "recipe": key,
        "archive": {"sources": [s.as_dict() for s in sources], "releases": releases, "arch": "amd64",
                    "installed": [{"name": "openssl", "version": "3.0.0-1", "arch": "amd64"}]}}))
    inputs = fp.collect(ROOT, env, "web", commands.bake_extra(env, "web", Reporter(quiet=True)))
    store = LocalStore(home / "store")
    with store.workspace() as ws:
        (ws / "image").mkdir()
        (ws / "image" / "disk.qcow2").write_bytes(b"qcow2")
        rec = ImageRecord(id="web-bench", name="web", env="local", fingerprint=fp.compute(inputs),
                          created="2026-11-30T00:00:00Z", status="validated", artifact="disk.qcow2")
        store.put(rec, {"id": rec.id, "name": "web", "env": "local", "fingerprint": rec.fingerprint,
                        "created": rec.created, "artifact": "disk.qcow2", "fingerprint_inputs": fp.as_manifest(inputs),
                        "base": {"source": f"mmdebstrap:{key}"}}, ws / "image")
    return home


def archive_figures() -> dict[str, Any]:
    """The drift check's two paths against the real Debian archive (bookworm + -updates + -security)."""
    spec = load_environment("local", ROOT).settings.base
    sources = baseimage.archive_sources(spec)
    out: dict[str, Any] = {"archive_release_check_seconds": None, "archive_index_check_seconds": None}
    try:
        start = time.monotonic()
        now = archive.releases(sources)
        out["archive_release_check_seconds"] = round(time.monotonic() - start, 3)
        record = {"sources": [s.as_dict() for s in sources], "arch": "amd64",
                  "releases": [{**r.as_dict(), "sha256": "0"} for r in now],  # forces the index path
                  "installed": [drift.Installed(n, "0", "amd64").as_dict() for n in
                                ("openssl", "libssl3", "libc6", "systemd", "openssh-server", "python3.11", "sudo",
                                 "linux-image-cloud-amd64", "curl", "ca-certificates", "tzdata", "bash")]}
        start = time.monotonic()
        checked = archive.check(record)
        out["archive_index_check_seconds"] = round(time.monotonic() - start, 3)
        out["archive_index_check_newer"] = len(checked.verdict.newer)
    except GoldenImageError as exc:
        out["archive_error"] = exc.message
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
        for _ in range(args.runs):
            took, doc = run_nightly({**env}, project)
            times.append(took)
            if doc.get("bake", {}).get("images") or doc.get("drift", {}).get("drift"):
                sys.exit(f"not a no-change run: {doc.get('summary')}: {json.dumps(doc.get('drift'))[:2000]}")
        result: dict[str, Any] = {
            "mode": mode, "nightly_seconds": round(statistics.median(times), 3),
            "nightly_runs": [round(t, 3) for t in times],
            "nightly_steps": {s["step"]: s["seconds"] for s in doc.get("steps", [])},
            "nightly_ok": doc.get("ok"), "summary": doc.get("summary"),
        }
        if baked:
            durations = baked["manifest"].get("durations", {})
            full = sum(durations.values())
            result.update(image_id=baked["image_id"], full_bake_seconds=round(full, 1),
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

"""Benchmark: `invoke bake` when the image is up to date, against the full bake that made it.

Prints one JSON document:
  noop_seconds        median wall time of `invoke bake --json` (process start included) over
                      --runs runs, each answering "up to date" with no VM booted (web and
                      its parent base: both are looked up, both skipped)
  noop_cpu_seconds    median CPU time (user + system) of those processes and their children
  full_bake_seconds   wall time of the bakes the no-op skips: the sum of the phases of web's
                      and its parent's manifests
  ratio               noop_seconds / full_bake_seconds
With --against REV, the same runs with the code and inputs of REV (a git worktree under
/tmp), side by side.

Usage: .venv/bin/python bench/noop_bake.py [--home DIR] [--runs 5] [--against REV]
       .venv/bin/python bench/noop_bake.py --make-home DIR [--artifact-mib 400]
The home must hold validated images of `web` and `base` for the current inputs: run `invoke
bake` first, or let --make-home write the state a finished bake of both leaves, without
booting anything: a cached base disk record, the accelerator answer (tcg), and the two
images registered in the store with the fingerprints this checkout computes, each with an
artifact of --artifact-mib MiB of bytes and the phase durations of stop 17's measured bakes
(bench/README.md, family).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# measured bakes (bench/README.md, family, stop 17): web on the validated base 182 s; base ~210 s
DURATIONS = {
    "base": {"base": 0.2, "fingerprint": 0.3, "build": 141.0, "validate": 66.0, "register": 2.5},
    "web": {"base": 0.9, "fingerprint": 0.3, "build": 115.0, "validate": 64.0, "register": 2.1},
}


def make_home(home: Path, artifact_mib: int) -> dict[str, Any]:
    """The state a finished `invoke bake` of base and web leaves in `home` (no VM)."""
    sys.path.insert(0, str(ROOT / "src"))
    os.environ["GOLDENIMAGE_HOME"] = str(home)
    os.environ["GOLDENIMAGE_ROOT"] = str(ROOT)
    import io
    import platform
    from types import SimpleNamespace

    from goldenimage import fingerprint
    from goldenimage.adapters import baseimage, proc, qemu
    from goldenimage.build import NewImage, fingerprint_extra, parent_inputs
    from goldenimage.fsutil import atomic_write_json, sha256_file
    from goldenimage.models import ImageRecord
    from goldenimage.paths import base_cache_dir
    from goldenimage.progress import Reporter
    from goldenimage.settings import load_environment
    from goldenimage.targets import target_for

    env = load_environment("local", ROOT)
    cache = base_cache_dir()
    version = proc.output([proc.which("mmdebstrap", "mmdebstrap"), "--version"]).split()[-1]
    key = baseimage.recipe_key(env.settings.base, version)
    (cache / key).mkdir(parents=True, exist_ok=True)
    disk = cache / key / "base.qcow2"
    disk.write_bytes(b"a base disk stand-in")
    atomic_write_json(cache / key / baseimage.RECORD, {"sha256": sha256_file(disk), "recipe": key,
                                                       "mmdebstrap": version})
    atomic_write_json(cache / "accelerator.json", {"key": f"{qemu.qemu_version()}|{platform.release()}",
                                                   "accelerator": "tcg"})
    target = target_for(env)
    reporter = Reporter(io.StringIO())
    tools = target.detect_tools()
    store = target.store  # type: ignore[attr-defined]
    made: dict[str, Any] = {}
    parent: ImageRecord | None = None
    for name in ("base", "web"):
        base = target.resolve_base(reporter, parent)
        inputs = fingerprint.collect(env.root, env, name, extra={**fingerprint_extra(
            base.identity, tools.packer.version_text, tools.ansible), **parent_inputs(parent)})
        img = NewImage.start(name, fingerprint.compute(inputs))
        with store.workspace() as ws:
            files = ws / "image"
            files.mkdir()
            with (files / "disk.qcow2").open("wb") as fh:
                for _ in range(artifact_mib):
                    fh.write(os.urandom(1 << 16) * 16)  # 1 MiB, not sparse
            ancestry = {"parent": {"id": parent.id, "name": parent.name, "fingerprint": parent.fingerprint,
                                   "channel": None}} if parent else {}
            rec = ImageRecord(id=img.id, name=name, env=env.name, fingerprint=img.fingerprint,
                              created=img.build_time, status="validated", artifact="disk.qcow2", extra=ancestry)
            manifest = {"id": img.id, "name": name, "env": env.name, "fingerprint": img.fingerprint,
                        "fingerprint_inputs": fingerprint.as_manifest(inputs), "created": img.build_time,
                        "status": "validated", "artifact": "disk.qcow2",
                        "artifact_sha256": sha256_file(files / "disk.qcow2"), **ancestry,
                        "validation": {"status": "validated", "passed": 1, "failed": 0, "errors": 0, "skipped": 0,
                                       "failures": []},
                        "durations": DURATIONS[name]}
            # signed as a bake's register signs (the home's key, made on first use): a child's
            # bake verifies its parent's attestation
            job = SimpleNamespace(image=SimpleNamespace(id=img.id, name=name), parent=parent)
            target._sign(job, manifest, files, reporter)  # type: ignore[attr-defined]
            store.put(rec, manifest, files)
        parent = store.get(img.id)
        made[name] = img.id
        time.sleep(1.1)  # ids carry the second they were made
    return {"home": str(home), "images": made, "artifact_mib": artifact_mib}


def measure(root: Path, home: str | None, runs: int, pythonpath: str | None) -> dict[str, Any]:
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(root)}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if home:
        env["GOLDENIMAGE_HOME"] = home
    times: list[float] = []
    cpus: list[float] = []
    doc: dict[str, Any] = {}
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "invoke", "bake", "--json"], cwd=root, env=env,
                             capture_output=True, text=True)
        times.append(time.monotonic() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        try:
            doc = json.loads(res.stdout)
        except ValueError:
            sys.exit(f"invoke bake printed no JSON document: {res.stderr[-2000:]}")
        if not doc.get("skipped"):
            sys.exit(f"the image was not up to date: run `invoke bake` first (or --make-home): {res.stderr[-2000:]}")
    phases: dict[str, Any] = {}
    for image_id in [doc["image_id"], *(p["image_id"] for p in doc.get("parents", []))]:
        manifest = Path(str(doc["artifact"])).parent.parent / image_id / "manifest.json"
        phases[image_id] = json.loads(manifest.read_text()).get("durations", {})
    full = sum(sum(d.values()) for d in phases.values())
    noop = statistics.median(times)
    return {"noop_seconds": round(noop, 3), "noop_runs": [round(t, 3) for t in times],
            "noop_cpu_seconds": round(statistics.median(cpus), 3), "noop_cpu_runs": [round(c, 3) for c in cpus],
            "full_bake_seconds": round(full, 1), "full_bake_phases": phases,
            "ratio": round(noop / full, 5) if full else None, "image_id": doc["image_id"]}


def worktree(rev: str) -> tuple[Path, bool]:
    """A checkout of `rev` under /tmp, and whether it was made now (then removed afterwards)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    path = Path("/tmp") / f"goldenimage-noop-{sha}"
    if path.exists():
        return path, False
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha], check=True,
                   capture_output=True)
    return path, True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--against", default=None, help="also measure this git revision (a worktree under /tmp)")
    ap.add_argument("--make-home", default=None, help="write the state of a finished bake of base and web here")
    ap.add_argument("--artifact-mib", type=int, default=400)
    args = ap.parse_args()
    if args.make_home:
        print(json.dumps(make_home(Path(args.make_home).resolve(), args.artifact_mib), indent=2))
        return
    out: dict[str, Any] = {"load_average_1min": os.getloadavg()[0]}
    if args.against:
        old, made = worktree(args.against)
        try:
            out["against"] = {"rev": args.against, **measure(old, args.home, args.runs, str(old / "src"))}
        finally:
            if made:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    out["this"] = measure(ROOT, args.home, args.runs, str(ROOT / "src"))
    if args.against:
        out["wall_ratio_this_vs_against"] = round(out["this"]["noop_seconds"] / out["against"]["noop_seconds"], 3)
    out["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

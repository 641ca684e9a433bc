"""Benchmark: what image families save, and what `bake --all --jobs 2` buys.

Prints one JSON document:
  rebake        after a change to roles/web only, side by side in one run:
                  on_base     `invoke bake --image web` in a project copy whose web role
                              changed, with a store holding the validated base: base is
                              skipped, web is baked on the base image
                  scratch     the same web image without a parent (playbook roles base + web +
                              hygiene, from the base disk), in a store of its own
                  ratio       on_base / scratch seconds (goal <= 0.6)
  all           `invoke bake --all` of base, web and cache from an empty store (shared base
                disk cache), with --jobs 1 and then --jobs 2: seconds each, and the ratio
  load_average  the host's 1-minute load before and after (wall times move with it)

Each bake is a real one (Packer + QEMU + Ansible + testinfra): ~45-60 minutes in all under TCG
on 2 cores. --skip-all measures the rebake only; with --home, a validated base there is
reused (else it is baked first, unmeasured).

Usage: .venv/bin/python bench/family.py [--home DIR] [--skip-all] [--skip-rebake]   (as root)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "inventories/local/goldenimage.yml"
BASE_CACHE = Path()  # set by main: one base disk cache for every bake
COPY = ("packer", "playbooks", "roles", "inventories", "tests/image", "ansible.cfg", "tasks.py")


def copy_project(dest: Path) -> Path:
    for part in COPY:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / part)
    return dest


def bake(project: Path, home: Path, *args: str) -> dict[str, Any]:
    """One `invoke bake` in `project` with store `home` (every bake shares one base disk
    cache); its JSON result and wall seconds."""
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(project), "GOLDENIMAGE_HOME": str(home),
           "GOLDENIMAGE_BASE_CACHE": str(BASE_CACHE)}
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "invoke", "bake", *args, "--json"], cwd=project, env=env,
                         capture_output=True, text=True)
    seconds = round(time.monotonic() - start, 1)
    if res.returncode != 0:
        raise SystemExit(f"bake {' '.join(args)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return {"seconds": seconds, "result": json.loads(res.stdout)}


def change_web_role(project: Path) -> None:
    defaults = project / "roles/web/defaults/main.yml"
    defaults.write_text(defaults.read_text() + f"# bench/family.py change {time.time()}\n")


def rebake(work: Path, home: Path) -> dict[str, Any]:
    project = copy_project(work / "rebake")
    change_web_role(project)
    on_base = bake(project, home, "--image", "web")
    doc = on_base["result"]
    assert doc["parents"][0]["skipped"], "the base must be up to date for this measurement"

    scratch_project = copy_project(work / "scratch")
    change_web_role(scratch_project)
    (scratch_project / "playbooks/web.yml").write_text(
        (scratch_project / "playbooks/web.yml").read_text().replace("    - role: web\n",
                                                                     "    - role: base\n    - role: web\n"))
    settings = scratch_project / SETTINGS
    # no parent, and the checks a web on base runs (common + base + web), not common + web
    settings.write_text(settings.read_text().replace(
        "    parent: base          #",
        "    tests: [tests/image/common, tests/image/base, tests/image/web]\n    #", 1))
    scratch = bake(scratch_project, work / "scratch-home", "--image", "web")

    def row(b: dict[str, Any]) -> dict[str, Any]:
        r = b["result"]
        manifest = json.loads((Path(r["artifact"]).parent / "manifest.json").read_text())
        return {"seconds": b["seconds"], "durations": r.get("durations"), "image_id": r.get("image_id"),
                "checks": manifest["validation"]["passed"]}

    rows = {"on_base": row(on_base), "scratch": row(scratch)}
    assert rows["on_base"]["checks"] == rows["scratch"]["checks"], "both sides must run the same checks"
    return {**rows,
            "ratio": round(on_base["seconds"] / scratch["seconds"], 3)}


def bake_all(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for jobs in (1, 2):
        b = bake(ROOT, work / f"all-{jobs}", "--all", "--jobs", str(jobs))
        out[f"jobs_{jobs}"] = {"seconds": b["seconds"],
                               "images": {r["image"]: r["state"] for r in b["result"]["images"]}}
    out["ratio"] = round(out["jobs_2"]["seconds"] / out["jobs_1"]["seconds"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", help="a GOLDENIMAGE_HOME holding a validated base image (else one is baked)")
    ap.add_argument("--skip-all", action="store_true", help="skip the bake --all --jobs 1/2 comparison")
    ap.add_argument("--skip-rebake", action="store_true", help="skip the rebake comparison")
    args = ap.parse_args()
    global BASE_CACHE
    work = Path(tempfile.mkdtemp(prefix="gi-bench-family-"))
    home = Path(args.home) if args.home else work / "home"
    BASE_CACHE = Path(os.environ.get("GOLDENIMAGE_BASE_CACHE") or home / "base").resolve()
    if not args.skip_rebake:  # a validated base of these inputs first (skipped if there; not measured)
        bake(ROOT, home, "--image", "base")
    load = [round(os.getloadavg()[0], 2)]
    doc: dict[str, Any] = {"cores": os.cpu_count()}
    try:
        if not args.skip_rebake:
            doc["rebake"] = rebake(work, home)
        if not args.skip_all:
            doc["all"] = bake_all(work)
    finally:
        load.append(round(os.getloadavg()[0], 2))
        doc["load_average"] = load
        print(json.dumps(doc, indent=2))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

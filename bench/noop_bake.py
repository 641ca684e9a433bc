"""Benchmark: `invoke bake` when the image is up to date, against the full bake that made it.

Prints one JSON document:
  noop_seconds        median wall time of `invoke bake --json` (process start included) over
                      --runs runs, each answering "up to date" with no VM booted
  full_bake_seconds   wall time of the bake that produced the image (sum of its phases, from
                      its manifest)
  ratio               noop_seconds / full_bake_seconds

Usage: .venv/bin/python bench/noop_bake.py [--home DIR] [--runs 5]
The home must hold a validated image of `web` for the current inputs (run `invoke bake` first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=None)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(ROOT)}
    if args.home:
        env["GOLDENIMAGE_HOME"] = args.home
    times: list[float] = []
    doc: dict[str, object] = {}
    for _ in range(args.runs):
        start = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "invoke", "bake", "--json"], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        times.append(time.monotonic() - start)
        doc = json.loads(res.stdout)
        if not doc.get("skipped"):
            sys.exit("the image was not up to date: run `invoke bake` first, then this benchmark")
    manifest_path = Path(str(doc["artifact"])).parent / "manifest.json"
    durations = json.loads(manifest_path.read_text()).get("durations", {})
    full = sum(durations.values())
    noop = statistics.median(times)
    print(json.dumps({
        "noop_seconds": round(noop, 3), "noop_runs": [round(t, 3) for t in times],
        "full_bake_seconds": round(full, 1), "full_bake_phases": durations,
        "ratio": round(noop / full, 5) if full else None, "image_id": doc["image_id"],
    }, indent=2))


if __name__ == "__main__":
    main()

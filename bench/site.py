"""Benchmark: `invoke site` over a synthetic registry of 1,000 images and 100 channel moves.

A local store in a temporary home gets 1,000 validated images of 10 names (each manifest with
400 packages and a bake's timings, as a real bake writes them) and 100 promotions spread over
the 10 names' `stable` channels. Then, each over --runs runs:

  render_seconds   `site_render.render` of the gathered snapshot (pure: the pages as text)
  site_seconds     `site.site`, in this process: gather from the store, render, write, swap in
  process_seconds  `invoke site --json` as a new process (imports and settings included)

and the site's size: pages, total bytes, the largest page's bytes. Goal: site_seconds <= 2.

Usage: .venv/bin/python bench/site.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from goldenimage import site, site_render  # noqa: E402
from goldenimage.progress import Reporter  # noqa: E402
from goldenimage.settings import load_environment  # noqa: E402
from goldenimage.store import ImageRecord, LocalStore  # noqa: E402

NAMES = [f"img{n}" for n in range(10)]
PACKAGES = [{"name": f"pkg{k}", "version": f"1.{k}-1", "arch": "amd64"} for k in range(400)]
TIMINGS = {"packer_steps": [{"step": f"step {k}", "seconds": 2.0 + k} for k in range(12)],
           "ansible_tasks": [{"task": f"task {k}", "role": "web", "host": "default", "status": "ok",
                              "seconds": 0.5 + k % 7} for k in range(60)]}


def populate(store: LocalStore, images: int, moves: int) -> None:
    for i in range(images):
        name = NAMES[i % len(NAMES)]
        rec = ImageRecord(id=f"{name}-{i:05d}", name=name, env="local", fingerprint=f"sha256:{i:064x}",
                          created=f"2026-{1 + i * 12 // images:02d}-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                          status="validated", artifact="disk.qcow2")
        with store.workspace() as ws:
            (ws / "image").mkdir()
            (ws / "image" / "disk.qcow2").write_bytes(b"qcow2")
            store.put(rec, {"id": rec.id, "name": name, "env": "local", "fingerprint": rec.fingerprint,
                            "created": rec.created, "packages": PACKAGES, "timings": TIMINGS,
                            "validation": {"status": "validated", "passed": 56, "failed": 0}}, ws / "image")
    for m in range(moves):
        store.promote(f"{NAMES[m % len(NAMES)]}-{(images - 1 - m) // len(NAMES) * len(NAMES) + m % len(NAMES):05d}",
                      "stable")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--moves", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="goldenimage-bench-site-") as tmp:
        home = Path(tmp) / "home"
        os.environ["GOLDENIMAGE_HOME"] = str(home)
        start = time.monotonic()
        populate(LocalStore(home / "store"), args.images, args.moves)
        setup = time.monotonic() - start
        env = load_environment("local", ROOT)
        quiet = Reporter(quiet=True)
        snap = site.gather(env, quiet)
        render, whole, process = [], [], []
        for _ in range(args.runs):
            t = time.monotonic()
            pages = site_render.render(snap)
            render.append(time.monotonic() - t)
            t = time.monotonic()
            result = site.site("local", str(Path(tmp) / "site"), quiet, root=ROOT)
            whole.append(time.monotonic() - t)
            t = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "invoke", "site", "--json", "--out", str(Path(tmp) / "site2")],
                                  cwd=ROOT, env={**os.environ, "GOLDENIMAGE_ROOT": str(ROOT)},
                                  capture_output=True, text=True, check=True)
            process.append(time.monotonic() - t)
            json.loads(proc.stdout)
        sizes = {p: len(t.encode()) for p, t in pages.items()}
        print(json.dumps({
            "images": args.images, "channel_moves": args.moves, "setup_seconds": round(setup, 1),
            "render_seconds": [round(x, 3) for x in render], "render_median": round(statistics.median(render), 3),
            "site_seconds": [round(x, 3) for x in whole], "site_median": round(statistics.median(whole), 3),
            "process_seconds": [round(x, 3) for x in process], "process_median": round(statistics.median(process), 3),
            "pages": result["pages"], "bytes": result["bytes"], "largest_page": max(sizes, key=sizes.__getitem__),
            "largest_page_bytes": max(sizes.values()), "load_average_1min": round(os.getloadavg()[0], 2),
        }, indent=2))


if __name__ == "__main__":
    main()

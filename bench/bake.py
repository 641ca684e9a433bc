"""Benchmark: a full local bake, per phase, against a plain `packer build` of the same build.

Prints one JSON document:
  bake.durations      wall seconds per phase of `invoke bake --force --json` (base cached)
  bake.total          wall seconds of the whole command, process start included
  packer_direct       wall seconds of `packer build` run by hand with the same staged
                      templates and an equivalent var file (same base, accelerator, key setup)
  overhead_build_pct  (bake build phase - packer_direct) / packer_direct * 100

Usage: .venv/bin/python bench/bake.py [--home DIR]   (needs root, like a bake)
Runs two VM builds and one validation boot: ~15 minutes under TCG.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from goldenimage import build as bk  # noqa: E402
from goldenimage.adapters import baseimage, qemu  # noqa: E402
from goldenimage.fsutil import atomic_write_json  # noqa: E402
from goldenimage.paths import base_cache_dir  # noqa: E402
from goldenimage.progress import Reporter  # noqa: E402
from goldenimage.settings import load_environment  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=None, help="GOLDENIMAGE_HOME to use (default: a temp dir)")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="gi-bench-"))
    os.environ["GOLDENIMAGE_HOME"] = str(home)
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(ROOT)}

    # warm the base cache (and the KVM probe) so both sides start from the same cached base disk
    subprocess.run([sys.executable, "-m", "invoke", "fingerprint", "--json"], cwd=ROOT, env=env,
                   capture_output=True, check=False)
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "invoke", "bake", "--force", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    total = time.monotonic() - start
    if res.returncode != 0:
        sys.exit(f"bake failed: {res.stderr[-2000:]}")
    doc = json.loads(res.stdout)

    direct = packer_direct()
    build = doc["durations"]["build"]
    print(json.dumps({
        "bake": {"durations": doc["durations"], "total": round(total, 1), "image_id": doc["image_id"]},
        "packer_direct": round(direct, 1),
        "overhead_build_pct": round((build - direct) / direct * 100, 2),
    }, indent=2))


def packer_direct() -> float:
    """`packer build` by hand: same templates, same variables, same base and accelerator."""
    envd = load_environment("local", ROOT)
    tools = bk.detect_tools()
    reporter = Reporter(quiet=True)
    base = baseimage.ensure_base_image(envd.settings.base, base_cache_dir(), reporter)
    accel = qemu.choose_accelerator(envd.settings.qemu.accelerator, base.path, base_cache_dir(), reporter)
    with tempfile.TemporaryDirectory(prefix="gi-bench-direct-") as tmp:
        ws = Path(tmp)
        staged = tools.packer.stage(ROOT / "packer", ws / "packer")
        import shutil

        shutil.copytree(envd.directory, ws / "inventory")
        key = ws / "build_key"
        pub = qemu.make_key(key)
        seeds = qemu.seed_files(ws / "seed", bk.BUILD_USER, pub, "web")
        atomic_write_json(ws / "extra-vars.json", {
            "goldenimage_image_name": "web", "goldenimage_image_id": "web-bench",
            "goldenimage_fingerprint": "0" * 64, "goldenimage_build_time": "2026-01-01T00:00:00Z",
        })
        var_file = ws / "vars.pkrvars.json"
        atomic_write_json(var_file, bk.common_packer_vars(
            envd, "web", ws, image_id="web-bench", fingerprint="0" * 64, base_image=str(base.path),
            base_image_checksum=base.identity, accelerator=accel, ssh_private_key_file=str(key),
            seed_files=[str(s) for s in seeds],
        ))
        with tools.packer.env(ws) as env:
            start = time.monotonic()
            res = subprocess.run([tools.packer.path, "build", "-color=false", "-only=qemu.local",
                                  f"-var-file={var_file}", str(staged)], cwd=ws, env=env,
                                 capture_output=True, text=True)
            took = time.monotonic() - start
        if res.returncode != 0:
            sys.exit(f"direct packer build failed: {res.stdout[-2000:]}")
        return took


if __name__ == "__main__":
    main()

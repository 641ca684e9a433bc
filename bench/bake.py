"""Benchmark: where a local bake's time goes, and the build phase now against an earlier commit.

Prints one JSON document:
  old / new           one full `invoke bake --force --json` of `web` each: the templates,
                      roles and runner of commit --against (a git worktree) and of this
                      checkout; same GOLDENIMAGE_HOME, so the same cached base disk and the
                      same accelerator; per phase (`durations`), the build phase alone
                      (`build_seconds`), Ansible's share (`ansible_seconds`, summed per task)
                      and the 10 slowest tasks (`top_tasks`)
  build_ratio         old build_seconds / new build_seconds (higher is faster now)
  load_average_1min   the host's load before and after: a shared host moves wall times
  packer_direct       with --direct only: a plain `packer build` of this checkout's staged
                      templates with an equivalent var file, and the bake's overhead over it

Per-task times of the old side come from the same Ansible callback the bake now loads
(src/goldenimage/ansible_plugins/callback), given to the old run through the environment
that Packer's Ansible provisioner inherits; nothing else of the new runner reaches it.

Usage: .venv/bin/python bench/bake.py [--against REV] [--home DIR] [--direct]
(as root, like a bake). Two full bakes: ~20-30 minutes under TCG on 2 cores.
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
sys.path.insert(0, str(ROOT / "src"))

from goldenimage import build as bk  # noqa: E402
from goldenimage import timing  # noqa: E402
from goldenimage.adapters import ansible, baseimage, qemu  # noqa: E402
from goldenimage.fsutil import atomic_write_json  # noqa: E402
from goldenimage.paths import base_cache_dir  # noqa: E402
from goldenimage.progress import Reporter  # noqa: E402
from goldenimage.settings import load_environment  # noqa: E402

# main before the build-phase work (per-task timing, Mitogen, fact subset, dpkg options)
BEFORE_SPEEDUP = "bb651fd"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", default=BEFORE_SPEEDUP, help="the commit to compare with")
    ap.add_argument("--home", default=None, help="GOLDENIMAGE_HOME to use (default: a temp dir)")
    ap.add_argument("--direct", action="store_true", help="also time a plain packer build")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="gi-bench-"))
    os.environ["GOLDENIMAGE_HOME"] = str(home)
    load = [round(os.getloadavg()[0], 2)]

    old_tree = Path(tempfile.mkdtemp(prefix="gi-bench-old-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.against], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        # the base disk (and the KVM probe) once, for both sides
        subprocess.run([sys.executable, "-m", "invoke", "fingerprint", "--json"], cwd=ROOT,
                       env={**os.environ, "GOLDENIMAGE_ROOT": str(ROOT)}, capture_output=True, check=False)
        old = bake_in(old_tree, home, old=True)
        new = bake_in(ROOT, home, old=False)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False,
                       capture_output=True)
        shutil.rmtree(old_tree.parent, ignore_errors=True)
    load.append(round(os.getloadavg()[0], 2))
    doc: dict[str, Any] = {
        "against": args.against, "old": old, "new": new,
        "build_ratio": round(old["build_seconds"] / new["build_seconds"], 2),
        "load_average_1min": load,
    }
    if args.direct:
        direct = packer_direct()
        doc["packer_direct"] = round(direct, 1)
        doc["overhead_build_pct"] = round((new["build_seconds"] - direct) / direct * 100, 2)
    print(json.dumps(doc, indent=2))


def bake_in(tree: Path, home: Path, *, old: bool) -> dict[str, Any]:
    """One forced bake of `web` with `tree`'s templates, roles and runner."""
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(tree), "GOLDENIMAGE_HOME": str(home)}
    times = None
    if old:
        env["PYTHONPATH"] = str(tree / "src")  # its own library, not this checkout's
        times = Path(tempfile.mkdtemp(prefix="gi-bench-times-")) / "task-times.jsonl"
        cb = ansible.environment(times)
        env.update({k: cb[k] for k in ("ANSIBLE_CALLBACK_PLUGINS", "ANSIBLE_CALLBACKS_ENABLED",
                                       "GOLDENIMAGE_TASK_TIMES")})
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "invoke", "bake", "--force", "--json"], cwd=tree, env=env,
                         capture_output=True, text=True)
    total = time.monotonic() - start
    if res.returncode != 0:
        sys.exit(f"bake in {tree} failed: {res.stderr[-3000:]}")
    doc = json.loads(res.stdout)
    manifest = json.loads((home / "store" / "images" / doc["image_id"] / "manifest.json").read_text())
    if times is not None:
        tasks = timing.task_times(times.read_text().splitlines() if times.is_file() else [])
        summary = timing.summary(tasks, [])
        shutil.rmtree(times.parent, ignore_errors=True)
    else:
        summary = manifest["timings"]
    return {
        "image_id": doc["image_id"], "durations": doc["durations"], "total": round(total, 1),
        "build_seconds": doc["durations"]["build"], "base_identity": manifest["base"]["identity"],
        "accelerator": manifest["accelerator"], "strategy": "linear" if old else ansible.strategy(),
        "ansible_tasks": len(summary["ansible_tasks"]), "ansible_seconds": summary["ansible_seconds"],
        "top_tasks": summary["slowest_tasks"],
        "packer_steps": summary.get("packer_steps", []),
    }


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

"""Benchmark: fingerprint of a synthetic project with 10,000 role files / 100 MiB.

Builds the tree in a temporary directory (a playbook using 100 roles of 100 files each,
plus the Packer templates and an inventory), then times the real collector + compute, as
`invoke bake` and `invoke fingerprint` run them. Prints one JSON document.

    /work/main/.venv/bin/python bench/fingerprint.py [--files 10000] [--mib 100] [--runs 3]

Figures are wall-clock seconds with the tree in the page cache (a nightly rebuild reads a
checkout it just updated); the goal is <= 1 s. No pass/fail here: this prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from goldenimage import fingerprint as fp
from goldenimage.settings import load_environment

EXTRA = {"base:image": "sha256:" + "1" * 64, "tool:packer": "1.11.2", "tool:ansible-core": "2.19.14"}

TEMPLATES = {
    "packer/plugins.pkr.hcl": "packer {\n  required_plugins {\n    qemu = {\n"
    '      version = ">= 1.1.0"\n'
    '      source  = "github.com/hashicorp/qemu"\n    }\n  }\n}\n',
    "packer/variables.pkr.hcl": 'variable "disk_size" {\n  type    = string\n  default = "4G"\n}\n',
    "packer/sources.pkr.hcl": 'source "qemu" "debian" {\n  disk_size = var.disk_size\n}\n',
    "packer/build.pkr.hcl": 'build {\n  sources = ["source.qemu.debian"]\n'
    '  provisioner "ansible" { playbook_file = "playbooks/web.yml" }\n}\n',
}


def build_tree(root: Path, files: int, total: int, roles: int = 100, seed: int = 7) -> int:
    """Write the synthetic project; returns the bytes written under roles/."""
    rnd = random.Random(seed)
    for rel, text in TEMPLATES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    inv = root / "inventories" / "local"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    default:\n")
    (inv / "group_vars" / "all.yml").write_text("x: 1\n")
    (inv / "goldenimage.yml").write_text("images:\n  web:\n    playbook: playbooks/web.yml\n")
    names = [f"role{r:03d}" for r in range(roles)]
    (root / "playbooks").mkdir()
    (root / "playbooks" / "web.yml").write_text(
        "- hosts: all\n  roles:\n" + "".join(f"    - {n}\n" for n in names)
    )
    per_role = files // roles
    # sizes: log-normal (many small files, a few large), scaled to `total` bytes
    raw = [rnd.lognormvariate(0, 1.2) for _ in range(files - roles)]
    scale = (total - roles * 40) / sum(raw)
    sizes = [max(1, int(s * scale)) for s in raw]
    sizes[-1] += (total - roles * 40) - sum(sizes)
    blob = os.urandom(max(sizes) + 4096)
    written = 0
    k = 0
    for n in names:
        tasks = root / "roles" / n / "tasks"
        tasks.mkdir(parents=True)
        text = f"- ansible.builtin.debug:\n    msg: {n:>20}\n"
        (tasks / "main.yml").write_text(text)
        written += len(text)
        for sub in ("files", "templates"):
            (root / "roles" / n / sub).mkdir()
        for i in range(per_role - 1):
            sub = "files" if i % 3 else "templates"
            size = sizes[k]
            off = rnd.randrange(0, 4096)
            (root / "roles" / n / sub / f"f{i:03d}.bin").write_bytes(blob[off : off + size])
            written += size
            k += 1
    return written


# The base disk identity and tool versions come in fixed (resolving them builds or hashes a
# multi-GB base disk, which is the bake's business, not this benchmark's).
FRESH = """
from goldenimage import cli, commands
extra = {"base:image": "sha256:" + "1" * 64, "tool:packer": "1.11.2", "tool:ansible-core": "2.19.14"}
cli.run(
    lambda r: commands.fingerprint_cmd(
        "local", "web", False, None, r, resolve_extra=lambda env, image, rep: extra
    ),
    json_out=True,
)
"""


def fresh_process(root: Path, home: Path) -> tuple[float, float]:
    """Wall and CPU (user+sys) seconds of a new Python process computing the fingerprint
    the way `invoke fingerprint` does (imports, settings, collect, store lookup)."""
    env = {
        **os.environ,
        "GOLDENIMAGE_ROOT": str(root),
        "GOLDENIMAGE_HOME": str(home),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", FRESH], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gi-bench-fp-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        role_bytes = build_tree(root, args.files, args.mib * 1024 * 1024)
        os.sync()  # measure hashing, not the kernel writing the fresh tree back to disk
        setup = time.perf_counter() - t
        env = load_environment("local", root)
        runs, cpu, hash_serial, hash_pool = [], [], [], []
        value = ""
        inputs: list[fp.FingerprintInput] = []
        for _ in range(args.runs):
            t, c = time.perf_counter(), time.process_time()
            inputs = fp.collect(root, env, "web", EXTRA)
            value = fp.compute(inputs)
            runs.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        paths = list(fp.walk_files(root / "roles"))
        for _ in range(args.runs):
            t = time.perf_counter()
            fp.hash_files(paths, root, workers=1)
            hash_serial.append(time.perf_counter() - t)
            t = time.perf_counter()
            fp.hash_files(paths, root)
            hash_pool.append(time.perf_counter() - t)
        fresh = [fresh_process(root, root / ".home") for _ in range(args.runs)]
        role_files = sum(1 for i in inputs if i.name.startswith("roles/"))
        print(
            json.dumps(
                {
                    "benchmark": "fingerprint collect+compute, synthetic roles tree",
                    "files": role_files,
                    "bytes": role_bytes,
                    "inputs": len(inputs),
                    "runs": args.runs,
                    "seconds": [round(r, 3) for r in runs],
                    "median_seconds": round(statistics.median(runs), 3),
                    "goal_seconds": 1.0,
                    "hash_only_serial_median_seconds": round(statistics.median(hash_serial), 3),
                    "hash_only_pool_median_seconds": round(statistics.median(hash_pool), 3),
                    "cpu_seconds_median": round(statistics.median(cpu), 3),
                    "fresh_process_median_seconds": round(statistics.median(w for w, _ in fresh), 3),
                    "fresh_process_cpu_median_seconds": round(statistics.median(c for _, c in fresh), 3),
                    "mb_per_second": round(role_bytes / statistics.median(runs) / 1e6, 1),
                    "setup_seconds": round(setup, 2),
                    "fingerprint": value,
                    "cpus": os.cpu_count(),
                    "load_average_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(),
                    "cache": "warm (tree just written)",
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

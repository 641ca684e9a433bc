"""Retention planner benchmark: prints one JSON document.

The pure planner (`goldenimage.retention.plan`) over a synthetic world: `--images` images of
20 names (validated mostly, some quarantined / revoked / building, a third already in a
stage), `--references` references to random images, two channels per name with ten moves of
history each. Goal: <= 1 s for 100,000 images and 50,000 references.

    python bench/retention.py [--images 100000] [--references 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from goldenimage import retention as rt  # noqa: E402
from goldenimage.sections import ImageRetention  # noqa: E402

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def world(n_images: int, n_refs: int, seed: int = 1) -> tuple[list[rt.Image], list[rt.Reference], dict, dict]:
    rnd = random.Random(seed)
    names = [f"img{k}" for k in range(20)]
    statuses = ["validated"] * 17 + ["quarantined", "revoked", "building"]
    images = []
    for i in range(n_images):
        stage = rnd.choice([None, None, "deprecated", "disabled"])
        created = NOW - timedelta(minutes=rnd.randrange(0, 365 * 24 * 60))
        images.append(rt.Image(id=f"ami-{i:017x}", name=rnd.choice(names), status=rnd.choice(statuses),
                               created=created, stage=stage,
                               stage_at=None if stage is None else created + (NOW - created) / 2,
                               revoked_at=created, size=rnd.randrange(1 << 30)))
    refs = [rt.Reference(rnd.choice(images).id, f"lt-{k:08x} v{k % 7}", "(asg web)") for k in range(n_refs)]
    channels = {name: {c: [{"image_id": rnd.choice(images).id, "status": "validated"} for _ in range(10)]
                       for c in ("stable", "canary")} for name in names}
    policy = {name: ImageRetention(keep=3, min_age_days=7) for name in names}
    return images, refs, channels, policy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--references", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    images, refs, channels, policy = world(args.images, args.references)
    wall, cpu = [], []
    result = None
    for _ in range(args.runs):
        w, c = time.perf_counter(), time.process_time()
        result = rt.plan(images, refs, channels, policy, NOW)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    assert result is not None
    counts: dict[str, int] = {}
    for d in result.decisions:
        counts[d.action] = counts.get(d.action, 0) + 1
    print(json.dumps({"images": args.images, "references": args.references, "seconds": [round(x, 3) for x in wall],
                      "median_seconds": round(statistics.median(wall), 3),
                      "cpu_seconds_median": round(statistics.median(cpu), 3), "decisions": counts,
                      "load_average_1min": round(os.getloadavg()[0], 2)}, indent=2))


if __name__ == "__main__":
    main()

"""Rotation benchmark: prints one JSON document.

Runs the rolling executor against a moto server in its own process (so the rotator's CPU
time is its own), with zero warm-up, on groups of 10, 100 and 500 instances:

- api_calls_per_replaced: AWS API calls (botocore `before-call`, retries not counted) per
  replaced instance (goal <= 8);
- orchestration_ms_per_replaced: CPU time of the rotator process per replaced instance
  (goal <= 20 ms); wall time is printed too (it includes moto's own work);
- ratio_500_vs_100: orchestration ms per instance at 500 over the same at 100 (~1 = linear).

Then, on a simulated clock (instances turn InService `launch` seconds after they first
appear; waits cost no real time): makespan against the ideal ceil(N / batch) x (launch +
warm-up) (goal <= 1.05).

    python bench/rotate.py [--sizes 10,100,500] [--launch 90 --warmup 60]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from goldenimage.progress import Reporter  # noqa: E402
from goldenimage.rotation.executor import SimClock, rotate  # noqa: E402
from goldenimage.rotation.policy import GroupPolicy  # noqa: E402
from tests.integration.rotate_conftest_fixtures import make_clients, seed_group  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start")


def reset(url: str) -> None:
    req = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req).close()


def count_calls(clients: Any) -> dict[str, int]:
    counts: dict[str, int] = {}

    def record(event_name: str, **kw: Any) -> None:
        op = event_name.split(".")[-1]
        counts[op] = counts.get(op, 0) + 1

    for svc in ("ec2", "autoscaling", "cloudwatch", "elbv2"):
        clients.client(svc).meta.events.register("before-call.*.*", record)
    return counts


POLICY = dict(
    batch_size="25%",
    max_surge_percent=25,
    min_healthy_percent=100,
    poll_seconds=0.01,
    lock_settle_seconds=0.0,  # a real-time safety pause, not orchestration work
)


def measure(url: str, size: int) -> dict[str, Any]:
    reset(url)
    clients = make_clients(url, max_attempts=3)
    s = seed_group(clients, size=size)
    pol = GroupPolicy(asg="web", abort_alarms=[s.alarm], **POLICY)  # type: ignore[arg-type]
    counts = count_calls(clients)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    res = rotate(clients, pol, s.new_ami, reporter=Reporter(io.StringIO(), quiet=True))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert res["exit_code"] == 0 and res["replaced"] == size, res
    calls = sum(counts.values())
    return {
        "instances": size,
        "batches": len(res["plan"]["batches"]),
        "api_calls": calls,
        "api_calls_per_replaced": round(calls / size, 2),
        "orchestration_ms_per_replaced": round(1000 * cpu / size, 2),
        "wall_ms_per_replaced": round(1000 * wall / size, 2),
        "calls_by_operation": dict(sorted(counts.items())),
    }


def makespan(url: str, size: int, launch: float, warmup: float, poll: float) -> dict[str, Any]:
    reset(url)
    clients = make_clients(url, max_attempts=3)
    s = seed_group(clients, size=size)
    clock = SimClock(1_800_000_000.0)
    first_seen: dict[str, float] = {}
    initial = set()
    g = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    initial = {i["InstanceId"] for i in g["AutoScalingGroups"][0]["Instances"]}

    def ready(iid: str) -> bool:
        if iid in initial:
            return True
        t0 = first_seen.setdefault(iid, clock.now())
        return clock.now() >= t0 + launch

    def asg_view(parsed: dict[str, Any], **kw: Any) -> None:
        for grp in parsed.get("AutoScalingGroups", []):
            for i in grp.get("Instances", []):
                if not ready(i["InstanceId"]):
                    i["LifecycleState"] = "Pending"

    def tg_view(parsed: dict[str, Any], **kw: Any) -> None:
        for d in parsed.get("TargetHealthDescriptions", []):
            if not ready(d["Target"]["Id"]):
                d["TargetHealth"]["State"] = "initial"

    clients.autoscaling.meta.events.register(
        "after-call.auto-scaling.DescribeAutoScalingGroups", asg_view
    )
    clients.elbv2.meta.events.register("after-call.elastic-load-balancing.*", tg_view)
    pol = GroupPolicy(
        asg="web",
        batch_size="25%",
        max_surge_percent=25,
        warmup_seconds=warmup,
        poll_seconds=poll,
        health_timeout_seconds=10 * launch,
    )
    t0 = clock.now()
    res = rotate(clients, pol, s.new_ami, reporter=Reporter(io.StringIO(), quiet=True), clock=clock)
    took = clock.now() - t0
    assert res["exit_code"] == 0, res
    batch = pol.batch_count(size)
    ideal = math.ceil(size / batch) * (launch + warmup)
    return {
        "instances": size,
        "batch": batch,
        "batches": len(res["plan"]["batches"]),
        "launch_s": launch,
        "warmup_s": warmup,
        "poll_s": poll,
        "makespan_s": round(took, 1),
        "ideal_s": ideal,
        "ratio": round(took / ideal, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--launch", type=float, default=90.0)
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--poll", type=float, default=5.0)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    proc, url = start_server()
    try:
        runs = [measure(url, n) for n in sizes]
        by = {r["instances"]: r for r in runs}
        ratio = None
        if 100 in by and 500 in by:
            ratio = round(
                by[500]["orchestration_ms_per_replaced"] / by[100]["orchestration_ms_per_replaced"],
                2,
            )
        sim = [makespan(url, n, a.launch, a.warmup, a.poll) for n in sizes]
        sim.append(makespan(url, sizes[min(1, len(sizes) - 1)], a.launch + 3, a.warmup, a.poll))
    finally:
        proc.terminate()
        proc.wait(10)
    out = {
        "goals": {
            "api_calls_per_replaced": 8,
            "orchestration_ms_per_replaced": 20,
            "makespan_ratio": 1.05,
        },
        "policy": POLICY,
        "runs": runs,
        "ratio_500_vs_100_ms_per_replaced": ratio,
        "simulated_clock": sim,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

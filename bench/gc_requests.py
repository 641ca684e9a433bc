"""gc request benchmark: prints one JSON document.

Seeds a moto server (its own process, as bench/rotate.py does) with `--amis` AMIs of the
`aws` environment and `--templates` launch templates of `--versions` versions each (a few
groups pinning some of them, a few instances, a few SSM parameters), then runs what one
`invoke gc` run reads -- `AwsTarget.gc_world()` (the AMIs, every reference, the channels,
the leftovers) and `retention.plan` -- once, counting every HTTP request the gathering
sends (a botocore `before-send` handler on each client, so retries would count too) by
operation. The point: requests are pages and one listing per template, never a call per
image.

    python bench/gc_requests.py [--amis 10000] [--templates 1000] [--versions 4] [--threads 16]

Setup: RegisterImage (the cheapest route to an AMI over the API) and tags in batches of
1,000 resources per CreateTags, from `--threads` threads; how long it took is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from bench.rotate import start_server  # noqa: E402
from goldenimage import retention  # noqa: E402
from goldenimage.aws.clients import AwsContext, Clients  # noqa: E402
from goldenimage.aws.target import AwsTarget  # noqa: E402
from goldenimage.models import CREATED_TAG, ENV_TAG, FINGERPRINT_TAG, NAME_TAG, STATUS_TAG  # noqa: E402
from goldenimage.sections import ImageRetention  # noqa: E402
from goldenimage.settings import load_environment  # noqa: E402

CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
LIST_PREFIXES = ("Describe", "Get", "List")


def _client(url: str, region: str, service: str) -> Any:
    return boto3.session.Session(region_name=region, **CREDENTIALS).client(
        service, endpoint_url=url, config=Config(retries={"max_attempts": 3}, max_pool_connections=64))


def _parallel(threads: int, jobs: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda job: job(), jobs))


def seed(url: str, region: str, env: str, name: str, amis: int, templates: int, versions: int,
         threads: int) -> dict[str, Any]:
    """The world; returns what was made and how long each part took."""
    local = threading.local()

    def ec2() -> Any:
        if not hasattr(local, "ec2"):
            local.ec2 = _client(url, region, "ec2")
        return local.ec2

    t0 = time.perf_counter()
    ids = _parallel(threads, [lambda n=n: ec2().register_image(Name=f"bench-{n:05d}", RootDeviceName="/dev/sda1")["ImageId"]
                              for n in range(amis)])
    t1 = time.perf_counter()
    print(f"registered {amis} AMIs in {t1 - t0:.0f} s", file=sys.stderr, flush=True)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    common = [{"Key": ENV_TAG, "Value": env}, {"Key": NAME_TAG, "Value": name},
              {"Key": STATUS_TAG, "Value": "validated"}, {"Key": FINGERPRINT_TAG, "Value": "sha256:" + "0" * 64}]
    chunks = [ids[i:i + 1000] for i in range(0, len(ids), 1000)]
    _parallel(threads, [lambda c=c: ec2().create_tags(Resources=c, Tags=common) for c in chunks])
    # the creation time: one CreateTags per distinct day (AMIs of a day share it)
    days: dict[str, list[str]] = {}
    for n, ami in enumerate(ids):
        days.setdefault((base + timedelta(days=n * 300 // max(1, amis))).strftime("%Y-%m-%dT00:00:00Z"), []).append(ami)
    _parallel(threads, [lambda c=c, d=d: ec2().create_tags(Resources=c, Tags=[{"Key": CREATED_TAG, "Value": d}])
                        for d, group in days.items() for c in (group[i:i + 1000] for i in range(0, len(group), 1000))])
    t2 = time.perf_counter()

    def template(k: int) -> str:
        c = ec2()
        data = {"ImageId": ids[(k * versions) % len(ids)], "InstanceType": "t3.micro"}
        lt = c.create_launch_template(LaunchTemplateName=f"bench-{k:04d}", LaunchTemplateData=data)
        lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
        for v in range(1, versions):
            c.create_launch_template_version(
                LaunchTemplateId=lt_id, LaunchTemplateData={**data, "ImageId": ids[(k * versions + v) % len(ids)]},
                VersionDescription=f"goldenimage rotation r-{k}-{v}: {data['ImageId']}" if v % 2 else "")
        return str(lt_id)

    lts = _parallel(threads, [lambda k=k: template(k) for k in range(templates)])
    t3 = time.perf_counter()
    print(f"tagged in {t2 - t1:.0f} s; {templates} templates in {t3 - t2:.0f} s", file=sys.stderr, flush=True)
    asg, ssm, c = _client(url, region, "autoscaling"), _client(url, region, "ssm"), ec2()
    for g in range(5):  # a few groups pinning old versions, a few instances, a few parameters
        asg.create_auto_scaling_group(AutoScalingGroupName=f"bench-{g}", MinSize=0, MaxSize=2, DesiredCapacity=0,
                                      AvailabilityZones=[f"{region}a"],
                                      LaunchTemplate={"LaunchTemplateId": lts[g * 7 % len(lts)], "Version": "1"})
    c.run_instances(ImageId=ids[-1], MinCount=5, MaxCount=5)
    for p in range(5):
        ssm.put_parameter(Name=f"/team/app{p}/ami", Value=ids[p * 11 % len(ids)], Type="String")
    t4 = time.perf_counter()
    return {"setup_seconds": {"register_images": round(t1 - t0, 1), "tag_images": round(t2 - t1, 1),
                              "launch_templates": round(t3 - t2, 1), "groups_instances_parameters": round(t4 - t3, 1),
                              "total": round(t4 - t0, 1)},
            "setup_requests": amis + len(chunks) + sum(-(-len(g) // 1000) for g in days.values())
            + templates * versions + 5 + 1 + 5}


def bench_clients(url: str, region: str, services: tuple[str, ...]) -> Clients:
    """The toolkit's `Clients` for the server, with a long read timeout: moto answers a
    DescribeImages over 10,000 AMIs in one page, slowly (real AWS pages by 1,000)."""
    clients = Clients(AwsContext(region=region, endpoint_url=url, max_attempts=3, credentials=dict(CREDENTIALS)))
    for svc in services:
        clients._cache[svc] = clients._sess().client(
            svc, endpoint_url=url, config=Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=1800))
    return clients


def count_requests(clients: Clients, services: tuple[str, ...]) -> tuple[Counter[str], Counter[str]]:
    """(HTTP requests by operation, seconds spent in each operation)."""
    counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    started: dict[str, float] = {}

    def op_of(event_name: str) -> str:
        service, op = event_name.split(".")[1:3]
        return f"{service}:{op}"

    def send(event_name: str, **_: Any) -> None:  # before-send.<service>.<Operation>: one HTTP request
        counts[op_of(event_name)] += 1

    def call(event_name: str, **_: Any) -> None:
        started[op_of(event_name)] = time.perf_counter()

    def done(event_name: str, **_: Any) -> None:
        op = op_of(event_name)
        seconds[op] += time.perf_counter() - started.pop(op, time.perf_counter())

    for svc in services:
        events = clients.client(svc).meta.events
        events.register("before-send", send)
        events.register("before-call", call)
        events.register("after-call", done)
    return counts, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--amis", type=int, default=10_000)
    ap.add_argument("--templates", type=int, default=1_000)
    ap.add_argument("--versions", type=int, default=4, help="versions per launch template")
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    env = load_environment("aws", ROOT)
    name = sorted(env.settings.images)[0]
    proc, url = start_server()
    try:
        made = seed(url, env.region, env.name, name, args.amis, args.templates, args.versions, args.threads)
        services = ("ec2", "autoscaling", "ssm")
        clients = bench_clients(url, env.region, services)
        counts, op_seconds = count_requests(clients, services)
        print(f"seeded in {made['setup_seconds']['total']} s; gathering", file=sys.stderr, flush=True)
        target = AwsTarget(env, clients=clients)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        world = target.gc_world()
        gathered = time.perf_counter()
        plan = retention.plan(world.images, world.references, world.channels,
                              {name: ImageRetention(keep=3, min_age_days=7)}, datetime.now(UTC), world.leftovers)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        proc.kill()
        proc.wait()
    total = sum(counts.values())
    pages = sum(n for op, n in counts.items() if op.split(":")[1].startswith(LIST_PREFIXES))
    actions = Counter(d.action for d in plan.decisions)
    print(json.dumps({
        "amis": args.amis, "launch_templates": args.templates, "versions_per_template": args.versions,
        "images_planned": len(world.images), "references": len(world.references), "leftovers": len(world.leftovers),
        "decisions": dict(actions),
        "requests": total, "requests_by_operation": dict(sorted(counts.items())), "pages": pages,
        "requests_per_ami": round(total / max(1, args.amis), 4),
        "requests_per_ami_excluding_per_template_listings": round(
            (total - counts.get("ec2:DescribeLaunchTemplateVersions", 0)) / max(1, args.amis), 4),
        "seconds": {"gather": round(gathered - wall0, 2), "gather_and_plan": round(wall, 2),
                    "cpu_gather_and_plan": round(cpu, 2)},
        "seconds_by_operation": {op: round(t, 2) for op, t in sorted(op_seconds.items())},
        **made,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()

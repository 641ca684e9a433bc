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

`--apply` measures one whole `invoke gc --apply` (`gc.gc`, lock, gathering, plan, every
step and its re-checks) instead: `--old` (300) old unreferenced AMIs -- a third in no
stage, a third deprecated and a third disabled long ago, so that the run deprecates,
disables and deletes -- and `--templates` (50) launch templates of `--versions` (4)
versions referencing `--referenced` (50) other AMIs; requests per staged image and wall
time, for this checkout and for `--against REV` (default main: a git worktree of it, run
in its own process against the same server, reset and seeded the same way; cut off after
`--budget` seconds, its figures then cover the images staged by then):

    python bench/gc_requests.py --apply [--against main] [--budget 300]
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
SRC = os.environ.get("GC_BENCH_SRC", str(ROOT / "src"))  # the --apply child runs another checkout's code
sys.path[:0] = [SRC, str(ROOT)]

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

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


def seed_apply(url: str, region: str, env: str, name: str, old: int, referenced: int, templates: int,
               versions: int, threads: int) -> dict[str, Any]:
    """--apply's world: `old` AMIs created in January (a third in no stage, a third deprecated
    and a third disabled since January), `referenced` newer AMIs that `templates` launch
    templates of `versions` versions each name (version v of template k: AMI (k*versions+v)
    mod referenced)."""
    local = threading.local()

    def ec2() -> Any:
        if not hasattr(local, "ec2"):
            local.ec2 = _client(url, region, "ec2")
        return local.ec2

    t0 = time.perf_counter()
    ids = _parallel(threads, [lambda n=n: ec2().register_image(Name=f"bench-{n:05d}", RootDeviceName="/dev/sda1")["ImageId"]
                              for n in range(old + referenced)])
    olds, used = ids[:old], ids[old:]
    common = [{"Key": ENV_TAG, "Value": env}, {"Key": NAME_TAG, "Value": name},
              {"Key": STATUS_TAG, "Value": "validated"}, {"Key": FINGERPRINT_TAG, "Value": "sha256:" + "0" * 64}]
    chunks = [ids[i:i + 1000] for i in range(0, len(ids), 1000)]
    _parallel(threads, [lambda c=c: ec2().create_tags(Resources=c, Tags=common) for c in chunks])
    ec2().create_tags(Resources=olds, Tags=[{"Key": CREATED_TAG, "Value": "2026-01-01T00:00:00Z"}])
    ec2().create_tags(Resources=used, Tags=[{"Key": CREATED_TAG, "Value": "2026-06-01T00:00:00Z"}])
    third = old // 3
    stage, at = "goldenimage:gc-stage", "goldenimage:gc-stage-at"
    ec2().create_tags(Resources=olds[third:], Tags=[{"Key": at, "Value": "2026-01-02T00:00:00Z"},
                                                    {"Key": stage, "Value": "deprecated"}])
    ec2().create_tags(Resources=olds[2 * third:], Tags=[{"Key": stage, "Value": "disabled"}])
    _parallel(threads, [lambda a=a: ec2().disable_image(ImageId=a) for a in olds[2 * third:]])

    def template(k: int) -> None:
        c = ec2()
        data = {"ImageId": used[(k * versions) % len(used)], "InstanceType": "t3.micro"}
        lt_id = c.create_launch_template(LaunchTemplateName=f"bench-{k:04d}", LaunchTemplateData=data
                                         )["LaunchTemplate"]["LaunchTemplateId"]
        for v in range(1, versions):
            c.create_launch_template_version(
                LaunchTemplateId=lt_id, LaunchTemplateData={**data, "ImageId": used[(k * versions + v) % len(used)]})

    _parallel(threads, [lambda k=k: template(k) for k in range(templates)])
    return {"seconds": round(time.perf_counter() - t0, 1), "old": olds, "referenced": used}


def apply_child(args: argparse.Namespace) -> None:
    """One `gc.gc(apply=True)` of the checkout on sys.path against the seeded server; prints
    its figures (at the end, or when `--budget` runs out)."""
    import io

    from goldenimage import gc
    from goldenimage.progress import Reporter
    from goldenimage.sections import RetentionSettings
    from goldenimage.settings import Environment

    env = load_environment("aws", ROOT)
    name = sorted(env.settings.images)[0]
    services = ("ec2", "autoscaling", "ssm", "ram")
    clients = bench_clients(args.url, env.region, services)
    counts, op_seconds = count_requests(clients, services)
    target = AwsTarget(env, clients=clients)
    gc.target_for = lambda _env: target  # type: ignore[attr-defined]
    Environment.retention = property(  # type: ignore[assignment, method-assign]
        lambda self: RetentionSettings(images={name: ImageRetention(keep=3, min_age_days=7)}))
    staged: Counter[str] = Counter()
    real_apply = target.gc_apply
    t0 = time.perf_counter()
    first: list[float] = []

    def counted(d: Any, now: datetime, *more: Any) -> Any:
        if not first:
            first.append(time.perf_counter())
        out = real_apply(d, now, *more)
        if out.get("done"):
            staged[d.action] += 1
        return out

    target.gc_apply = counted  # type: ignore[method-assign]

    def report(finished: bool) -> None:
        wall = time.perf_counter() - t0
        total = sum(counts.values())
        n = sum(staged.values())
        print(json.dumps({
            "src": SRC, "finished": finished, "wall_seconds": round(wall, 1),
            "gather_and_plan_seconds": round((first[0] if first else time.perf_counter()) - t0, 1),
            "staged": dict(staged), "staged_total": n, "requests": total,
            "requests_per_staged_image": round(total / n, 2) if n else None,
            "seconds_per_staged_image": round(wall / n, 3) if n else None,
            "requests_by_operation": dict(sorted(counts.items())),
            "seconds_by_operation": {op: round(t, 2) for op, t in sorted(op_seconds.items())},
            "load_average_1min": round(os.getloadavg()[0], 2)}), flush=True)

    timer = threading.Timer(args.budget, lambda: (report(False), os._exit(0)))
    timer.daemon = True
    timer.start()
    r = gc.gc("aws", True, Reporter(io.StringIO()), root=ROOT)
    timer.cancel()
    bad = [a for a in r["applied"] if a["outcome"] not in ("done", "gone")]
    if bad:
        print(f"not done: {len(bad)}, e.g. {bad[0]}", file=sys.stderr)
    report(True)


def apply_main(args: argparse.Namespace) -> None:
    """Both sides against one server: reset, seed, run the side's child; side by side."""
    import subprocess
    import tempfile
    import urllib.request

    from bench.rotate import start_server

    env = load_environment("aws", ROOT)
    name = sorted(env.settings.images)[0]
    proc, url = start_server()
    old_tree = Path(tempfile.mkdtemp(prefix="gi-gc-against-")) / "tree"
    sides = {"new": str(ROOT / "src")}
    if args.against != "none":
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.against], cwd=ROOT,
                       check=True, capture_output=True)
        sides = {"old": str(old_tree / "src"), **sides}
    out: dict[str, Any] = {"against": args.against, "old_amis": args.old, "referenced_amis": args.referenced,
                           "launch_templates": args.templates, "versions_per_template": args.versions}
    try:
        for side, src in sides.items():
            req = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
            urllib.request.urlopen(req).close()
            made = seed_apply(url, env.region, env.name, name, args.old, args.referenced, args.templates,
                              args.versions, args.threads)
            print(f"{side}: seeded in {made['seconds']} s; gc --apply", file=sys.stderr, flush=True)
            child = subprocess.run([sys.executable, __file__, "--apply-child", "--url", url,
                                    "--budget", str(args.budget)],
                                   env={**os.environ, "GC_BENCH_SRC": src}, capture_output=True, text=True,
                                   check=False)
            lines = [ln for ln in child.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                raise SystemExit(f"{side}: no figures: {child.stderr[-2000:]}")
            out[side] = json.loads(lines[-1])
            if child.stderr.strip():
                out[side]["stderr_tail"] = child.stderr.strip().splitlines()[-1][:300]
    finally:
        proc.kill()
        proc.wait()
        if args.against != "none":
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False,
                           capture_output=True)
    print(json.dumps(out, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--amis", type=int, default=10_000)
    ap.add_argument("--templates", type=int, default=1_000)
    ap.add_argument("--versions", type=int, default=4, help="versions per launch template")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--apply", action="store_true", help="one whole gc --apply, against --against too")
    ap.add_argument("--old", type=int, default=300, help="--apply: old unreferenced AMIs")
    ap.add_argument("--referenced", type=int, default=50, help="--apply: AMIs the launch templates name")
    ap.add_argument("--against", default="main", help="--apply: the commit to compare with ('none': skip)")
    ap.add_argument("--budget", type=float, default=300.0, help="--apply: seconds a side may run")
    ap.add_argument("--apply-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.apply_child:
        apply_child(args)
        return
    if args.apply:
        if "--templates" not in sys.argv:
            args.templates = 50
        apply_main(args)
        return
    from bench.rotate import start_server

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

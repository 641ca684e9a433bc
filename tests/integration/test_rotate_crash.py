"""Crash, concurrency, SIGINT and dry run against a moto server."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from goldenimage.aws.clients import Clients
from goldenimage.errors import Interrupted
from goldenimage.progress import Reporter
from goldenimage.rotation.executor import RotationFailed, StopFlag, rollback, rotate
from goldenimage.rotation.policy import GroupPolicy
from goldenimage.rotation.state import tag_map
from tests.integration.rotate_conftest_fixtures import (  # noqa: F401 - fixtures
    aws_fixture,
    instance_images,
    moto_url_fixture,
    seed_group,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def tags(aws: Clients) -> dict[str, str]:
    g = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    return tag_map(g["AutoScalingGroups"][0])


def group(aws: Clients) -> dict[str, Any]:
    g = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    return dict(g["AutoScalingGroups"][0])


def _spawn(url: str, action: str, *extra: str, policy: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "goldenimage.rotation",
            action,
            "--group",
            "web",
            "--endpoint-url",
            url,
            "--dummy-credentials",
            "--max-attempts",
            "1",
            "--policy",
            json.dumps(policy),
            "--json",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(pred: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


SLOW = {"batch_size": 2, "max_surge_percent": 34, "warmup_seconds": 0.6, "poll_seconds": 0.05}


def test_sigkill_at_batch_boundary_then_resume(aws: Clients, moto_url: str) -> None:
    s = seed_group(aws, size=6)
    policy = {**SLOW, "heartbeat_ttl_seconds": 1.5}
    proc = _spawn(moto_url, "rotate", "--image-id", s.new_ami, policy=policy)
    try:
        _wait_for(lambda: "2/6 replaced" in tags(aws).get("goldenimage:rotation-progress", ""))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    t = tags(aws)
    assert t["goldenimage:rotation-status"] == "running"
    # while the heartbeat is fresh, a second rotator is refused, naming owner and since
    pol = GroupPolicy(asg="web", **policy)
    with pytest.raises(RotationFailed) as exc:
        rotate(aws, pol, s.new_ami, reporter=quiet(), resume=True)
    assert t["goldenimage:rotation-owner"] in str(exc.value)
    assert f"since {t['goldenimage:rotation-since']}" in str(exc.value)
    time.sleep(1.6)
    with pytest.raises(RotationFailed, match="--resume"):
        rotate(aws, pol, s.new_ami, reporter=quiet())  # stale, but not asked to resume
    res = rotate(aws, pol, None, reporter=quiet(), resume=True)
    assert res["exit_code"] == 0 and res["outcome"] == "done", res
    assert res["rotation_id"] == t["goldenimage:rotation-id"]
    imgs = instance_images(aws, "web")
    assert len(imgs) == 6 and set(imgs.values()) == {s.new_ami}
    g = group(aws)
    assert (g["DesiredCapacity"], g["MaxSize"]) == (6, 6)
    assert not [k for k in tag_map(g) if k.startswith("goldenimage:rotation-")]


def test_sigint_stops_at_safe_point_and_resumes(aws: Clients, moto_url: str) -> None:
    s = seed_group(aws, size=6)
    proc = _spawn(moto_url, "rotate", "--image-id", s.new_ami, policy=SLOW)
    _wait_for(lambda: "2/6 replaced" in tags(aws).get("goldenimage:rotation-progress", ""))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "interrupted at a safe point" in err
    assert json.loads(out)["ok"] is False
    t = tags(aws)
    assert t["goldenimage:rotation-status"] == "interrupted"
    # an interrupted run can be resumed at once (no heartbeat to wait out)
    res = rotate(aws, GroupPolicy(asg="web", **SLOW), None, reporter=quiet(), resume=True)
    assert res["exit_code"] == 0
    assert set(instance_images(aws, "web").values()) == {s.new_ami}
    assert group(aws)["DesiredCapacity"] == 6


def test_stop_flag_then_rollback_of_unfinished_rotation(aws: Clients) -> None:
    s = seed_group(aws, size=4)
    stop = StopFlag()
    pol = GroupPolicy(asg="web", batch_size=1, poll_seconds=0.01)
    seen = {"n": 0}

    def after_terminate(**kw: object) -> None:
        seen["n"] += 1
        if seen["n"] == 2:
            stop.requested = True

    aws.autoscaling.meta.events.register(
        "after-call.auto-scaling.TerminateInstanceInAutoScalingGroup", after_terminate
    )
    with pytest.raises(Interrupted):
        rotate(aws, pol, s.new_ami, reporter=quiet(), stop=stop)
    aws.autoscaling.meta.events.unregister(
        "after-call.auto-scaling.TerminateInstanceInAutoScalingGroup", after_terminate
    )
    assert tags(aws)["goldenimage:rotation-status"] == "interrupted"
    assert sorted(instance_images(aws, "web").values()).count(s.new_ami) == 2
    res = rollback(aws, pol, reporter=quiet())
    assert res["exit_code"] == 0 and res["to_image"] == s.old_ami
    imgs = instance_images(aws, "web")
    assert len(imgs) == 4 and set(imgs.values()) == {s.old_ami}
    assert group(aws)["LaunchTemplate"]["Version"] == "1"


def test_two_rotations_at_once_one_refused(aws: Clients) -> None:
    s = seed_group(aws, size=4)
    pol = GroupPolicy(asg="web", batch_size=1, warmup_seconds=0.3, poll_seconds=0.05)
    box: dict[str, Any] = {}

    def first() -> None:
        box["res"] = rotate(aws, pol, s.new_ami, reporter=quiet(), owner="alice@ops:1")

    t = threading.Thread(target=first)
    t.start()
    _wait_for(lambda: "goldenimage:rotation-id" in tags(aws))
    from tests.integration.rotate_conftest_fixtures import make_clients

    other = make_clients(aws.ctx.endpoint_url or "")
    with pytest.raises(RotationFailed, match=r"being rotated.*by alice@ops:1 since "):
        rotate(other, pol, s.new_ami, reporter=quiet(), owner="bob@ops:2")
    t.join(60)
    assert box["res"]["exit_code"] == 0


def test_dry_run_makes_no_mutating_call(aws: Clients) -> None:
    s = seed_group(aws, size=12)
    calls: list[str] = []

    def record(event_name: str, **kw: object) -> None:
        calls.append(event_name.split(".")[-1])

    for svc in (aws.ec2, aws.autoscaling, aws.cloudwatch, aws.elbv2, aws.ssm):
        svc.meta.events.register("before-call.*.*", record)
    before = tags(aws)
    pol = GroupPolicy(asg="web", abort_alarms=[s.alarm], poll_seconds=0.01)
    res = rotate(aws, pol, s.new_ami, reporter=quiet(), dry_run=True)
    assert res["exit_code"] == 0 and res["outcome"] == "planned"
    assert calls and all(c.startswith(("Describe", "Get", "List")) for c in calls), calls
    assert res["plan"]["total"] == 12 and len(res["plan"]["batches"]) == 4
    assert any(line.startswith("  batch 1/4: out ") for line in res["plan_text"])
    assert tags(aws) == before
    assert set(instance_images(aws, "web").values()) == {s.old_ami}


def test_simultaneous_start_leaves_one_rotator(aws: Clients, moto_url: str) -> None:
    from tests.integration.rotate_conftest_fixtures import make_clients

    s = seed_group(aws, size=4)
    pol = GroupPolicy(asg="web", poll_seconds=0.01, lock_settle_seconds=0.5)
    gate = threading.Barrier(2)
    out: dict[str, Any] = {}

    def run(who: str) -> None:
        clients = make_clients(moto_url)
        clients.autoscaling  # noqa: B018 - create the client before the race
        clients.ec2  # noqa: B018
        gate.wait()
        try:
            out[who] = rotate(clients, pol, s.new_ami, reporter=quiet(), owner=who)
        except RotationFailed as exc:
            out[who] = exc

    threads = [threading.Thread(target=run, args=(w,)) for w in ("a@x:1", "b@x:2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    refused = [v for v in out.values() if isinstance(v, RotationFailed)]
    done = [v for v in out.values() if isinstance(v, dict)]
    assert len(refused) == 1 and len(done) == 1, out
    assert done[0]["exit_code"] == 0
    assert set(instance_images(aws, "web").values()) == {s.new_ami}

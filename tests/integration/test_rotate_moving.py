"""A group that changes under a running rotation (moto server, real threads).

From a second thread, during batch 1, during a checkpoint pause and during the last batch,
somebody else: scales the group out (+2), scales it in (-1; moto picks a random victim),
scales in a chosen victim (an old instance the plan had not reached, or a new one), puts a
planned old instance into Standby, terminates one through EC2, or detaches one. A watcher
thread samples healthy in-service capacity all along. Every run must end complete (every
InService instance on the new AMI, the group pinned to the new version, what the other
party did to desired kept) or cleanly failed and resumable; never an internal error, a
lock left `running` or scaling processes left suspended.

The disruptions go through plain boto3 clients: they are the other party's calls, not the
rotator's (so they are not held to the rotator's IAM action list).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from goldenimage.aws.clients import Clients
from goldenimage.errors import GoldenImageError
from goldenimage.progress import Reporter
from goldenimage.rotation.executor import RotationFailed, rollback, rotate
from goldenimage.rotation.plan import LEAVING
from goldenimage.rotation.policy import GroupPolicy
from goldenimage.rotation.state import tag_map
from tests.integration.rotate_conftest_fixtures import (  # noqa: F401 - fixtures
    CREDS,
    Seeded,
    aws_fixture,
    moto_url_fixture,
    seed_group,
)

pytestmark = pytest.mark.integration

SIZE = 4  # two batches of 2: the first ends at the 50% checkpoint
MAX = 8
POLICY = dict(
    asg="web",
    batch_size=2,
    max_surge_percent=34,  # surge 3: no instance leaves before its replacement serves
    min_healthy_percent=100,
    warmup_seconds=0.15,
    checkpoints=[50],
    checkpoint_pause_seconds=0.4,
    poll_seconds=0.02,
    health_timeout_seconds=30,
    lock_settle_seconds=0.0,
)
SEED = 20261130


def plain(url: str, service: str) -> Any:
    return boto3.session.Session(region_name="us-east-1", **CREDS).client(
        service, endpoint_url=url, config=Config(retries={"max_attempts": 1})
    )


class Group:
    """The other party's view of the group (plain clients)."""

    def __init__(self, url: str) -> None:
        self.asg = plain(url, "autoscaling")
        self.ec2 = plain(url, "ec2")
        self.elbv2 = plain(url, "elbv2")

    def raw(self) -> dict[str, Any]:
        g = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
        return dict(g["AutoScalingGroups"][0])

    def images(self, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        res = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return {i["InstanceId"]: i["ImageId"] for r in res for i in r["Instances"]}

    def members(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        raw = self.raw()
        inst = [i for i in raw["Instances"] if i["LifecycleState"] not in LEAVING]
        return raw, inst, self.images([i["InstanceId"] for i in inst])


class Watcher(threading.Thread):
    """Remembers the lowest healthy in-service capacity seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.group = Group(url)
        self.lowest: int | None = None
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            inst = self.group.raw()["Instances"]
            healthy = sum(
                1 for i in inst if i["LifecycleState"] == "InService" and i["HealthStatus"] == "Healthy"
            )
            self.lowest = healthy if self.lowest is None else min(self.lowest, healthy)
            self.samples += 1
            self.done.wait(0.02)

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def _moment_reached(moment: str, progress: str) -> bool:
    if moment == "batch1":
        return "batch 1/" in progress
    if moment == "checkpoint":
        return "checkpoint" in progress
    m = re.search(r"batch (\d+)/(\d+)", progress)
    return bool(m and m.group(1) == m.group(2) and m.group(1) != "1")


class Disruptor(threading.Thread):
    """Waits for `moment` (read from the rotation's progress tag), then does `action`."""

    def __init__(self, url: str, s: Seeded, moment: str, action: str, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.group = Group(url)
        self.s, self.moment, self.action, self.rng = s, moment, action, rng
        self.fired = ""
        self.delta = 0  # what the other party did to desired capacity
        self.removed = 0  # serving instances the other party took away
        self.error: BaseException | None = None
        self.victim_kind = ""
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set() and not self.fired:
                raw = self.group.raw()
                progress = tag_map(raw).get("goldenimage:rotation-progress", "")
                if _moment_reached(self.moment, progress) and self._act(raw):
                    return
                self.done.wait(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _act(self, raw: dict[str, Any]) -> bool:
        _, inst, images = self.group.members()
        in_service = [i for i in inst if i["LifecycleState"] == "InService"]
        old = sorted(i["InstanceId"] for i in in_service if images.get(i["InstanceId"]) == self.s.old_ami)
        new = sorted(i["InstanceId"] for i in in_service if images.get(i["InstanceId"]) == self.s.new_ami)
        desired = int(raw["DesiredCapacity"])
        asg, a = self.group.asg, self.action
        if a == "scale_out":
            asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=desired + 2)
            self.delta = 2
        elif a == "scale_in":
            asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=desired - 1)
            self.delta, self.removed = -1, 1
            _, after, _ = self.group.members()
            gone = {i["InstanceId"] for i in inst} - {i["InstanceId"] for i in after}
            kinds = {"old" if images.get(i) == self.s.old_ami else "new" for i in gone}
            self.victim_kind = kinds.pop() if len(kinds) == 1 else "unknown"
        elif a in ("scale_in_old", "scale_in_new"):
            pool = old if a == "scale_in_old" else new
            if not pool:
                return False  # not yet: try again at the next look
            victim = self.rng.choice(pool)
            asg.terminate_instance_in_auto_scaling_group(
                InstanceId=victim, ShouldDecrementDesiredCapacity=True
            )
            self.delta, self.removed = -1, 1
            a = f"{a} {victim}"
        else:
            if not old:
                return False
            victim = self.rng.choice(old)
            if a == "standby":
                asg.enter_standby(
                    AutoScalingGroupName="web", InstanceIds=[victim], ShouldDecrementDesiredCapacity=True
                )
                self.delta = -1
            elif a == "terminate":
                self.group.ec2.terminate_instances(InstanceIds=[victim])
                # moto replaces the instance (as AWS does) but, unlike AWS, does not
                # register the replacement with the group's target group: do it here
                members = [{"Id": i["InstanceId"]} for i in self.group.raw()["Instances"]]
                self.group.elbv2.register_targets(TargetGroupArn=self.s.tg_arn, Targets=members)
            elif a == "detach":
                asg.detach_instances(
                    AutoScalingGroupName="web", InstanceIds=[victim], ShouldDecrementDesiredCapacity=False
                )
            self.removed = 1
            a = f"{a} {victim}"
        self.fired = a
        return True

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def _quiet() -> Reporter:
    return Reporter(io.StringIO())


def assert_complete(g: Group, s: Seeded, desired: int, version: str = "2") -> None:
    raw, inst, images = g.members()
    in_service = [i["InstanceId"] for i in inst if i["LifecycleState"] == "InService"]
    assert in_service and {images[i] for i in in_service} == {s.new_ami}, (raw, images)
    assert raw["LaunchTemplate"]["Version"] == version
    assert raw["DesiredCapacity"] == desired, raw
    assert len(in_service) == desired
    assert raw["MaxSize"] == MAX
    assert raw["SuspendedProcesses"] == []
    assert not [k for k in tag_map(raw) if k.startswith("goldenimage:rotation-")]


def assert_rolled_back(g: Group, s: Seeded) -> None:
    raw, inst, images = g.members()
    in_service = [i["InstanceId"] for i in inst if i["LifecycleState"] == "InService"]
    assert {images[i] for i in in_service} == {s.old_ami}, (raw, images)
    assert raw["LaunchTemplate"]["Version"] == "1"
    assert raw["SuspendedProcesses"] == []
    assert not [k for k in tag_map(raw) if k.startswith("goldenimage:rotation-")]


def assert_cleanly_failed(g: Group) -> None:
    raw = g.raw()
    tags = tag_map(raw)
    assert tags["goldenimage:rotation-status"] in ("failed", "interrupted"), tags
    assert raw["SuspendedProcesses"] == [], raw["SuspendedProcesses"]
    assert raw["MaxSize"] >= raw["DesiredCapacity"]


def run_disrupted(
    aws: Clients,
    url: str,
    moment: str,
    action: str,
    rng: random.Random,
    *,
    then: str = "resume",
    **policy: Any,
) -> tuple[dict[str, Any] | None, Disruptor, Watcher]:
    s = seed_group(aws, size=SIZE)
    aws.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web", MaxSize=MAX)
    g = Group(url)
    pol = GroupPolicy(**{**POLICY, **policy})  # type: ignore[arg-type]
    d = Disruptor(url, s, moment, action, rng)
    w = Watcher(url)
    w.start()
    d.start()
    res: dict[str, Any] | None = None
    try:
        try:
            res = rotate(aws, pol, s.new_ami, reporter=_quiet())
        except RotationFailed as exc:  # cleanly failed: resumable at once
            assert "internal error" not in str(exc)
            assert_cleanly_failed(g)
            if then == "resume":
                res = rotate(aws, pol, None, reporter=_quiet(), resume=True)
            else:
                back = rollback(aws, pol, reporter=_quiet())
                assert back["exit_code"] == 0, back
                assert_rolled_back(g, s)
                return None, d, w
        except GoldenImageError as exc:  # pragma: no cover - named in the failure
            pytest.fail(f"rotation ended in {type(exc).__name__}: {exc}")
    finally:
        d.stop()
        w.stop()
    assert d.error is None, d.error
    assert d.fired, f"the disruption {action} never found its moment {moment}"
    assert res is not None and res["exit_code"] == 0 and res["outcome"] == "done", res
    kept = pol.external_scaling == "keep"
    assert_complete(g, s, SIZE + d.delta if kept else SIZE)
    floor = POLICY["min_healthy_percent"] * SIZE // 100 - d.removed  # type: ignore[operator]
    assert w.samples > 5
    assert w.lowest is not None and w.lowest >= floor, (w.lowest, floor, d.fired)
    return res, d, w


MOMENTS = ["batch1", "checkpoint", "last"]
ACTIONS = ["scale_out", "scale_in_old", "scale_in_new", "standby", "terminate", "detach"]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("moment", MOMENTS)
def test_group_changed_during_rotation(aws: Clients, moto_url: str, moment: str, action: str) -> None:
    rng = random.Random(f"{SEED}-{moment}-{action}")
    res, d, _ = run_disrupted(aws, moto_url, moment, action, rng)
    assert res is not None
    if action == "standby":  # left alone, said so, not counted as serving
        victim = d.fired.split()[-1]
        raw = Group(moto_url).raw()
        parked = [i for i in raw["Instances"] if i["InstanceId"] == victim]
        assert parked and parked[0]["LifecycleState"] == "Standby"


@pytest.mark.parametrize("moment", MOMENTS)
def test_random_scale_in_by_moto(aws: Clients, moto_url: str, moment: str) -> None:
    """Set desired -1 and let moto pick the victim. moto takes the first unprotected
    instance of its list, which is mostly an old one: `scale_in_old` and `scale_in_new`
    above choose each kind of victim on purpose (seeded), so both kinds are covered."""
    kinds: list[str] = []
    for run in range(1):
        if run:
            req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST", data=b"")
            urllib.request.urlopen(req, timeout=10).close()
        _, d, _ = run_disrupted(aws, moto_url, moment, "scale_in", random.Random(f"{SEED}-{run}"))
        kinds.append(d.victim_kind)
    print(f"moto's scale-in victims during {moment}: {kinds}")


@pytest.mark.parametrize("moment", ["batch1", "checkpoint"])
def test_failed_run_rolled_back_exactly(aws: Clients, moto_url: str, moment: str) -> None:
    """A run stopped by an AWS error after the group changed: rollback returns it exactly."""
    calls = {"n": 0}

    def fail_third_terminate(**kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            from botocore.awsrequest import AWSResponse

            return AWSResponse("http://x", 400, {}, None), {
                "Error": {"Code": "ServiceUnavailable", "Message": "injected"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
        return None

    aws.autoscaling.meta.events.register(
        "before-call.auto-scaling.TerminateInstanceInAutoScalingGroup", fail_third_terminate
    )
    rng = random.Random(f"{SEED}-rb-{moment}")
    res, _, _ = run_disrupted(aws, moto_url, moment, "scale_out", rng, then="rollback")
    assert res is None and calls["n"] >= 3


def test_policy_can_restore_the_starting_desired_capacity(aws: Clients, moto_url: str) -> None:
    """`external_scaling: restore`: a scale-out by someone else is undone at the end."""
    rng = random.Random(f"{SEED}-restore")
    res, d, _ = run_disrupted(aws, moto_url, "batch1", "scale_out", rng, external_scaling="restore")
    assert res is not None and d.delta == 2


def test_cli_rotation_while_someone_scales_in(aws: Clients, moto_url: str) -> None:
    """The same through the command line in its own process: desired -1 during batch 1."""
    root = Path(__file__).resolve().parents[2]
    s = seed_group(aws, size=SIZE)
    aws.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web", MaxSize=MAX)
    d = Disruptor(moto_url, s, "batch1", "scale_in", random.Random(SEED))
    w = Watcher(moto_url)
    w.start()
    d.start()
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "goldenimage.rotation",
                "rotate",
                "--group",
                "web",
                "--image-id",
                s.new_ami,
                "--endpoint-url",
                moto_url,
                "--dummy-credentials",
                "--max-attempts",
                "1",
                "--policy",
                json.dumps({k: v for k, v in POLICY.items() if k != "asg"}),
                "--json",
            ],
            env={**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        d.stop()
        w.stop()
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["outcome"] == "done"
    assert d.fired == "scale_in" and d.error is None
    assert_complete(Group(moto_url), s, SIZE - 1)
    assert w.lowest is not None and w.lowest >= SIZE - 1

"""12 instances over 3 zones: capacity watcher, version pinning, alarm rollback, throttling."""

from __future__ import annotations

import io
import random
import threading
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from goldenimage.aws.clients import Clients
from goldenimage.progress import Reporter
from goldenimage.rotation.executor import rotate
from goldenimage.rotation.plan import LEAVING
from goldenimage.rotation.policy import GroupPolicy
from tests.integration.rotate_conftest_fixtures import (  # noqa: F401 - fixtures
    aws_fixture,
    instance_images,
    make_clients,
    moto_url_fixture,
    seed_group,
)

pytestmark = pytest.mark.integration


class Watcher(threading.Thread):
    """Samples the group from its own clients; remembers the lowest healthy capacity."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.clients = make_clients(url)
        self.lowest: int | None = None
        self.samples = 0
        self.done = threading.Event()

    def sample(self) -> None:
        g = self.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
        inst = g["AutoScalingGroups"][0]["Instances"]
        healthy = sum(
            1
            for i in inst
            if i["LifecycleState"] == "InService"
            and i["HealthStatus"] == "Healthy"
            and i["LifecycleState"] not in LEAVING
        )
        self.lowest = healthy if self.lowest is None else min(self.lowest, healthy)
        self.samples += 1

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.005)

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def quiet() -> Reporter:
    return Reporter(io.StringIO())


@pytest.mark.parametrize(
    ("surge", "min_healthy", "floor"),
    [(25, 100, 12), (0, 75, 9), (25, 90, 11)],
)
def test_twelve_over_three_zones_never_below_minimum(
    aws: Clients, moto_url: str, surge: int, min_healthy: int, floor: int
) -> None:
    s = seed_group(aws, size=12)
    pol = GroupPolicy(
        asg="web",
        batch_size="25%",
        max_surge_percent=surge,
        min_healthy_percent=min_healthy,
        abort_alarms=[s.alarm],
        poll_seconds=0.01,
    )
    w = Watcher(moto_url)
    w.start()
    try:
        res = rotate(aws, pol, s.new_ami, reporter=quiet())
    finally:
        w.stop()
    assert res["exit_code"] == 0, res
    assert w.samples > 5
    assert w.lowest is not None and w.lowest >= floor, (w.lowest, w.samples)
    imgs = instance_images(aws, "web")
    assert len(imgs) == 12 and set(imgs.values()) == {s.new_ami}
    g = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    g0 = g["AutoScalingGroups"][0]
    assert g0["LaunchTemplate"] == {
        "LaunchTemplateId": s.lt_id,
        "LaunchTemplateName": "web-lt",
        "Version": res["to_version"],
    }
    assert res["to_version"] == "2"
    assert (g0["DesiredCapacity"], g0["MaxSize"]) == (12, 12)


def test_alarm_halfway_rolls_back_to_all_old(aws: Clients, moto_url: str) -> None:
    s = seed_group(aws, size=12)
    pol = GroupPolicy(asg="web", batch_size="25%", abort_alarms=[s.alarm], poll_seconds=0.01)
    batches = {"n": 0}

    def on_surge(**kw: object) -> None:
        batches["n"] += 1
        if batches["n"] == 3:  # halfway: 2 of 4 batches done
            aws.cloudwatch.set_alarm_state(AlarmName=s.alarm, StateValue="ALARM", StateReason="5xx")

    aws.autoscaling.meta.events.register("after-call.auto-scaling.SetDesiredCapacity", on_surge)
    w = Watcher(moto_url)
    w.start()
    try:
        res = rotate(aws, pol, s.new_ami, reporter=quiet())
    finally:
        w.stop()
    assert res["exit_code"] == 1 and res["outcome"] == "rolled back"
    assert "web-5xx in ALARM" in res["reason"]
    assert res["rolled_back"] == res["replaced"] > 0  # every new instance went back
    imgs = instance_images(aws, "web")
    assert len(imgs) == 12 and set(imgs.values()) == {s.old_ami}
    g0 = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])[
        "AutoScalingGroups"
    ][0]
    assert g0["LaunchTemplate"]["Version"] == "1"
    assert (g0["DesiredCapacity"], g0["MaxSize"]) == (12, 12)
    assert w.lowest is not None and w.lowest >= 12


_BODIES = {
    "ec2": b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit "
    b"exceeded.</Message></Error></Errors><RequestID>t</RequestID></Response>",
    "query": b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate "
    b"exceeded</Message></Error><RequestId>t</RequestId></ErrorResponse>",
}


def test_throttling_on_30_percent_of_calls_still_completes(
    moto_url: str, aws: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = seed_group(aws, size=12)
    import botocore.retries.standard as std

    # keep botocore's own retries, but without seconds of back-off in a test
    monkeypatch.setattr(std.ExponentialBackoff, "delay_amount", lambda self, ctx: 0.001)
    clients = make_clients(moto_url, max_attempts=12)
    rng = random.Random(30)
    counts = {"sent": 0, "throttled": 0}

    def throttler(body: bytes) -> Any:
        def throttle(request: Any, **kw: Any) -> AWSResponse | None:
            # `before-send` (not `before-call`): a response here goes through botocore's
            # retry handler, as a real throttling answer would; `before-call` skips it.
            counts["sent"] += 1
            if rng.random() < 0.3:
                counts["throttled"] += 1
                return AWSResponse(request.url, 400, {}, _Raw(body))
            return None

        return throttle

    # CloudWatch speaks CBOR in this botocore; this group has no abort alarm to poll anyway
    for svc in (clients.ec2, clients.autoscaling, clients.elbv2):
        proto = "ec2" if svc.meta.service_model.protocol == "ec2" else "query"
        svc.meta.events.register("before-send", throttler(_BODIES[proto]))
    pol = GroupPolicy(asg="web", batch_size="25%", poll_seconds=0.01)
    res = rotate(clients, pol, s.new_ami, reporter=quiet())
    assert res["exit_code"] == 0, res
    assert counts["throttled"] > 0.2 * counts["sent"] and counts["sent"] > 40, counts
    assert set(instance_images(aws, "web").values()) == {s.new_ami}


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kw: Any) -> Any:
        yield self.data

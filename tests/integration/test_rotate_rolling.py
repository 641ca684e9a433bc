"""The rolling executor against a moto server."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from goldenimage.aws.clients import Clients
from goldenimage.progress import Reporter
from goldenimage.rotation.executor import SimClock, human_rotate, rollback, rotate
from goldenimage.rotation.policy import GroupPolicy
from goldenimage.rotation.state import tag_map
from tests.integration.rotate_conftest_fixtures import (  # noqa: F401 - fixtures
    aws_fixture,
    instance_images,
    moto_url_fixture,
    seed_group,
)

pytestmark = pytest.mark.integration


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def group(clients: Clients, name: str = "web") -> dict:  # type: ignore[type-arg]
    return clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ][0]


def test_rotate_replaces_everything_and_pins_version(aws: Clients) -> None:
    s = seed_group(aws, size=6)
    pol = GroupPolicy(asg="web", batch_size="50%", max_surge_percent=50, poll_seconds=0.01)
    res = rotate(aws, pol, s.new_ami, reporter=quiet())
    assert res["exit_code"] == 0, res
    assert res["outcome"] == "done" and res["replaced"] == 6
    imgs = instance_images(aws, "web")
    assert len(imgs) == 6 and set(imgs.values()) == {s.new_ami}
    g = group(aws)
    assert g["LaunchTemplate"]["Version"] == res["to_version"] == "2"
    assert (g["DesiredCapacity"], g["MaxSize"]) == (6, 6)
    tags = tag_map(g)
    assert tags["goldenimage:previous-image"] == s.old_ami
    assert tags["goldenimage:current-image"] == s.new_ami
    assert not [k for k in tags if k.startswith("goldenimage:rotation-")]
    # the new version carries the full data of the old one
    v = aws.ec2.describe_launch_template_versions(LaunchTemplateId=s.lt_id, Versions=["2"])
    data = v["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == s.new_ami and data["InstanceType"] == "t3.micro"
    assert data["TagSpecifications"][0]["Tags"] == [{"Key": "role", "Value": "web"}]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert human_rotate(res)[0].startswith("web: rotate done")
    # a second run has nothing to do
    again = rotate(aws, pol, s.new_ami, reporter=quiet())
    assert again["outcome"] == "nothing to do" and again["exit_code"] == 0


def test_warns_without_imdsv2(aws: Clients) -> None:
    s = seed_group(aws, size=2, imdsv2=False)
    res = rotate(aws, GroupPolicy(asg="web", poll_seconds=0.01), s.new_ami, reporter=quiet())
    assert res["exit_code"] == 0
    assert any("IMDSv2" in w for w in res["warnings"])


def test_alarm_in_alarm_rolls_back(aws: Clients) -> None:
    s = seed_group(aws, size=8, azs=("us-east-1a", "us-east-1b"))
    pol = GroupPolicy(
        asg="web", batch_size=2, max_surge_percent=25, abort_alarms=[s.alarm], poll_seconds=0.01
    )
    rep = quiet()
    calls = {"n": 0}

    def fire(**kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch sets the alarm off
            aws.cloudwatch.set_alarm_state(AlarmName=s.alarm, StateValue="ALARM", StateReason="t")

    aws.autoscaling.meta.events.register("after-call.auto-scaling.SetDesiredCapacity", fire)
    res = rotate(aws, pol, s.new_ami, reporter=rep)
    assert res["exit_code"] == 1 and res["outcome"] == "rolled back"
    assert f"alarm {s.alarm} in ALARM" in res["reason"]
    imgs = instance_images(aws, "web")
    assert len(imgs) == 8 and set(imgs.values()) == {s.old_ami}
    g = group(aws)
    assert g["LaunchTemplate"]["Version"] == "1"
    assert (g["DesiredCapacity"], g["MaxSize"]) == (8, 8)
    tags = tag_map(g)
    assert "goldenimage:previous-image" not in tags
    assert "rolled back" in tags["goldenimage:last-rotation"]


def test_wrong_image_rolls_back(aws: Clients) -> None:
    s = seed_group(aws, size=4)
    pol = GroupPolicy(asg="web", batch_size=1, poll_seconds=0.01)

    def lie(parsed: dict, **kw: object) -> None:  # type: ignore[type-arg]
        for r in parsed.get("Reservations", []):
            for i in r["Instances"]:
                if i["ImageId"] == s.new_ami:
                    i["ImageId"] = "ami-00000000bad"

    aws.ec2.meta.events.register("after-call.ec2.DescribeInstances", lie)
    res = rotate(aws, pol, s.new_ami, reporter=quiet())
    assert res["exit_code"] == 1 and "wrong image" in res["reason"]
    aws.ec2.meta.events.unregister("after-call.ec2.DescribeInstances", lie)
    assert set(instance_images(aws, "web").values()) == {s.old_ami}


def test_rollback_on_demand_after_finished_rotation(aws: Clients) -> None:
    s = seed_group(aws, size=4)
    pol = GroupPolicy(asg="web", poll_seconds=0.01)
    assert rotate(aws, pol, s.new_ami, reporter=quiet())["exit_code"] == 0
    res = rollback(aws, pol, reporter=quiet())
    assert res["exit_code"] == 0 and res["to_image"] == s.old_ami, res
    assert set(instance_images(aws, "web").values()) == {s.old_ami}
    g = group(aws)
    assert g["LaunchTemplate"]["Version"] == "1"
    tags = tag_map(g)
    assert tags["goldenimage:current-image"] == s.old_ami
    assert tags["goldenimage:previous-image"] == s.new_ami


def test_zones_stay_balanced_in_each_batch(aws: Clients) -> None:
    s = seed_group(aws, size=6)
    pol = GroupPolicy(asg="web", batch_size=3, max_surge_percent=50, poll_seconds=0.01)
    res = rotate(aws, pol, s.new_ami, reporter=quiet())
    for b in res["plan"]["batches"]:
        assert sorted(Counter(b["out_azs"]).values()) == [1, 1, 1]


def test_health_timeout_rolls_back(aws: Clients) -> None:
    """New instances never turn InService: time out (simulated clock), roll back."""
    s = seed_group(aws, size=4)
    initial = set(instance_images(aws, "web"))
    pins = {"n": 0}

    def count_pins(**kw: object) -> None:
        pins["n"] += 1

    def sick(parsed: dict, **kw: object) -> None:  # type: ignore[type-arg]
        if pins["n"] >= 2:  # the rollback pinned the old version: launches are fine again
            return
        for g in parsed.get("AutoScalingGroups", []):
            for i in g["Instances"]:
                if i["InstanceId"] not in initial:
                    i["LifecycleState"] = "Pending"

    ev = aws.autoscaling.meta.events
    ev.register("after-call.auto-scaling.UpdateAutoScalingGroup", count_pins)
    ev.register("after-call.auto-scaling.DescribeAutoScalingGroups", sick)
    pol = GroupPolicy(asg="web", batch_size=2, health_timeout_seconds=300, poll_seconds=10)
    clock = SimClock(1_800_000_000.0)
    res = rotate(aws, pol, s.new_ami, reporter=quiet(), clock=clock)
    assert res["exit_code"] == 1 and res["reason"].startswith(
        "health timeout: batch 1/4: 0/1 InService"
    )
    assert clock.now() - 1_800_000_000.0 >= 300
    imgs = instance_images(aws, "web")
    assert len(imgs) == 4 and set(imgs.values()) == {s.old_ami}
    assert group(aws)["DesiredCapacity"] == 4


@pytest.mark.parametrize("mode", ["ignore", "replace"])
def test_protected_instances(aws: Clients, mode: str) -> None:
    s = seed_group(aws, size=4)
    victim = sorted(instance_images(aws, "web"))[0]
    aws.autoscaling.set_instance_protection(
        AutoScalingGroupName="web", InstanceIds=[victim], ProtectedFromScaleIn=True
    )
    pol = GroupPolicy(asg="web", protected=mode, poll_seconds=0.01)  # type: ignore[arg-type]
    res = rotate(aws, pol, s.new_ami, reporter=quiet())
    assert res["exit_code"] == 0
    imgs = instance_images(aws, "web")
    assert len(imgs) == 4
    if mode == "ignore":
        assert imgs[victim] == s.old_ami and victim in res["plan"]["ignored"]
    else:
        assert victim not in imgs and set(imgs.values()) == {s.new_ami}


def test_standby_instance_is_left_alone(aws: Clients) -> None:
    s = seed_group(aws, size=4)
    parked = sorted(instance_images(aws, "web"))[0]
    aws.autoscaling.enter_standby(
        AutoScalingGroupName="web", InstanceIds=[parked], ShouldDecrementDesiredCapacity=True
    )
    pol = GroupPolicy(asg="web", poll_seconds=0.01)
    res = rotate(aws, pol, s.new_ami, reporter=quiet())
    assert res["exit_code"] == 0, res
    assert "in standby" in res["plan"]["ignored"][parked]
    imgs = instance_images(aws, "web")
    assert imgs.pop(parked) == s.old_ami
    assert len(imgs) == 3 and set(imgs.values()) == {s.new_ami}
    assert group(aws)["DesiredCapacity"] == 3


def test_scaling_processes_paused_during_rotation_only(aws: Clients) -> None:
    s = seed_group(aws, size=4)
    aws.autoscaling.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    aws.autoscaling.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    aws.autoscaling.suspend_processes(
        AutoScalingGroupName="web", ScalingProcesses=["ScheduledActions"]
    )
    during: list[set[str]] = []

    def look(**kw: object) -> None:
        during.append({p["ProcessName"] for p in group(aws)["SuspendedProcesses"]})

    aws.autoscaling.meta.events.register("after-call.auto-scaling.SetDesiredCapacity", look)
    res = rotate(aws, GroupPolicy(asg="web", poll_seconds=0.01), s.new_ami, reporter=quiet())
    aws.autoscaling.meta.events.unregister("after-call.auto-scaling.SetDesiredCapacity", look)
    assert res["exit_code"] == 0
    assert during and all(
        d == {"AZRebalance", "AlarmNotification", "ScheduledActions"} for d in during
    ), during
    after = {p["ProcessName"] for p in group(aws)["SuspendedProcesses"]}
    assert after == {"ScheduledActions"}  # it was paused before: left paused

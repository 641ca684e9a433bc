"""`invoke gc` finds and removes what a killed validation, a killed build and an aborted
rotation left on AWS (`aws.leftovers`), against the moto server. moto lacks
DeleteLaunchTemplateVersions: that one call goes through botocore Stubber."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from goldenimage import gc, retention
from goldenimage.aws import leftovers
from goldenimage.aws.clients import AwsContext, Clients
from goldenimage.aws.target import AwsTarget
from goldenimage.aws.validate import (
    VALIDATION_IMAGE_TAG,
    VALIDATION_TAG,
    CheckResult,
    _Resources,
    validate_ami,
)
from goldenimage.errors import OperationFailed
from goldenimage.models import BUILD_TAG, CREATED_TAG, ROTATION_STATE_PREFIX, ROTATION_VERSION_DESCRIPTION
from goldenimage.progress import Reporter
from goldenimage.sandbox.target import SandboxTarget
from goldenimage.sections import ImageRetention, RetentionSettings
from goldenimage.settings import load_environment
from tests.conftest import ROOT

HOURS = 6  # extra.retention.leftover_hours
LATER = timedelta(hours=9)  # the plan runs this long after the world was made


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _tags(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in pairs]


def _spec(kind: str, *pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": _tags(*pairs)}]


def world(clients: Clients, moto_client: Callable[[str], Any], fleet: dict[str, Any],
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A validation killed outright (old), one still running (young), a build killed
    outright (Packer's instance, key pair and group), someone else's `packer_*` key pair and
    instance, and rotation-made launch-template versions: one of an aborted rotation
    (unused), one an ASG pins (old, not the default), the latest, and one an unfinished
    rotation made."""
    ec2, asg = moto_client("ec2"), moto_client("autoscaling")
    ami, subnet = fleet["images"]["web"], fleet["subnets"][0]
    out: dict[str, Any] = {"ami": ami}

    # a validation killed outright: validate.py's own resources, its clean-up never ran
    class Registry:
        def get(self, image_id: str) -> Any:
            return type("R", (), {"status": "validated"})()

    with monkeypatch.context() as m:
        m.setattr(_Resources, "cleanup", lambda self: None)
        old = validate_ami(clients, ami, subnet=subnet, check=lambda t, r: CheckResult(passed=True),
                           registry=Registry())  # type: ignore[arg-type]
    out["old"] = {"instance": old["instance_id"], "key": f"goldenimage-validate-{old['token']}",
                  "group": ec2.describe_security_groups(Filters=[
                      {"Name": "tag:" + VALIDATION_TAG, "Values": [old["token"]]}])["SecurityGroups"][0]["GroupId"]}

    # a validation that started (in the plan's clock) an hour before the plan: still running
    vpc = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
    tags = ((VALIDATION_TAG, "young"), (VALIDATION_IMAGE_TAG, ami),
            (CREATED_TAG, _stamp(datetime.now(UTC) + LATER - timedelta(hours=1))))
    key = ec2.create_key_pair(KeyName="goldenimage-validate-young", TagSpecifications=_spec("key-pair", *tags))
    group = ec2.create_security_group(GroupName="goldenimage-validate-young", Description="v", VpcId=vpc,
                                      TagSpecifications=_spec("security-group", *tags))["GroupId"]
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, KeyName=key["KeyName"], SubnetId=subnet,
                             SecurityGroupIds=[group], TagSpecifications=_spec("instance", *tags))
    out["young"] = {"instance": inst["Instances"][0]["InstanceId"], "key": key["KeyName"], "group": group}

    # a build killed outright: Packer's instance (run_tags) with its packer_* key pair and group
    key = ec2.create_key_pair(KeyName="packer_5efef9ee-8e20-3ea4-cdff-78601d66f288")
    group = ec2.create_security_group(GroupName="packer_5efef9f0-cede-f34c-e460-e6dfb9c03184",
                                      Description="Temporary group for Packer", VpcId=vpc)["GroupId"]
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, KeyName=key["KeyName"], SubnetId=subnet,
                             SecurityGroupIds=[group],
                             TagSpecifications=_spec("instance", (BUILD_TAG, "web-20261130-0900-ab12")))
    out["build"] = {"instance": inst["Instances"][0]["InstanceId"], "key": key["KeyName"], "group": group}

    # someone else's Packer run: not ours, never listed
    key = ec2.create_key_pair(KeyName="packer_someone-else")
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, KeyName=key["KeyName"], SubnetId=subnet)
    out["other"] = {"instance": inst["Instances"][0]["InstanceId"], "key": key["KeyName"]}

    # launch templates: web v1 (the user's, default), v2 pinned by an ASG, v3 an aborted
    # rotation's, v4 the latest; api v2 made by a rotation that is unfinished (failed)
    data = {"ImageId": ami, "InstanceType": "t3.micro"}
    web = ec2.create_launch_template(LaunchTemplateName="gc-web", LaunchTemplateData=data)["LaunchTemplate"]
    for rid in ("r-pinned", "r-aborted", "r-done"):
        ec2.create_launch_template_version(LaunchTemplateId=web["LaunchTemplateId"], LaunchTemplateData=data,
                                           VersionDescription=f"{ROTATION_VERSION_DESCRIPTION}{rid}: {ami}")
    api = ec2.create_launch_template(LaunchTemplateName="gc-api", LaunchTemplateData=data)["LaunchTemplate"]
    ec2.create_launch_template_version(LaunchTemplateId=api["LaunchTemplateId"], LaunchTemplateData=data,
                                       VersionDescription=f"{ROTATION_VERSION_DESCRIPTION}r-run: {ami}")
    ec2.create_launch_template_version(LaunchTemplateId=api["LaunchTemplateId"], LaunchTemplateData=data)
    zones = ["us-east-1a"]
    asg.create_auto_scaling_group(AutoScalingGroupName="gc-web", MinSize=0, MaxSize=1, DesiredCapacity=0,
                                  AvailabilityZones=zones,
                                  LaunchTemplate={"LaunchTemplateId": web["LaunchTemplateId"], "Version": "2"})
    state = {"id": "r-run", "status": "failed", "from-version": "1", "to-version": ""}  # failed before it recorded v2
    asg.create_auto_scaling_group(
        AutoScalingGroupName="gc-api", MinSize=0, MaxSize=1, DesiredCapacity=0, AvailabilityZones=zones,
        LaunchTemplate={"LaunchTemplateId": api["LaunchTemplateId"], "Version": "1"},
        Tags=[{"Key": ROTATION_STATE_PREFIX + k, "Value": v, "PropagateAtLaunch": False,
               "ResourceId": "gc-api", "ResourceType": "auto-scaling-group"} for k, v in state.items()])
    out["web"], out["api"] = web["LaunchTemplateId"], api["LaunchTemplateId"]
    return out


def _target(clients: Clients) -> AwsTarget:
    return AwsTarget(load_environment("aws", ROOT), clients=clients)


def _plan(target: AwsTarget, now: datetime) -> retention.Plan:
    w = target.gc_world()
    return retention.plan(w.images, w.references, w.channels, {}, now, w.leftovers, leftover_hours=HOURS)


def _expected(w: dict[str, Any]) -> tuple[set[str], set[str]]:
    gone = {*w["old"].values(), *w["build"].values(), f"{w['web']} v3"}
    kept = {*w["young"].values(), f"{w['web']} v2", f"{w['web']} v4", f"{w['api']} v2"}
    return gone, kept


@pytest.fixture
def stub_version_deletes(aws_clients: Clients, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """DeleteLaunchTemplateVersions (moto lacks it) through Stubber, which checks the call
    against the real service model; every other call goes to moto."""
    real = Clients(AwsContext(region="us-east-1", credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))
    stub = Stubber(real.ec2)
    monkeypatch.setattr(aws_clients.ec2, "delete_launch_template_versions", real.ec2.delete_launch_template_versions)
    with stub:
        yield stub
    stub.assert_no_pending_responses()


def test_the_plan_lists_exactly_the_old_unused_leftovers_with_reasons(
        aws_clients: Clients, moto_client: Callable[[str], Any], seeded_fleet: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    w = world(aws_clients, moto_client, seeded_fleet, monkeypatch)
    plan = _plan(_target(aws_clients), datetime.now(UTC) + LATER)
    by = {d.image_id: d for d in plan.leftovers}
    gone, kept = _expected(w)
    assert {i for i, d in by.items() if d.action == "delete"} == gone
    assert {i for i, d in by.items() if d.action == "keep"} == kept  # nothing else is ours
    assert w["other"]["instance"] not in by and w["other"]["key"] not in by
    old = w["old"]["instance"]
    assert by[old].reason == f"delete: validation instance {old} (running) of {w['ami']}, 9 h old"
    assert by[w["young"]["instance"]].reason.endswith("1 h old; it may still be in use: removed after 6 h")
    assert by[w["build"]["key"]].reason == f"delete: build key pair {w['build']['key']}, 9 h old"
    assert by[f"{w['web']} v3"].reason.startswith(f"delete: {w['web']} v3 (gc-web, {w['ami']}) made by rotation r-aborted")
    assert by[f"{w['web']} v2"].reason.endswith("; used by asg gc-web")
    assert by[f"{w['web']} v4"].reason.endswith("; the latest version")
    assert by[f"{w['api']} v2"].reason.endswith("; rotation r-run of asg gc-api is unfinished (failed)")
    order = [d.image_id for d in plan.leftovers if d.changes]  # instances before what they use
    assert max(order.index(w[k]["instance"]) for k in ("old", "build")) < min(
        order.index(w[k][r]) for k in ("old", "build") for r in ("key", "group"))


def test_gc_apply_removes_exactly_the_planned_leftovers(
        aws_clients: Clients, moto_client: Callable[[str], Any], seeded_fleet: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, stub_version_deletes: Stubber) -> None:
    w = world(aws_clients, moto_client, seeded_fleet, monkeypatch)
    target = _target(aws_clients)
    monkeypatch.setattr(gc, "target_for", lambda env: target)
    monkeypatch.setattr(type(target.env), "retention", property(
        lambda self: RetentionSettings(images={"web": ImageRetention()}, leftover_hours=HOURS)))
    stub_version_deletes.add_response(
        "delete_launch_template_versions",
        {"SuccessfullyDeletedLaunchTemplateVersions": [{"LaunchTemplateId": w["web"], "VersionNumber": 3}],
         "UnsuccessfullyDeletedLaunchTemplateVersions": []},
        {"LaunchTemplateId": w["web"], "Versions": ["3"]})
    r = gc.gc("aws", True, Reporter(io.StringIO()), root=ROOT, now=datetime.now(UTC) + LATER)
    gone, _ = _expected(w)
    assert {a["image_id"]: a["outcome"] for a in r["applied"]} == dict.fromkeys(gone, "done")
    assert "exit_code" not in r
    ec2 = moto_client("ec2")
    live = {i["InstanceId"] for res in ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}])["Reservations"]
        for i in res["Instances"]}
    assert not live & {w["old"]["instance"], w["build"]["instance"]}
    assert {w["young"]["instance"], w["other"]["instance"]} <= live
    keys = {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    assert not keys & {w["old"]["key"], w["build"]["key"]}
    assert {w["young"]["key"], w["other"]["key"]} <= keys
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert not groups & {w["old"]["group"], w["build"]["group"]} and w["young"]["group"] in groups


def test_a_leftover_used_since_the_plan_is_skipped(
        aws_clients: Clients, moto_client: Callable[[str], Any], seeded_fleet: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-checked right before: the aborted rotation's version was pinned by a group since the
    plan, and the old validation's key pair got a new user; both are skipped, saying why."""
    w = world(aws_clients, moto_client, seeded_fleet, monkeypatch)
    target = _target(aws_clients)
    by = {d.image_id: d for d in _plan(target, datetime.now(UTC) + LATER).leftovers}
    moto_client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="gc-web", LaunchTemplate={"LaunchTemplateId": w["web"], "Version": "3"})
    assert target.gc_remove_leftover(by[f"{w['web']} v3"]) == {"done": False, "skipped": "in use now: used by asg gc-web"}
    ec2 = moto_client("ec2")
    user = ec2.run_instances(ImageId=w["ami"], MinCount=1, MaxCount=1, KeyName=w["old"]["key"])["Instances"][0]
    assert target.gc_remove_leftover(by[w["old"]["instance"]]) == {"done": True}
    skipped = target.gc_remove_leftover(by[w["old"]["key"]])
    assert skipped == {"done": False, "skipped": f"used now by {user['InstanceId']}"}
    assert target.gc_remove_leftover(by[w["old"]["instance"]])["skipped"].endswith("is gone or no longer ours since the plan")


def test_the_sandbox_removes_leftovers_like_aws(
        aws_clients: Clients, moto_client: Callable[[str], Any], seeded_fleet: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    w = world(aws_clients, moto_client, seeded_fleet, monkeypatch)
    target = SandboxTarget(load_environment("sandbox", ROOT), clients=aws_clients)
    by = {d.image_id: d for d in retention.plan(
        [], [], {}, {}, datetime.now(UTC) + LATER, target.gc_world().leftovers, leftover_hours=HOURS).leftovers}
    for what in ("instance", "key", "group"):
        assert by[w["old"][what]].action == "delete"
        assert target.gc_remove_leftover(by[w["old"][what]]) == {"done": True}
    assert not moto_client("ec2").describe_key_pairs(Filters=[{"Name": "key-name", "Values": [w["old"]["key"]]}])["KeyPairs"]


def test_a_version_aws_refuses_to_delete_is_a_failure_naming_it() -> None:
    """DeleteLaunchTemplateVersions answers per version: one it could not delete (e.g. it is
    the default now) is an OperationFailed with AWS's code, not a silent success."""
    clients = Clients(AwsContext(region="us-east-1", credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))
    lt, now = "lt-0123456789abcdef0", datetime.now(UTC)
    version = {"LaunchTemplateId": lt, "LaunchTemplateName": "web", "VersionNumber": 3, "CreateTime": now - LATER,
               "VersionDescription": f"{ROTATION_VERSION_DESCRIPTION}r-1: ami-0123456789abcdef0",
               "LaunchTemplateData": {"ImageId": "ami-0123456789abcdef0"}}
    template = {"LaunchTemplateId": lt, "LaunchTemplateName": "web", "DefaultVersionNumber": 1, "LatestVersionNumber": 4}
    stub = Stubber(clients.ec2)
    stub.add_response("describe_launch_templates", {"LaunchTemplates": [template]}, {"LaunchTemplateIds": [lt]})
    stub.add_response("describe_launch_template_versions", {"LaunchTemplateVersions": [version]},
                      {"LaunchTemplateId": lt, "ResolveAlias": True, "MaxResults": 200})
    stub.add_response("describe_instances", {"Reservations": []},
                      {"Filters": [{"Name": "instance-state-name", "Values": ["pending", "running", "shutting-down",
                                                                               "stopping", "stopped"]}]})
    asg = Stubber(clients.autoscaling)
    asg.add_response("describe_auto_scaling_groups", {"AutoScalingGroups": []}, {})
    stub.add_response("delete_launch_template_versions", {
        "SuccessfullyDeletedLaunchTemplateVersions": [],
        "UnsuccessfullyDeletedLaunchTemplateVersions": [{"LaunchTemplateId": lt, "VersionNumber": 3, "ResponseError": {
            "Code": "launchTemplateVersionIsDefault", "Message": "the default version cannot be deleted"}}]},
        {"LaunchTemplateId": lt, "Versions": ["3"]})
    d = retention.Decision(f"{lt} v3", leftovers.ROTATION_VERSION, "delete", "delete: ...", None)
    with stub, asg, pytest.raises(OperationFailed, match="launchTemplateVersionIsDefault"):
        leftovers.remove(clients, d)
    stub.assert_no_pending_responses()


def test_an_ami_stuck_in_building_goes_through_its_own_short_stages(
        aws_clients: Clients, moto_client: Callable[[str], Any]) -> None:
    """A bake killed after Packer made the AMI leaves it tagged `building`: retention moves
    it through the `building` graces (deprecate after 1 day, then disable and delete on the
    next runs), one stage per run, while a younger one (its bake may still run) is kept."""
    from goldenimage.models import ENV_TAG, FINGERPRINT_TAG, NAME_TAG, STATUS_TAG

    ec2 = moto_client("ec2")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    amis = {}
    for n, age in (("stuck", 2 * 24), ("baking", 5)):
        amis[n] = ec2.register_image(Name=f"gc-{n}", RootDeviceName="/dev/sda1")["ImageId"]
        ec2.create_tags(Resources=[amis[n]], Tags=_tags(
            (NAME_TAG, "web"), (ENV_TAG, "sandbox"), (STATUS_TAG, "building"),
            (FINGERPRINT_TAG, "sha256:" + "0" * 64), (CREATED_TAG, _stamp(now - timedelta(hours=age)))))
    target = SandboxTarget(load_environment("sandbox", ROOT), clients=aws_clients)
    policy = {"web": ImageRetention()}
    for day, action in enumerate(["deprecate", "disable", "delete"]):
        w = target.gc_world()
        plan = retention.plan(w.images, w.references, w.channels, policy, now + timedelta(days=day), w.leftovers)
        by = {d.image_id: d for d in plan.decisions}
        assert by[amis["stuck"]].action == action, by[amis["stuck"]].reason
        if day == 0:
            assert by[amis["stuck"]].reason == "deprecate: building since created 2 days ago"
            assert by[amis["baking"]].reason == "keep: building since created today; deprecate after 1 day"
        assert target.gc_apply(by[amis["stuck"]], now + timedelta(days=day))["done"]
    assert not ec2.describe_images(ImageIds=[amis["stuck"]], IncludeDisabled=True)["Images"]

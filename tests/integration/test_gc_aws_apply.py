"""`invoke gc --apply` on AMIs: against the moto server (disable, deregister, snapshots,
restore) and through botocore Stubber where moto lacks the call (deprecation, the
real-AWS deregistration with DeleteAssociatedSnapshots)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from goldenimage import retention
from goldenimage.aws import collect
from goldenimage.aws.clients import AwsContext, Clients
from goldenimage.aws.target import AwsTarget
from goldenimage.models import CREATED_TAG, ENV_TAG, FINGERPRINT_TAG, NAME_TAG, STATUS_TAG
from goldenimage.sections import ImageRetention, RetentionSettings
from goldenimage.settings import load_environment
from tests.conftest import ROOT
from tests.integration.test_aws_references import validated_tags, world

NOW = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = {"web": ImageRetention(keep=1, min_age_days=0, deprecate_after=0, disable_after=0, delete_after=0)}
ORDER = ["running", "stopped", "terminated", "lt_old", "lt_default", "lt_latest", "lc", "mixed", "previous",
         "current", "ssm_any", "ssm_channel", "ssm_pinned", "ssm_unpinned", "unused1", "unused2", "newest"]
COLLECTED = {"terminated", "ssm_unpinned", "unused1", "unused2"}


def _snapshots(ec2: Any, ami: str) -> set[str]:
    img = ec2.describe_images(ImageIds=[ami], IncludeDisabled=True)["Images"][0]
    return {m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"] if m.get("Ebs", {}).get("SnapshotId")}


def _world(moto_client: Callable[[str], Any]) -> dict[str, str]:
    """test_aws_references' world, plus a parameter whose older version is pinned by a label
    (and one whose older version nothing pins) and a newest image the policy keeps. (moto's
    RegisterImage ignores a mapping's SnapshotId, so no AMI can share a snapshot here: the
    shared case is the Stubber tests' below.)"""
    amis = world(moto_client)
    ec2, ssm = moto_client("ec2"), moto_client("ssm")
    for n in ("ssm_pinned", "ssm_unpinned", "newest"):
        inst = ec2.run_instances(ImageId=amis["base"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        amis[n] = ec2.create_image(InstanceId=inst, Name=f"gc-{n}")["ImageId"]
        ec2.terminate_instances(InstanceIds=[inst])
    for n in ("ssm_pinned", "ssm_unpinned", "ssm_any"):
        ssm.put_parameter(Name="/team/pinned/ami", Value=amis[n], Type="String", Overwrite=True)
    ssm.label_parameter_version(Name="/team/pinned/ami", ParameterVersion=1, Labels=["golden"])
    for day, n in enumerate(ORDER, start=1):
        ec2.create_tags(Resources=[amis[n]], Tags=validated_tags(day, local_id=f"web-{n}"))
    return amis


def _run(target: AwsTarget, now: datetime,
         between: Callable[[], None] | None = None) -> tuple[retention.Plan, dict[str, Any]]:
    """One `invoke gc --apply` run as gc.gc does it: plan from a fresh world, then each change."""
    w = target.gc_world()
    plan = retention.plan(w.images, w.references, w.channels, POLICY, now)
    if between:
        between()
    return plan, {d.image_id: target.gc_apply(d, now) for d in plan.decisions if d.changes}


def test_exactly_the_unused_old_images_go_through_their_stages(aws_clients: Clients,
                                                               moto_client: Callable[[str], Any]) -> None:
    amis = _world(moto_client)
    ec2 = moto_client("ec2")
    target = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    want = {amis[n] for n in COLLECTED}
    own = {n: _snapshots(ec2, amis[n]) for n in COLLECTED}
    assert all(own.values())
    for step, (action, stage) in enumerate([("deprecate", "deprecated"), ("disable", "disabled"), ("delete", None)]):
        now = NOW + timedelta(days=step)
        plan, applied = _run(target, now)
        assert {d.image_id for d in plan.decisions if d.changes} == want
        assert {d.action for d in plan.decisions if d.changes} == {action}
        assert all(r == {"done": True, "where": [f"us-east-1:{i}"]} for i, r in applied.items()), applied
        for i in want if stage else ():
            img = ec2.describe_images(ImageIds=[i], IncludeDisabled=True)["Images"][0]
            tags = {t["Key"]: t["Value"] for t in img["Tags"]}
            assert tags[collect.GC_STAGE_TAG] == stage and tags[collect.GC_STAGE_AT_TAG] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
            assert (img["State"] == "disabled") == (stage == "disabled")
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"], IncludeDisabled=True)["Images"]}
    assert not left & want
    kept = {amis[n] for n in ORDER if n not in COLLECTED} | {amis["base"]}
    assert kept <= left
    snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set().union(*own.values()) & snaps  # each AMI's own snapshots went with it
    assert set().union(*(_snapshots(ec2, i) for i in kept)) <= snaps  # no other AMI's
    for n in set(ORDER) - COLLECTED:  # nothing in use was ever touched
        img = ec2.describe_images(ImageIds=[amis[n]])["Images"][0]
        assert img["State"] == "available" and collect.GC_STAGE_TAG not in {t["Key"] for t in img["Tags"]}
    _, applied = _run(target, NOW + timedelta(days=9))
    assert applied == {}  # applying again changes nothing


def test_an_image_used_between_plan_and_apply_is_skipped(aws_clients: Clients,
                                                         moto_client: Callable[[str], Any]) -> None:
    amis = _world(moto_client)
    ec2 = moto_client("ec2")
    target = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    _run(target, NOW)
    _run(target, NOW + timedelta(days=1))

    def use_it() -> None:  # someone names the disabled AMI in a new launch template meanwhile
        ec2.create_launch_template(LaunchTemplateName="late", LaunchTemplateData={"ImageId": amis["unused1"]})

    _, applied = _run(target, NOW + timedelta(days=2), between=use_it)
    assert applied[amis["unused1"]]["done"] is False
    assert applied[amis["unused1"]]["skipped"].startswith("in use now: lt-") and "(late)" in applied[amis["unused1"]]["skipped"]
    assert ec2.describe_images(ImageIds=[amis["unused1"]], IncludeDisabled=True)["Images"]  # still there
    assert all(applied[amis[n]] == {"done": True, "where": [f"us-east-1:{amis[n]}"]}
               for n in COLLECTED - {"unused1"})  # the others went on


def test_restore_takes_a_disable_back(aws_clients: Clients, moto_client: Callable[[str], Any]) -> None:
    amis = _world(moto_client)
    ec2 = moto_client("ec2")
    target = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    _run(target, NOW)
    _run(target, NOW + timedelta(days=1))
    assert target.gc_restore(amis["unused1"]) == {"stage": {"stage": "disabled", "at": "2026-06-02T00:00:00Z"}}
    img = ec2.describe_images(ImageIds=[amis["unused1"]])["Images"][0]
    assert img["State"] == "available" and collect.GC_STAGE_TAG not in {t["Key"] for t in img.get("Tags", [])}
    assert target.gc_restore(amis["unused1"]) == {"stage": None}
    w = target.gc_world()
    by = {d.image_id: d for d in retention.plan(w.images, w.references, w.channels, POLICY, NOW).decisions}
    assert by[amis["unused1"]].action == "deprecate"  # back at the start of its stages


def _real_aws() -> Clients:
    return Clients(AwsContext(region="us-east-1", credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))


def test_deprecation_on_real_aws_is_set_in_the_future() -> None:
    """moto lacks EnableImageDeprecation: Stubber checks the call against the real model."""
    from botocore.stub import ANY, Stubber

    clients = _real_aws()
    stub = Stubber(clients.ec2)
    seen: dict[str, Any] = {}
    stub.add_response("enable_image_deprecation", {"Return": True}, {"ImageId": "ami-0123456789abcdef0", "DeprecateAt": ANY})
    stub.add_response("create_tags", {}, {"Resources": ["ami-0123456789abcdef0"], "Tags": [
        {"Key": collect.GC_STAGE_TAG, "Value": "deprecated"}, {"Key": collect.GC_STAGE_AT_TAG, "Value": "2026-06-01T00:00:00Z"}]})
    clients.ec2.meta.events.register("provide-client-params.ec2.EnableImageDeprecation",
                                     lambda params, **kw: seen.update(params))
    with stub:
        collect.deprecate(clients, "ami-0123456789abcdef0", NOW)
    stub.assert_no_pending_responses()
    assert seen["DeprecateAt"] > datetime.now(UTC)


@pytest.mark.parametrize("sandbox", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_deregister_deletes_only_own_snapshots(shared: bool, sandbox: bool) -> None:
    """Real AWS, no snapshot shared with another AMI: DeleteAssociatedSnapshots in the
    deregistration. One shared, or the sandbox (moto): deregister, then delete only the
    AMI's own snapshots, never the one another AMI maps."""
    from botocore.stub import Stubber

    clients = _real_aws() if not sandbox else Clients(AwsContext(
        region="us-east-1", endpoint_url="http://127.0.0.1:1",
        credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))
    ami, other = "ami-0123456789abcdef0", "ami-0fedcba9876543210"

    def bdm(*snaps: str) -> list[dict[str, Any]]:
        return [{"DeviceName": f"/dev/sd{c}", "Ebs": {"SnapshotId": s}} for c, s in zip("abc", snaps, strict=False)]

    images = [{"ImageId": ami, "BlockDeviceMappings": bdm("snap-0aaaaaaaaaaaaaaaa", "snap-0bbbbbbbbbbbbbbbb")},
              {"ImageId": other, "BlockDeviceMappings": bdm("snap-0bbbbbbbbbbbbbbbb" if shared else "snap-0cccccccccccccccc")}]
    stub = Stubber(clients.ec2)
    stub.add_response("describe_images", {"Images": images}, {"Owners": ["self"], "IncludeDisabled": True})
    if shared or sandbox:
        stub.add_response("deregister_image", {"Return": True}, {"ImageId": ami})
        stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-0aaaaaaaaaaaaaaaa"})
        if not shared:
            stub.add_response("delete_snapshot", {}, {"SnapshotId": "snap-0bbbbbbbbbbbbbbbb"})
    else:
        stub.add_response("deregister_image", {"Return": True}, {"ImageId": ami, "DeleteAssociatedSnapshots": True})
    with stub:
        out = collect.deregister(clients, ami)
    stub.assert_no_pending_responses()
    assert out["kept_shared"] == (["snap-0bbbbbbbbbbbbbbbb"] if shared else [])


def test_every_copy_goes_through_the_stage_and_restore_takes_each_back(
        aws_clients: Clients, moto_client: Callable[[str], Any]) -> None:
    """extra.aws ami_regions: deprecate, disable, restore and deregister reach the copy in
    eu-west-1 too (found by its local-id tag; moto's CopyImage drops tags, so they are set)."""
    import boto3
    from botocore.config import Config

    from tests.integration.conftest import CREDENTIALS

    env = load_environment("aws", ROOT)
    env.aws.build.ami_regions[:] = ["eu-west-1"]
    ec2 = moto_client("ec2")
    west = boto3.session.Session(region_name="eu-west-1", **CREDENTIALS).client(
        "ec2", endpoint_url=aws_clients.ctx.endpoint_url, config=Config(retries={"max_attempts": 1}))
    ec2.register_image(Name="seed", RootDeviceName="/dev/sda1")
    base = ec2.describe_images(Owners=["self"])["Images"][0]["ImageId"]
    amis, copies = {}, {}
    for day, n in enumerate(["old", "new"], start=1):
        inst = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        amis[n] = ec2.create_image(InstanceId=inst, Name=f"gc-{n}")["ImageId"]
        tags = validated_tags(day, local_id=f"web-{n}")
        ec2.create_tags(Resources=[amis[n]], Tags=tags)
        copies[n] = west.copy_image(SourceImageId=amis[n], SourceRegion="us-east-1", Name=f"gc-{n}")["ImageId"]
        west.create_tags(Resources=[copies[n]], Tags=tags)
    target = AwsTarget(env, clients=aws_clients)
    _, applied = _run(target, NOW)
    assert applied == {amis["old"]: {"done": True, "where": [f"eu-west-1:{copies['old']}", f"us-east-1:{amis['old']}"]}}
    _run(target, NOW + timedelta(days=1))
    assert west.describe_images(ImageIds=[copies["old"]], IncludeDisabled=True)["Images"][0]["State"] == "disabled"
    assert target.gc_restore(amis["old"])["stage"]["stage"] == "disabled"
    assert west.describe_images(ImageIds=[copies["old"]])["Images"][0]["State"] == "available"
    for day in (2, 3, 4):
        _run(target, NOW + timedelta(days=day))
    assert not ec2.describe_images(Owners=["self"], ImageIds=[amis["old"]], IncludeDisabled=True)["Images"]
    assert not west.describe_images(Owners=["self"], ImageIds=[copies["old"]], IncludeDisabled=True)["Images"]
    assert west.describe_images(ImageIds=[copies["new"]])["Images"]


def test_a_failure_on_one_image_is_reported_and_the_others_go_on(
        aws_clients: Clients, moto_client: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `gc.gc --apply`: one AMI's DisableImage fails; the others are disabled, the
    result says which failed and why, and the exit code is 1."""
    import io

    from goldenimage import gc
    from goldenimage.progress import Reporter

    amis = _world(moto_client)
    target = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    monkeypatch.setattr(gc, "target_for", lambda env: target)
    monkeypatch.setattr(type(target.env), "retention", property(
        lambda self: RetentionSettings(images=POLICY)))
    _run(target, NOW)
    ec2 = aws_clients.ec2
    real = ec2.disable_image

    def flaky(**kw: Any) -> Any:  # DisableImage fails for this AMI alone (an AWS error)
        if kw["ImageId"] == amis["unused1"]:
            ec2.describe_images(ImageIds=["ami-00000000000000000"])
        return real(**kw)

    monkeypatch.setattr(ec2, "disable_image", flaky)
    r = gc.gc("aws", True, Reporter(io.StringIO()), root=ROOT, now=NOW + timedelta(days=1))
    outcome = {a["image_id"]: a for a in r["applied"]}
    assert outcome[amis["unused1"]]["outcome"] == "failed"
    assert f"disable us-east-1:{amis['unused1']}" in outcome[amis["unused1"]]["detail"]
    assert {i for i, a in outcome.items() if a["outcome"] == "done"} == {amis[n] for n in COLLECTED - {"unused1"}}
    assert r["exit_code"] == 1
    img = moto_client("ec2").describe_images(ImageIds=[amis["unused1"]])["Images"][0]  # still launchable
    assert {t["Key"]: t["Value"] for t in img["Tags"]}[collect.GC_STAGE_TAG] == "deprecated"  # stage put back


def test_the_sandbox_applies_like_aws_without_the_calls_moto_lacks(
        aws_clients: Clients, moto_client: Callable[[str], Any]) -> None:
    """Target sandbox carries the plan out on its AMIs (never on the local store under them):
    its deprecation is only recorded (moto has no EnableImageDeprecation, which would fail
    with HTTP 500 here), and its disable is moto's DisableImage."""
    from goldenimage.sandbox.target import SandboxTarget

    ec2 = moto_client("ec2")
    ec2.register_image(Name="seed", RootDeviceName="/dev/sda1")
    base = ec2.describe_images(Owners=["self"])["Images"][0]["ImageId"]
    amis = {}
    for day, n in enumerate(["old", "new"], start=1):
        inst = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        amis[n] = ec2.create_image(InstanceId=inst, Name=f"gc-{n}")["ImageId"]
        ec2.create_tags(Resources=[amis[n]], Tags=validated_tags(day, env="sandbox"))
    target = SandboxTarget(load_environment("sandbox", ROOT), clients=aws_clients)
    assert target.gc_applies
    for day, stage in enumerate(["deprecated", "disabled"]):
        w = target.gc_world()
        plan = retention.plan(w.images, w.references, w.channels, POLICY, NOW + timedelta(days=day))
        changes = [d for d in plan.decisions if d.changes]
        assert [d.image_id for d in changes] == [amis["old"]]
        assert target.gc_apply(changes[0], NOW + timedelta(days=day))["done"]
        img = ec2.describe_images(ImageIds=[amis["old"]], IncludeDisabled=True)["Images"][0]
        assert {t["Key"]: t["Value"] for t in img["Tags"]}[collect.GC_STAGE_TAG] == stage
    assert img["State"] == "disabled"
    assert target.gc_restore(amis["old"])["stage"]["stage"] == "disabled"
    assert ec2.describe_images(ImageIds=[amis["old"]])["Images"][0]["State"] == "available"


def test_a_parent_ami_with_a_registered_child_is_kept(aws_clients: Clients,
                                                      moto_client: Callable[[str], Any]) -> None:
    """Image families: `unused1` becomes the parent of a child AMI (its tags name it), so it
    stays; re-checked right before a step as well."""
    from goldenimage.models import PARENT_ID_TAG, PARENT_NAME_TAG

    amis = _world(moto_client)
    ec2 = moto_client("ec2")
    inst = ec2.run_instances(ImageId=amis["base"], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    child = ec2.create_image(InstanceId=inst, Name="gc-child")["ImageId"]
    ec2.terminate_instances(InstanceIds=[inst])
    ec2.create_tags(Resources=[child], Tags=[
        {"Key": NAME_TAG, "Value": "app"}, {"Key": ENV_TAG, "Value": "aws"}, {"Key": STATUS_TAG, "Value": "validated"},
        {"Key": FINGERPRINT_TAG, "Value": "sha256:" + "1" * 64}, {"Key": CREATED_TAG, "Value": "2026-02-01T00:00:00Z"},
        {"Key": PARENT_ID_TAG, "Value": amis["unused1"]}, {"Key": PARENT_NAME_TAG, "Value": "web"}])
    target = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    plan, applied = _run(target, NOW)
    reasons = {d.image_id: d.reason for d in plan.decisions}
    assert reasons[amis["unused1"]] == f"keep: parent of {child}"
    assert amis["unused1"] not in applied and amis["unused2"] in applied
    decision = next(d for d in plan.decisions if d.image_id == amis["unused2"])
    assert target._ami_still_used(amis["unused1"]) == f"parent of {child}"
    assert decision.action == "deprecate"

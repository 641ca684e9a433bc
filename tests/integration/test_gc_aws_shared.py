"""`invoke gc` on AMIs others use or change meanwhile, against the moto server: shared AMIs
(launch permissions, public, RAM), uses that appear between the plan and a step, the gc
lock, an AMI someone else removed, and what the re-check costs at the size of an account."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from goldenimage import cli, gc, retention
from goldenimage.aws import references
from goldenimage.aws.clients import Clients, register_hook
from goldenimage.aws.collect import GC_STAGE_AT_TAG, GC_STAGE_TAG
from goldenimage.aws.target import AwsTarget
from goldenimage.progress import Reporter
from goldenimage.sections import ImageRetention, RetentionSettings
from goldenimage.settings import Environment, load_environment
from tests.aws_faults import CallRecorder
from tests.conftest import ROOT
from tests.integration.test_aws_references import validated_tags

NOW = datetime(2026, 6, 1, tzinfo=UTC)
WEB = ImageRetention(keep=1, min_age_days=0, deprecate_after=0, disable_after=0, delete_after=0)
ACCOUNT, ORG = "111122223333", "arn:aws:organizations::123456789012:organization/o-abc1234567"
OU = "arn:aws:organizations::123456789012:ou/o-abc1234567/ou-ab12-cdefgh34"


def _amis(ec2: Any, n: int, stage: str | None = None) -> list[str]:
    """`n` validated web AMIs created on January 1..n (the last one is the newest, kept), in
    `stage` since January."""
    ids = []
    for day in range(1, n + 1):
        ami = ec2.register_image(Name=f"web-{day:03d}", RootDeviceName="/dev/sda1")["ImageId"]
        tags = validated_tags(day)
        if stage:
            tags += [{"Key": GC_STAGE_TAG, "Value": stage}, {"Key": GC_STAGE_AT_TAG, "Value": "2026-02-01T00:00:00Z"}]
        ec2.create_tags(Resources=[ami], Tags=tags)
        if stage == "disabled":
            ec2.disable_image(ImageId=ami)
        ids.append(ami)
    return ids


@pytest.fixture
def target(aws_clients: Clients, monkeypatch: pytest.MonkeyPatch) -> AwsTarget:
    t = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    monkeypatch.setattr(gc, "target_for", lambda env: t)
    policy(monkeypatch)
    return t


def policy(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> None:
    monkeypatch.setattr(Environment, "retention", property(lambda self: RetentionSettings(images={"web": WEB}, **kw)))


def run(apply: bool = False, now: datetime = NOW) -> dict[str, Any]:
    return gc.gc("aws", apply, Reporter(io.StringIO()), root=ROOT, now=now)


def reasons(r: dict[str, Any]) -> dict[str, str]:
    return {d["image_id"]: d["reason"] for d in r["decisions"]}


def _share(ec2: Any, ami: str, **who: str) -> None:
    ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [who]})


def test_shared_amis_are_kept_and_the_reason_names_with_whom(target: AwsTarget,
                                                            moto_client: Callable[[str], Any]) -> None:
    """On main each of these was deprecated, disabled and deleted like any other AMI."""
    ec2 = moto_client("ec2")
    account, org, ou, public, alone, newest = _amis(ec2, 6)
    _share(ec2, account, UserId=ACCOUNT)
    _share(ec2, org, OrganizationArn=ORG)
    _share(ec2, ou, OrganizationalUnitArn=OU)
    _share(ec2, public, Group="all")
    got = reasons(run())
    assert got[account] == f"keep: shared with account {ACCOUNT}"
    assert got[org] == f"keep: shared with organization {ORG}"
    assert got[ou] == f"keep: shared with OU {OU}"
    assert got[public] == "keep: shared with the public (launch permission group all)"
    assert got[alone].startswith("deprecate:") and got[newest].startswith("keep: among the newest")
    r = run(apply=True)
    assert [a["image_id"] for a in r["applied"]] == [alone]


def test_shared_may_go_lets_them_go_and_says_whose_access_goes(target: AwsTarget, moto_client: Callable[[str], Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ec2 = moto_client("ec2")
    deprecated = _amis(ec2, 2, stage="deprecated")[0]
    _share(ec2, deprecated, UserId=ACCOUNT)
    policy(monkeypatch, shared_may_go=["web"])
    r = run(apply=True)
    assert reasons(r)[deprecated] == (f"disable: deprecated 120 days ago, 1 newer kept; shared with account "
                                      f"{ACCOUNT} (web is in shared_may_go)")
    assert [(a["image_id"], a["outcome"]) for a in r["applied"]] == [(deprecated, "done")]


def test_an_ami_shared_after_the_plan_is_never_disabled(target: AwsTarget, moto_client: Callable[[str], Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared between the plan and its step: skipped, still enabled, still shared."""
    ec2 = moto_client("ec2")
    first, second, _ = _amis(ec2, 3, stage="deprecated")
    real = target.gc_recheck

    def shared_meanwhile(decisions: list[retention.Decision]) -> Any:
        fresh = real(decisions)
        _share(ec2, second, UserId=ACCOUNT)  # after the batch's look, before second's step
        return fresh

    monkeypatch.setattr(target, "gc_recheck", shared_meanwhile)
    r = run(apply=True)
    outcome = {a["image_id"]: a for a in r["applied"]}
    assert outcome[first]["outcome"] == "done"
    assert outcome[second] == {"image_id": second, "action": "disable", "outcome": "skipped",
                               "detail": f"in use now: shared with account {ACCOUNT}"}
    assert ec2.describe_images(ImageIds=[second])["Images"][0]["State"] == "available"


@pytest.mark.parametrize("kind", ["launch template version", "new launch template", "instance"])
def test_a_use_that_appears_between_two_steps_stops_the_later_one(
        target: AwsTarget, moto_client: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A use of the third AMI arrives after the first AMI's step, inside the batch the fresh
    look was made for: the third AMI's disable is skipped (the cheap check right before it)."""
    ec2 = moto_client("ec2")
    amis = _amis(ec2, 4, stage="deprecated")
    lt = ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": amis[-1]})
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    real = target.gc_apply
    steps: list[str] = []

    def then_someone_uses_the_third(d: retention.Decision, now: datetime, fresh: Any = None) -> Any:
        out = real(d, now, fresh)
        steps.append(d.image_id)
        if len(steps) == 1:
            if kind == "launch template version":
                ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={"ImageId": amis[2]})
            elif kind == "new launch template":
                ec2.create_launch_template(LaunchTemplateName="other", LaunchTemplateData={"ImageId": amis[2]})
            else:
                ec2.run_instances(ImageId=amis[2], MinCount=1, MaxCount=1)
        return out

    monkeypatch.setattr(target, "gc_apply", then_someone_uses_the_third)
    r = run(apply=True)
    outcome = {a["image_id"]: a for a in r["applied"]}
    assert [outcome[a]["outcome"] for a in amis[:3]] == ["done", "done", "skipped"]
    assert outcome[amis[2]]["detail"].startswith("in use now: " + ("instance" if kind == "instance" else "lt-"))
    assert r["exit_code"] == 1


def test_the_recheck_costs_what_changed_not_the_whole_region(target: AwsTarget,
                                                            moto_client: Callable[[str], Any]) -> None:
    """30 launch templates, 12 old AMIs to disable: every template's versions are listed once
    (by the gathering), never again per image, and the apply's requests per AMI stay a
    handful. On main each step listed every template's versions again (~35 requests)."""
    ec2 = moto_client("ec2")
    amis = _amis(ec2, 13, stage="deprecated")
    used = ec2.register_image(Name="used-by-templates", RootDeviceName="/dev/sda1")["ImageId"]
    for k in range(30):
        ec2.create_launch_template(LaunchTemplateName=f"lt-{k}", LaunchTemplateData={"ImageId": used})
    with CallRecorder() as rec:
        r = run(apply=True)
    assert [a["outcome"] for a in r["applied"]] == ["done"] * 12
    assert rec.calls.count("ec2:DescribeLaunchTemplateVersions") == 30
    per_image = (len(rec.calls) - 30) / 12  # all but the gathering's one listing per template
    assert per_image <= 10, (per_image, {c: rec.calls.count(c) for c in set(rec.calls)})
    assert all(ec2.describe_images(ImageIds=[a], IncludeDisabled=True)["Images"][0]["State"] == "disabled"
               for a in amis[:12])


def test_a_second_gc_apply_exits_at_once_with_one_line(target: AwsTarget, moto_client: Callable[[str], Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The lock is an SSM parameter (any machine sharing the account sees it); on main both
    runs went ahead and the second reported the first's work as skipped or failed."""
    ec2 = moto_client("ec2")
    amis = _amis(ec2, 3, stage="deprecated")
    first = target.gc_lock("gc --apply")
    assert first.try_acquire() is None
    try:
        with pytest.raises(SystemExit) as exc:
            cli.run(lambda rep: gc.gc("aws", True, rep, root=ROOT, now=NOW, lock_wait=0))
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 1
        assert len(err) == 1, err
        assert err[0].startswith("error: gc --apply in aws is already running: SSM parameter "
                                 "/goldenimage/_locks/gc/aws in us-east-1")
        assert "(gc --apply) since" in err[0]
        assert ec2.describe_images(ImageIds=[amis[0]])["Images"][0]["State"] == "available"
    finally:
        first.release()
    r = run(apply=True)
    assert [a["outcome"] for a in r["applied"]] == ["done", "done"]
    assert not moto_client("ssm").get_parameters_by_path(Path="/goldenimage/_locks", Recursive=True)["Parameters"]


def test_an_ami_another_run_removed_is_already_gone(target: AwsTarget, moto_client: Callable[[str], Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Deregistered after the gathering (by hand, or by a run that did not take the lock):
    `gone`, not skipped or failed, and the exit code is 0."""
    ec2 = moto_client("ec2")
    amis = _amis(ec2, 3, stage="disabled")
    real = AwsTarget.gc_world

    def gathered_then_removed(self: AwsTarget) -> Any:
        w = real(self)
        ec2.deregister_image(ImageId=amis[0])
        return w

    monkeypatch.setattr(AwsTarget, "gc_world", gathered_then_removed)
    r = run(apply=True)
    assert [(a["image_id"], a["outcome"]) for a in r["applied"]] == [(amis[0], "gone"), (amis[1], "done")]
    assert r.get("exit_code", 0) == 0


def test_describe_image_references_answers_the_batch_where_aws_has_it(
        target: AwsTarget, moto_client: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the API answers DescribeImageReferences (real AWS: here a hook answers it, as
    botocore's Stubber would, checked against the service model by the parser) the batch
    asks it instead of listing instances, versions and parameters; where it does not (moto:
    HTTP 500), gc notices once and falls back."""
    ec2 = moto_client("ec2")
    amis = _amis(ec2, 3, stage="deprecated")
    monkeypatch.setattr(type(target), "_references_api", lambda self: not getattr(self, "_no_references_api", False))
    asked: list[list[str]] = []
    remove = register_hook("before-call.ec2.DescribeImageReferences", _dir_answer(amis[1], asked))
    try:
        with CallRecorder() as rec:
            r = run(apply=True)
    finally:
        remove()
    outcome = {a["image_id"]: a for a in r["applied"]}
    assert outcome[amis[0]]["outcome"] == "done"
    assert outcome[amis[1]] == {"image_id": amis[1], "action": "disable", "outcome": "skipped", "detail":
                                "in use now: image reference ec2:LaunchTemplate "
                                "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-0"}
    assert not getattr(target, "_no_references_api", False)
    assert sorted(amis[:2]) in asked  # the batch, in one request
    assert rec.calls.count("ec2:DescribeLaunchTemplates") == 1  # the gathering's: no fallback listing
    # without the hook the endpoint answers HTTP 500: noticed once, then the fallback
    target2 = AwsTarget(load_environment("aws", ROOT), clients=target.clients)
    monkeypatch.setattr(gc, "target_for", lambda env: target2)
    r = run(apply=True, now=NOW + timedelta(days=1))
    assert getattr(target2, "_no_references_api", False)
    assert [a["outcome"] for a in r["applied"]] == ["done", "done"]


def _dir_answer(used: str, asked: list[list[str]]) -> Callable[..., Any]:
    """A before-call hook answering DescribeImageReferences (the parsed answer, as Stubber
    gives it): `used` is referenced by a launch template, the others by nothing."""

    def handler(**kw: Any) -> Any:
        body = kw["params"].get("body", {})
        ids = sorted(v for k, v in body.items() if k.startswith("ImageId."))
        asked.append(ids)
        refs = [{"ImageId": used, "ResourceType": "ec2:LaunchTemplate",
                 "Arn": "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-0"}] if used in ids else []
        return AWSResponse(kw["params"]["url"], 200, {}, None), {"ImageReferences": refs}

    return handler


def test_ram_shares_where_ram_answers_and_a_note_where_it_does_not(aws_clients: Clients) -> None:
    """moto has no RAM ListResources (404): gc notes that RAM was not checked; where it
    answers (botocore Stubber against the real model), an AMI in a share is `shared`."""
    from botocore.stub import Stubber

    refs, note = references.ram_shares(aws_clients)
    assert refs == [] and note is not None and note.startswith("AMIs shared through RAM not checked: ")
    ram = aws_clients.client("ram")
    share = "arn:aws:ram:us-east-1:123456789012:resource-share/7ab63972-b505-7e2a-420d-6f5d3EXAMPLE"
    with Stubber(ram) as stub:
        stub.add_response("list_resources", {"resources": [
            {"arn": "arn:aws:ec2:us-east-1:123456789012:image/ami-0abc1234def567890", "type": "ec2:Image",
             "resourceShareArn": share, "status": "AVAILABLE"},
            {"arn": "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-1", "type": "ec2:Subnet",
             "resourceShareArn": share, "status": "AVAILABLE"}]}, {"resourceOwner": "SELF"})
        refs, note = references.ram_shares(aws_clients)
    assert note is None
    assert refs == [retention.Reference("ami-0abc1234def567890", "shared", f"through RAM share {share}")]

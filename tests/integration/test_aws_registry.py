"""The AWS registry against the session's moto server (and botocore Stubber where moto lacks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from goldenimage.aws.clients import Clients
from goldenimage.aws.registry import AwsRegistry
from goldenimage.errors import ConfigError, NotFoundError, OperationFailed
from goldenimage.store import ImageRecord

FP1 = "sha256:" + "1" * 64
FP2 = "sha256:" + "2" * 64


def record(
    local_id: str, fp: str = FP1, status: str = "validated", created: str = ""
) -> ImageRecord:
    return ImageRecord(
        id=local_id,
        name="web",
        env="sandbox",
        fingerprint=fp,
        created=created or f"2026-11-26T10:00:{len(local_id):02d}Z",
        status=status,
        artifact="/store/images/x/disk.qcow2",
    )


def manifest(local_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": local_id,
        "name": "web",
        "base_ami": "debian-12-x",
        "git_commit": "abc123",
        "disk_size": "4G",
        "inputs": {"roles/web/tasks/main.yml": "sha256:..."},
        **extra,
    }


@pytest.fixture
def registry(aws_clients: Clients) -> AwsRegistry:
    return AwsRegistry(aws_clients, "sandbox")


def test_put_registers_a_tagged_ami_from_a_snapshot_and_leaves_no_volume(
    registry: AwsRegistry, moto_client: Callable[[str], Any]
) -> None:
    rec = registry.put(record("web-20261126-a"), manifest("web-20261126-a"))
    assert rec.id.startswith("ami-")
    assert (rec.name, rec.env, rec.fingerprint, rec.status) == ("web", "sandbox", FP1, "validated")
    assert rec.extra["base_ami"] == "debian-12-x"
    assert rec.extra["git_commit"] == "abc123"
    assert rec.extra["local_id"] == "web-20261126-a"
    ec2 = moto_client("ec2")
    image = ec2.describe_images(ImageIds=[rec.id])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["goldenimage:fingerprint"] == FP1
    assert tags["goldenimage:created"] == rec.created
    snap = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    snap_tags = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["Tags"]
    assert {"Key": "goldenimage:name", "Value": "web"} in snap_tags
    assert ec2.describe_volumes()["Volumes"] == []
    assert registry.manifest(rec.id)["inputs"] == {"roles/web/tasks/main.yml": "sha256:..."}
    assert registry.manifest(rec.id)["ami_id"] == rec.id
    again = registry.put(record("web-20261126-a"), manifest("web-20261126-a"))  # a retried bake
    assert again.id == rec.id and len(ec2.describe_images(Owners=["self"])["Images"]) == 1


def test_put_adopts_an_ami_packer_built(
    registry: AwsRegistry, moto_client: Callable[[str], Any]
) -> None:
    ec2 = moto_client("ec2")
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ami = ec2.register_image(
        Name="packer-web",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}],
    )["ImageId"]
    rec = registry.put(record("web-b"), manifest("web-b", artifact_id=f"us-east-1:{ami}"))
    assert rec.id == ami
    assert rec.fingerprint == FP1
    assert len(ec2.describe_images(Owners=["self"])["Images"]) == 1


def test_list_and_find_by_fingerprint_use_tags(registry: AwsRegistry) -> None:
    a = registry.put(record("a", FP1, created="2026-11-26T10:00:01Z"), manifest("a"))
    b = registry.put(record("bb", FP1, created="2026-11-26T10:00:02Z"), manifest("bb"))
    q = registry.put(record("ccc", FP2, status="quarantined"), manifest("ccc"))
    other_env = AwsRegistry(registry.clients, "prod")
    assert other_env.list() == []
    assert [r.id for r in registry.list("web")] == sorted(
        [a.id, b.id, q.id], key=lambda i: registry.get(i).created
    )
    assert registry.list("db") == []
    hit = registry.find_by_fingerprint("web", FP1)
    assert hit is not None and hit.id == b.id  # the newest validated one
    assert registry.find_by_fingerprint("web", FP2) is None  # quarantined is never reused
    assert registry.find_by_fingerprint("web", "sha256:" + "3" * 64) is None


def test_promote_writes_channel_versions_and_history_is_the_rollback_target(
    registry: AwsRegistry, moto_client: Callable[[str], Any]
) -> None:
    a = registry.put(record("a"), manifest("a"))
    b = registry.put(record("bb", FP2), manifest("bb"))
    first = registry.promote(a.id, "stable")
    assert first["changed"] and first["previous"] is None
    param = moto_client("ssm").get_parameter(Name="/goldenimage/web/stable")["Parameter"]
    assert param["Value"] == a.id
    assert param["DataType"] == "aws:ec2:image"  # moto 5.2.5 accepts the AMI data type
    assert registry.promote(a.id, "stable")["changed"] is False  # no new version
    second = registry.promote(b.id, "stable")
    assert second["previous"] == a.id
    hist = registry.history("web", "stable")
    assert [(h["version"], h["image_id"]) for h in hist] == [(1, a.id), (2, b.id)]
    assert registry.rollback_target("web", "stable") == a.id
    assert registry.get(b.id).channels == ("stable",)
    assert registry.get(a.id).channels == ()
    assert registry.resolve_channel("web", "stable").id == b.id


def test_promote_refuses_quarantined_images_and_bad_channels(registry: AwsRegistry) -> None:
    q = registry.put(record("q", status="quarantined"), manifest("q"))
    with pytest.raises(ConfigError, match="is quarantined"):
        registry.promote(q.id, "stable")
    ok = registry.put(record("ok"), manifest("ok"))
    with pytest.raises(ConfigError, match="bad channel name"):
        registry.promote(ok.id, "Stable/../x")
    with pytest.raises(NotFoundError, match="channel web/beta does not exist"):
        registry.resolve_channel("web", "beta")


def test_revoke_tags_moves_channels_back_and_is_refused_everywhere(registry: AwsRegistry) -> None:
    a = registry.put(record("a"), manifest("a"))
    b = registry.put(record("bb", FP2), manifest("bb"))
    registry.promote(a.id, "stable")
    registry.promote(b.id, "stable")
    registry.promote(b.id, "canary")
    out = registry.revoke(b.id, "CVE-2026-0001 in  openssl")
    assert out["reason"] == "CVE-2026-0001 in openssl"
    assert out["channels_moved"] == {"stable": a.id}
    assert out["channels_left"] == ["canary"]  # no earlier image to fall back to
    assert out["deprecation"].startswith("skipped")  # moto has no EnableImageDeprecation
    rec = registry.get(b.id)
    assert rec.status == "revoked"
    assert rec.extra["revoked_reason"] == "CVE-2026-0001 in openssl"
    assert registry.resolve_channel("web", "stable").id == a.id
    with pytest.raises(ConfigError, match="is revoked: CVE-2026-0001"):
        registry.resolve_channel("web", "canary")
    with pytest.raises(ConfigError, match="is revoked"):
        registry.promote(b.id, "stable")
    with pytest.raises(ConfigError, match="is revoked"):
        registry.require_usable(b.id)
    assert registry.find_by_fingerprint("web", FP2) is None
    assert registry.revoke(b.id, "again")["previous_status"] == "revoked"  # idempotent
    with pytest.raises(ConfigError, match="needs a reason"):
        registry.revoke(a.id, "  ")


def test_revoke_deprecates_the_ami_on_aws(aws_clients: Clients) -> None:
    """moto lacks EnableImageDeprecation: check the call against the real model (Stubber)."""
    now = dt.datetime(2026, 11, 26, 12, 0, 30, tzinfo=dt.UTC)
    reg = AwsRegistry(aws_clients, "prod", supports_deprecation=True, now=lambda: now)
    ami = "ami-0123456789abcdef0"
    image = {
        "ImageId": ami,
        "State": "available",
        "Tags": [
            {"Key": "goldenimage:name", "Value": "web"},
            {"Key": "goldenimage:status", "Value": "validated"},
        ],
    }
    with Stubber(aws_clients.ec2) as stub:
        stub.add_response("describe_images", {"Images": [image]}, {"ImageIds": [ami]})
        stub.add_response("create_tags", {}, {"Resources": [ami], "Tags": ANY})
        stub.add_response(
            "enable_image_deprecation",
            {"Return": True},
            {"ImageId": ami, "DeprecateAt": dt.datetime(2026, 11, 26, 12, 1, tzinfo=dt.UTC)},
        )
        out = reg.revoke(ami, "bad kernel")
        stub.assert_no_pending_responses()
    assert out["deprecation"] == "2026-11-26T12:01:00Z"


def test_unknown_and_malformed_ami_ids_are_not_found(registry: AwsRegistry) -> None:
    with pytest.raises(NotFoundError, match="unknown image id 'ami-0123456789abcdef0'"):
        registry.get("ami-0123456789abcdef0")
    with pytest.raises(NotFoundError, match="not an AMI id"):
        registry.get("web-20261126")
    with pytest.raises(NotFoundError):
        registry.promote("ami-0123456789abcdef0", "stable")


def test_an_ami_without_goldenimage_tags_is_not_ours(
    registry: AwsRegistry, moto_client: Callable[[str], Any]
) -> None:
    ec2 = moto_client("ec2")
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ami = ec2.register_image(
        Name="foreign",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}],
    )["ImageId"]
    with pytest.raises(NotFoundError, match="not a goldenimage AMI"):
        registry.get(ami)


def test_region_without_the_ami(registry: AwsRegistry, moto_endpoint: str) -> None:
    from goldenimage.aws.clients import AwsContext

    rec = registry.put(record("a"), manifest("a"))
    west = AwsRegistry(
        Clients(
            AwsContext(
                region="us-west-2",
                endpoint_url=moto_endpoint,
                max_attempts=1,
                credentials={"aws_access_key_id": "t", "aws_secret_access_key": "t"},
            )
        ),
        "sandbox",
    )
    with pytest.raises(NotFoundError, match="in us-west-2"):
        west.get(rec.id)


def test_a_failed_registration_leaves_nothing_behind(
    registry: AwsRegistry, moto_client: Callable[[str], Any]
) -> None:
    from tests.aws_faults import ErrorInjector

    with (
        ErrorInjector("ec2:CreateTags", code="InternalError", status=400),
        pytest.raises(OperationFailed),
    ):
        registry.put(record("a"), manifest("a"))
    ec2 = moto_client("ec2")
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    assert ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    assert ec2.describe_volumes()["Volumes"] == []

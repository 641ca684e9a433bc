"""AWS publishing safety: deregistration protection from promotion to gc's last stage, and the
registry's per-AMI parameters deleted with the AMI.

Against the moto server. moto 5.2.5 serves neither EnableImageDeregistrationProtection nor
DisableImageDeregistrationProtection (HTTP 500) and DescribeImages reports no
`DeregistrationProtection`: where a test needs those two calls (`api` fixture) exactly they
go through botocore Stubber, which checks each call against the real service model; every
other call goes to moto. Without the fixture the code runs as on the sandbox: the state is
only recorded in the AMI's tag.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from goldenimage import gc
from goldenimage.aws import protection
from goldenimage.aws.clients import AwsContext, Clients
from goldenimage.aws.registry import AwsRegistry
from goldenimage.aws.target import AwsTarget
from goldenimage.errors import GoldenImageError, NotFoundError
from goldenimage.progress import Reporter
from goldenimage.sections import ImageRetention, RetentionSettings
from goldenimage.settings import Environment, load_environment
from tests.conftest import ROOT
from tests.integration.conftest import CREDENTIALS
from tests.integration.test_aws_references import validated_tags

NOW = datetime(2026, 6, 1, tzinfo=UTC)
WEB = ImageRetention(keep=1, min_age_days=0, deprecate_after=0, disable_after=0, delete_after=0)
OPS = ("enable_image_deregistration_protection", "disable_image_deregistration_protection")


@pytest.fixture
def target(aws_clients: Clients, monkeypatch: pytest.MonkeyPatch) -> AwsTarget:
    env = load_environment("aws", ROOT)
    env.aws.build.ami_regions[:] = ["eu-west-1"]
    t = AwsTarget(env, clients=aws_clients)
    monkeypatch.setattr(gc, "target_for", lambda e: t)
    monkeypatch.setattr(Environment, "retention", property(lambda self: RetentionSettings(images={"web": WEB})))
    return t


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The two protection calls of every `Clients` (any region) through one Stubber (the
    real model checks them); everything else goes to moto."""
    real = Clients(AwsContext(region="us-east-1", credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))
    stub = Stubber(real.ec2)
    client = Clients.client

    def patched(self: Clients, service: str) -> Any:
        c = client(self, service)
        if service == "ec2" and self is not real:
            for op in OPS:
                setattr(c, op, getattr(real.ec2, op))
        return c

    monkeypatch.setattr(Clients, "client", patched)
    monkeypatch.setattr(protection, "protection_api", lambda clients: True)
    with stub:
        yield stub
    stub.assert_no_pending_responses()


def _west(endpoint: str) -> Any:
    return boto3.session.Session(region_name="eu-west-1", **CREDENTIALS).client(
        "ec2", endpoint_url=endpoint, config=Config(retries={"max_attempts": 1}))


def _images(moto_client: Callable[[str], Any], endpoint: str, n: int) -> list[tuple[str, str]]:
    """`n` validated web AMIs (created January 1..n), each with a copy in eu-west-1 (the same
    local-id tag): [(home, copy)]."""
    ec2, west = moto_client("ec2"), _west(endpoint)
    west.register_image(Name="seed", RootDeviceName="/dev/sda1")  # moto: a region's first image has no snapshot
    out = []
    for day in range(1, n + 1):
        pair = []
        for client in (ec2, west):
            ami = client.register_image(Name=f"web-{day:03d}", RootDeviceName="/dev/sda1")["ImageId"]
            client.create_tags(Resources=[ami], Tags=validated_tags(day, local_id=f"web-{day}"))
            pair.append(ami)
        out.append((pair[0], pair[1]))
    return out


def _tag(client: Any, ami: str) -> str | None:
    imgs = client.describe_images(ImageIds=[ami], IncludeDisabled=True)["Images"]
    return {t["Key"]: t["Value"] for t in imgs[0].get("Tags", [])}.get(protection.PROTECTION_TAG) if imgs else None


def _gc(apply: bool, now: datetime, restore: str | None = None) -> dict[str, Any]:
    return gc.gc("aws", apply, Reporter(io.StringIO()), root=ROOT, now=now, restore=restore)


def test_promote_protects_every_copy_before_the_channel_names_it(
        target: AwsTarget, moto_client: Callable[[str], Any], moto_endpoint: str) -> None:
    """As on the sandbox (moto has no protection calls): the state is recorded on the AMI and
    its copy, and promote says it was only recorded."""
    (home, copy), = _images(moto_client, moto_endpoint, 1)
    out = target.registry().promote(home, "stable")
    assert out["protection"] == {f"eu-west-1:{copy}": f"enabled-with-cooldown ({protection.SKIPPED})",
                                 f"us-east-1:{home}": f"enabled-with-cooldown ({protection.SKIPPED})"}
    assert _tag(moto_client("ec2"), home) == _tag(_west(moto_endpoint), copy) == "enabled-with-cooldown"


def test_promote_on_aws_enables_protection_with_cooldown_copies_first(
        target: AwsTarget, moto_client: Callable[[str], Any], moto_endpoint: str, api: Stubber) -> None:
    (home, copy), = _images(moto_client, moto_endpoint, 1)
    for ami in (copy, home):
        api.add_response(OPS[0], {"Return": "true"}, {"ImageId": ami, "WithCooldown": True})
    out = target.registry().promote(home, "stable")
    assert out["changed"] and set(out["protection"].values()) == {"enabled-with-cooldown"}
    api.add_response(OPS[0], {"Return": "true"}, {"ImageId": copy, "WithCooldown": True})
    api.add_response(OPS[0], {"Return": "true"}, {"ImageId": home, "WithCooldown": True})
    assert target.registry().promote(home, "stable")["changed"] is False  # protected again all the same


def test_a_channel_never_names_an_ami_whose_protection_failed(
        target: AwsTarget, moto_client: Callable[[str], Any], moto_endpoint: str, api: Stubber) -> None:
    (home, copy), = _images(moto_client, moto_endpoint, 1)
    api.add_response(OPS[0], {"Return": "true"}, {"ImageId": copy, "WithCooldown": True})
    api.add_client_error(OPS[0], "UnauthorizedOperation", "not allowed")
    with pytest.raises(GoldenImageError) as err:
        target.registry().promote(home, "stable")
    assert "EnableImageDeregistrationProtection" in str(err.value) or "not allowed" in str(err.value)
    assert target.registry().channels("web") == {}


def test_gc_takes_protection_off_at_disable_waits_out_the_cooldown_then_deletes(
        target: AwsTarget, moto_client: Callable[[str], Any], moto_endpoint: str, api: Stubber) -> None:
    """Three images promoted in turn (a, b, c): a is on no channel and not the rollback target
    any more, so gc collects it; b (rollback target) and c (on the channel) keep their
    protection -- the Stubber would refuse any other Disable call."""
    (a, a2), (b, b2), (c, c2) = _images(moto_client, moto_endpoint, 3)
    for home, copy in ((a, a2), (b, b2), (c, c2)):
        api.add_response(OPS[0], {"Return": "true"}, {"ImageId": copy, "WithCooldown": True})
        api.add_response(OPS[0], {"Return": "true"}, {"ImageId": home, "WithCooldown": True})
        target.registry().promote(home, "stable")
    ec2, west = moto_client("ec2"), _west(moto_endpoint)

    r = _gc(True, NOW)
    assert [(x["image_id"], x["action"], x["outcome"]) for x in r["applied"]] == [(a, "deprecate", "done")]
    assert _tag(ec2, a) == "enabled-with-cooldown"  # deprecating leaves it protected

    later = NOW + timedelta(days=1)
    api.add_response(OPS[1], {"Return": "true"}, {"ImageId": a2})
    api.add_response(OPS[1], {"Return": "true"}, {"ImageId": a})
    r = _gc(True, later)
    assert [(x["image_id"], x["action"], x["outcome"]) for x in r["applied"]] == [(a, "disable", "done")]
    until = (later + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _tag(ec2, a) == _tag(west, a2) == f"disabled-until {until}"

    r = _gc(True, later + timedelta(hours=23))  # delete_after 0 days, but the cooldown runs
    assert r["applied"] == [{"image_id": a, "action": "delete", "outcome": "waiting", "deletable_at": until,
                             "detail": f"eu-west-1:{a2}: deregistration protection cooldown: deletable from "
                                       f"{until}; us-east-1:{a}: deregistration protection cooldown: "
                                       f"deletable from {until}"}]
    assert r.get("exit_code", 0) == 0 and r["reclaimed_bytes"] == 0
    assert "waiting: delete" in "\n".join(gc.human_gc(r))
    assert ec2.describe_images(ImageIds=[a], IncludeDisabled=True)["Images"]

    r = _gc(True, later + timedelta(hours=24, minutes=1))
    assert [(x["image_id"], x["action"], x["outcome"]) for x in r["applied"]] == [(a, "delete", "done")]
    assert not ec2.describe_images(Filters=[{"Name": "image-id", "Values": [a]}], IncludeDisabled=True)["Images"]
    assert not west.describe_images(Filters=[{"Name": "image-id", "Values": [a2]}], IncludeDisabled=True)["Images"]
    for ami, client in ((b, ec2), (b2, west), (c, ec2), (c2, west)):
        assert _tag(client, ami) == "enabled-with-cooldown"
    with pytest.raises(NotFoundError, match=a):  # nothing to restore once it is deleted
        _gc(False, NOW, restore=a)


def test_restore_puts_the_protection_back(
        target: AwsTarget, moto_client: Callable[[str], Any], moto_endpoint: str, api: Stubber) -> None:
    """b is the rollback target, c on the channel: a goes through its stages."""
    pairs = _images(moto_client, moto_endpoint, 3)
    (a, a2) = pairs[0]
    for home, copy in pairs:
        api.add_response(OPS[0], {"Return": "true"}, {"ImageId": copy, "WithCooldown": True})
        api.add_response(OPS[0], {"Return": "true"}, {"ImageId": home, "WithCooldown": True})
        target.registry().promote(home, "stable")
    _gc(True, NOW)
    api.add_response(OPS[1], {"Return": "true"}, {"ImageId": a2})
    api.add_response(OPS[1], {"Return": "true"}, {"ImageId": a})
    _gc(True, NOW + timedelta(days=1))
    assert _tag(moto_client("ec2"), a).startswith("disabled-until ")
    api.add_response(OPS[0], {"Return": "true"}, {"ImageId": a2, "WithCooldown": True})
    api.add_response(OPS[0], {"Return": "true"}, {"ImageId": a, "WithCooldown": True})
    assert _gc(False, NOW, restore=a)["changed"]
    assert _tag(moto_client("ec2"), a) == _tag(_west(moto_endpoint), a2) == "enabled-with-cooldown"


def test_an_ami_disabled_while_still_protected_is_unprotected_before_its_delete(
        target: AwsTarget, moto_client: Callable[[str], Any], moto_endpoint: str, api: Stubber) -> None:
    """An AMI gc disabled before it took protection off (or protected again since): the delete
    stage turns it off and waits; AWS's own report (`disabled-until`) counts too."""
    (a, a2), _kept = _images(moto_client, moto_endpoint, 2)
    ec2, west = moto_client("ec2"), _west(moto_endpoint)
    for client, ami in ((ec2, a), (west, a2)):
        client.create_tags(Resources=[ami], Tags=[{"Key": protection.PROTECTION_TAG, "Value": "enabled-with-cooldown"},
                                                  {"Key": "goldenimage:gc-stage", "Value": "disabled"},
                                                  {"Key": "goldenimage:gc-stage-at", "Value": "2026-05-01T00:00:00Z"}])
        client.disable_image(ImageId=ami)
    api.add_response(OPS[1], {"Return": "true"}, {"ImageId": a2})
    api.add_response(OPS[1], {"Return": "true"}, {"ImageId": a})
    r = _gc(True, NOW)
    assert [(x["image_id"], x["outcome"], x.get("deletable_at")) for x in r["applied"]] == [
        (a, "waiting", "2026-06-02T00:00:00Z")]
    img = {"ImageId": a, "DeregistrationProtection": "disabled-until 2026-06-03T00:00:00.000Z", "Tags": []}
    assert protection.blocked(img, NOW + timedelta(days=1, hours=1)) == (
        "deregistration protection cooldown: deletable from 2026-06-03T00:00:00Z")
    assert protection.blocked({**img, "DeregistrationProtection": "enabled"}, NOW) == (
        "deregistration protection is enabled")
    assert protection.blocked({**img, "DeregistrationProtection": "disabled"}, NOW) is None


def _sbom(n: int) -> dict[str, Any]:
    rnd = random.Random(n)
    return {"packages": [{"name": f"pkg{i}-{rnd.getrandbits(64):x}", "version": f"{rnd.getrandbits(32):x}",
                          "source": f"src{rnd.getrandbits(48):x}"} for i in range(400)],
            "apt_sources": ["deb http://deb.debian.org/debian bookworm main"]}


def test_gc_deletes_the_amis_manifest_and_sbom_parameters_with_it(
        target: AwsTarget, moto_client: Callable[[str], Any], moto_endpoint: str) -> None:
    """Issue 20's leftover: the SBOM parts (and the manifest) of a deleted AMI went on living in
    SSM; the kept image's stay."""
    (a, _a2), (b, _b2) = _images(moto_client, moto_endpoint, 2)
    reg: AwsRegistry = target.registry()
    for ami in (a, b):
        reg._put_manifest("web", ami, {"id": ami, **_sbom(len(ami))})
    names = reg.image_parameters("web", a)
    assert names[0] == f"/goldenimage/_manifest/web/{a}" and len(names) >= 4  # the manifest and 3+ parts
    assert len(reg.manifest(a)["packages"]) == 400
    kept = reg.image_parameters("web", b)
    for day in range(3):
        r = _gc(True, NOW + timedelta(days=day))
        assert [x["outcome"] for x in r["applied"]] == ["done"]
    ssm = moto_client("ssm")
    left = {p["Name"] for page in ssm.get_paginator("get_parameters_by_path").paginate(Path="/goldenimage", Recursive=True)
            for p in page["Parameters"]}
    assert not {n for n in left if a in n}
    assert set(kept) <= left
    assert len(reg.manifest(b)["packages"]) == 400

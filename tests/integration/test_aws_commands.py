"""The AWS-side commands as a new user runs them against the sandbox: up, bake-register,
images, promote, revoke, validate, down -- through `cli.run` (JSON out, exit codes)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goldenimage import commands, sandbox
from goldenimage.aws.ami import packer_vars, resolve_base_ami
from goldenimage.aws.clients import Clients
from goldenimage.aws.context import registry_for
from goldenimage.cli import run
from goldenimage.errors import ConfigError, NotFoundError
from goldenimage.models import ImageRecord
from goldenimage.progress import Reporter
from goldenimage.sections import BaseAmiSpec
from goldenimage.settings import load_environment
from tests.integration.conftest import sign_registered


def cli(
    capsys: pytest.CaptureFixture[str], work: Callable[[Reporter], dict[str, Any]]
) -> tuple[int, Any, str]:
    with pytest.raises(SystemExit) as exit_:
        run(work, json_out=True)
    out = capsys.readouterr()
    return int(exit_.value.code or 0), json.loads(out.out), out.err


def test_the_sandbox_walkthrough(
    running: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = running["seed"]["images"]["web"]
    code, doc, _ = cli(capsys, lambda rep: commands.images("sandbox", None, None, rep))
    assert code == 0 and [i["id"] for i in doc["images"]] == [base]

    baked = ImageRecord(
        id="web-20261126-1200-abcd",
        name="web",
        env="sandbox",
        fingerprint="sha256:" + "b" * 64,
        created="2026-11-26T12:00:00Z",
        status="validated",
        artifact="images/web-20261126-1200-abcd/disk.qcow2",
    )
    rec = registry_for("sandbox").put(baked, {"base_ami": "debian-12-sha256:x", "git_commit": "0123abc"})
    ami = sign_registered(rec.id)
    assert rec.extra["local_id"] == baked.id and rec.status == "validated"

    code, doc, _ = cli(capsys, lambda rep: commands.promote("sandbox", ami, "canary", rep))
    assert (code, doc["previous"], doc["image_id"]) == (0, base, ami)
    code, doc, _ = cli(capsys, lambda rep: commands.history("sandbox", "web", "canary", rep))
    assert [h["image_id"] for h in doc["history"]] == [base, ami] and doc["rollback_target"] == base

    code, doc, _ = cli(capsys, lambda rep: commands.validate("sandbox", ami, rep))
    assert code == 0 and doc["passed"] and "skipped" in doc["check"]
    assert len(doc["cleaned_up"]) == 4

    code, doc, _ = cli(capsys, lambda rep: commands.revoke("sandbox", ami, "bad build", rep))
    assert code == 0 and doc["channels_moved"] == {"canary": base}
    code, doc, err = cli(capsys, lambda rep: commands.promote("sandbox", ami, "stable", rep))
    assert code == 2 and err.startswith(f"error: image {ami} (web) is revoked: bad build")

    code, doc, _ = cli(capsys, lambda rep: commands.images("sandbox", "web", None, rep))
    assert {i["id"]: i["status"] for i in doc["images"]} == {base: "validated", ami: "revoked"}
    code, doc, err = cli(capsys, lambda rep: commands.images("sandbox", "db", None, rep))
    assert code == 2 and "unknown image 'db'" in err
    code, doc, err = cli(
        capsys, lambda rep: commands.revoke("sandbox", "ami-0000000000000000a", "x", rep)
    )
    assert code == 2 and "unknown image id 'ami-0000000000000000a'" in err
    assert commands.human_images(commands.images("sandbox", None, None, Reporter(quiet=True)))[0].startswith("ID")


def _image(ec2: Any, name: str, arch: str = "x86_64") -> str:
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    return str(
        ec2.register_image(
            Name=name,
            RootDeviceName="/dev/xvda",
            Architecture=arch,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}],
        )["ImageId"]
    )


def test_resolve_base_ami_picks_the_newest_match(
    aws_clients: Clients, moto_client: Callable[[str], Any], moto_endpoint: str
) -> None:
    ec2 = moto_client("ec2")
    _image(ec2, "debian-12-amd64-20261001")
    _image(ec2, "debian-12-arm64-20261101", arch="arm64")
    time.sleep(1.1)  # CreationDate has second resolution
    newest = _image(ec2, "debian-12-amd64-20261101")
    spec = BaseAmiSpec(owners=["123456789012"], name="debian-12-amd64-*")
    got = resolve_base_ami(aws_clients, spec)
    assert (got["id"], got["name"]) == (newest, "debian-12-amd64-20261101")
    assert resolve_base_ami(aws_clients, BaseAmiSpec(id=newest))["id"] == newest
    from goldenimage.aws.clients import AwsContext

    west = Clients(
        AwsContext(
            region="eu-west-1",
            endpoint_url=moto_endpoint,
            max_attempts=1,
            credentials={"aws_access_key_id": "t", "aws_secret_access_key": "t"},
        )
    )
    with pytest.raises(NotFoundError, match="in region eu-west-1"):
        resolve_base_ami(west, spec)
    with pytest.raises(NotFoundError, match="in region eu-west-1"):
        resolve_base_ami(west, BaseAmiSpec(id=newest))


BASE = {"id": "ami-0123456789abcdef0", "root_device_name": "/dev/sda1"}


def test_packer_vars_need_the_runner_address(sandbox_project: Path) -> None:
    inv = sandbox_project / "inventories" / "prod"
    inv.mkdir()
    settings = inv / "goldenimage.yml"
    settings.write_text(
        "target: aws\nregion: eu-west-1\nimages: {web: {playbook: playbooks/web.yml}}\n"
    )
    env = load_environment("prod")
    with pytest.raises(
        ConfigError, match=r"goldenimage.yml: field extra.aws.build.ssh_cidrs: give"
    ):
        packer_vars(env, BASE, image="web", image_id="web-1", fingerprint="c" * 64)
    settings.write_text(
        settings.read_text() + "extra: {aws: {build: {ssh_cidrs: [203.0.113.7/32], "
        "ami_regions: [eu-central-1], ami_users: ['111122223333'], kms_key_id: alias/x}}}\n"
    )
    v = packer_vars(
        load_environment("prod"), BASE, image="web", image_id="web-1", fingerprint="c" * 64, git_commit="abc"
    )
    assert v["aws_source_ami"] == "ami-0123456789abcdef0" and v["aws_region"] == "eu-west-1"
    assert v["aws_ssh_cidrs"] == ["203.0.113.7/32"] and v["aws_encrypt_boot"] is True
    assert v["aws_root_device_name"] == "/dev/sda1" and v["aws_ami_name"] == "goldenimage-web-1"
    assert v["tags"]["goldenimage:fingerprint"] == "c" * 64
    assert v["tags"]["goldenimage:status"] == "building"
    # an encrypted AMI shared with other accounts needs a key they can be granted
    settings.write_text(settings.read_text().replace(", kms_key_id: alias/x", ""))
    with pytest.raises(ConfigError, match=r"field extra.aws.build.kms_key_id: sharing an encrypted AMI"):
        packer_vars(load_environment("prod"), BASE, image="web", image_id="web-1", fingerprint="c" * 64)
    settings.write_text(settings.read_text().replace("203.0.113.7/32", "203.0.113.7/33"))
    with pytest.raises(
        ConfigError,
        match=r"field extra.aws.build.ssh_cidrs: Value error, '203.0.113.7/33' is not a CIDR",
    ):
        packer_vars(load_environment("prod"), BASE, image="web", image_id="web-1", fingerprint="x")


def test_every_sandbox_command_completes_under_throttling(
    sandbox_project: Path, throttle: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """30% of the calls of up (seeding), status, images, promote, revoke, down throttled."""
    up = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
    try:
        base = up["seed"]["images"]["web"]
        assert up["groups"]["web"]["in_service"] == 6
        rec = ImageRecord(
            id="web-t",
            name="web",
            env="sandbox",
            fingerprint="sha256:" + "d" * 64,
            created="2026-11-26T12:00:00Z",
            status="validated",
            artifact="",
        )
        quiet = Reporter(quiet=True)
        ami = sign_registered(registry_for("sandbox").put(rec, {}).id)
        assert commands.promote("sandbox", ami, "stable", quiet)["previous"] == base
        assert commands.revoke("sandbox", ami, "throttled", quiet)["channels_moved"] == {"stable": base}
        assert len(commands.images("sandbox", None, None, quiet)["images"]) == 2
        assert sandbox.sandbox_status("sandbox")["groups"]["web"]["healthy"] == 6
    finally:
        sandbox.sandbox_down("sandbox")
    assert throttle.injected > 10

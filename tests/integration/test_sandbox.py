"""The sandbox: a real detached moto server process, seeded from inventories/sandbox."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from goldenimage import sandbox
from goldenimage.aws.clients import AwsContext
from goldenimage.aws.context import context_for, registry_for
from goldenimage.cli import run
from goldenimage.errors import ConfigError
from goldenimage.fsutil import pid_alive
from goldenimage.progress import Reporter

NOT_RUNNING = "sandbox for env 'sandbox' is not running: run `invoke sandbox.up`"


@pytest.fixture
def up(sandbox_project: Path) -> Iterator[dict[str, Any]]:
    result = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
    try:
        yield result
    finally:
        sandbox.sandbox_down("sandbox", Reporter(quiet=True))


def client(result: dict[str, Any], service: str) -> Any:
    return boto3.session.Session(
        region_name=result["region"], aws_access_key_id="x", aws_secret_access_key="x"
    ).client(service, endpoint_url=result["endpoint"], config=Config(retries={"max_attempts": 1}))


def test_up_starts_a_detached_seeded_server_and_records_it(up: dict[str, Any]) -> None:
    assert up["running"] and up["started_now"]
    assert up["endpoint"].startswith("http://127.0.0.1:")
    state = json.loads(sandbox.state_path("sandbox").read_text())
    assert state["pid"] == up["pid"] and state["port"] == up["port"] and state["seeded"]
    assert os.getsid(up["pid"]) == up["pid"]  # its own session: survives the shell
    assert up["groups"]["web"] == {
        "desired": 6,
        "instances": 6,
        "in_service": 6,
        "healthy": 6,
        "amis": {up["seed"]["images"]["web"]: 6},
    }
    ec2 = client(up, "ec2")
    subnets = ec2.describe_subnets(SubnetIds=up["seed"]["subnets"])["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == [
        "us-east-1a",
        "us-east-1b",
        "us-east-1c",
    ]
    lt = ec2.describe_launch_template_versions(
        LaunchTemplateId=up["seed"]["groups"]["web"]["launch_template"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert lt["MetadataOptions"]["HttpTokens"] == "required"
    assert lt["ImageId"] == up["seed"]["images"]["web"]
    asg = client(up, "autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    assert asg["AutoScalingGroups"][0]["TargetGroupARNs"] == [
        up["seed"]["groups"]["web"]["target_group"]
    ]
    health = client(up, "elbv2").describe_target_health(
        TargetGroupArn=up["seed"]["groups"]["web"]["target_group"]
    )["TargetHealthDescriptions"]
    assert len(health) == 6
    alarms = client(up, "cloudwatch").describe_alarms()["MetricAlarms"]
    assert [a["AlarmName"] for a in alarms] == ["goldenimage-sandbox-web-unhealthy"]
    ssm = client(up, "ssm")
    for ch in ("stable", "canary"):
        assert (
            ssm.get_parameter(Name=f"/goldenimage/web/{ch}")["Parameter"]["Value"]
            == up["seed"]["images"]["web"]
        )


def test_up_twice_is_status_and_commands_reach_it(up: dict[str, Any]) -> None:
    again = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
    assert again["started_now"] is False and again["pid"] == up["pid"]
    status = sandbox.sandbox_status("sandbox")
    assert status["running"] and status["alive"] and status["groups"]["web"]["in_service"] == 6
    ctx = context_for("sandbox")
    assert ctx.endpoint_url == up["endpoint"] and ctx.region == "us-east-1"
    [rec] = registry_for("sandbox").list("web")
    assert rec.id == up["seed"]["images"]["web"] and rec.channels == ("canary", "stable")
    lines = sandbox.human_status(status)
    assert "group web: 6/6 in service, 6 healthy" in lines[-1]


def test_the_sandbox_publishes_debian_base_amis(up: dict[str, Any]) -> None:
    """What the default `extra.aws.base_ami` resolves to on AWS resolves in the sandbox too,
    EBS-backed (Packer's amazon-ebs refuses anything else), in every region."""
    from goldenimage.aws.ami import resolve_base_ami
    from goldenimage.aws.clients import Clients
    from goldenimage.sections import BaseAmiSpec

    for region in ("us-east-1", "eu-west-1"):
        ctx = AwsContext(region=region, endpoint_url=up["endpoint"], max_attempts=1,
                         credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"})
        base = resolve_base_ami(Clients(ctx), BaseAmiSpec())
        assert base["name"].startswith("debian-12-amd64-") and base["owner"] == "136693071363"
        image = client({**up, "region": region}, "ec2").describe_images(ImageIds=[base["id"]])["Images"][0]
        assert image["RootDeviceType"] == "ebs" and image["Architecture"] == "x86_64"
        arm = resolve_base_ami(Clients(ctx), BaseAmiSpec(name="debian-12-arm64-*", architecture="arm64"))
        assert arm["id"] != base["id"]


def test_down_stops_the_process_and_removes_the_state(sandbox_project: Path) -> None:
    result = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
    down = sandbox.sandbox_down("sandbox", Reporter(quiet=True))
    assert down["stopped"] and down["pid"] == result["pid"]
    assert not sandbox.state_path("sandbox").exists()
    assert not pid_alive(result["pid"])
    assert sandbox.sandbox_status("sandbox")["running"] is False
    assert sandbox.sandbox_down("sandbox")["stopped"] is False  # idempotent
    with pytest.raises(ConfigError) as err:
        context_for("sandbox")
    assert str(err.value) == NOT_RUNNING


def test_a_sandbox_that_is_not_running_is_a_one_line_error_exit_2(
    sandbox_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(lambda rep: {"images": [r.summary() for r in registry_for("sandbox").list()]})
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {NOT_RUNNING}\n"


def test_a_dead_server_is_replaced_by_up(sandbox_project: Path) -> None:
    first = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
    try:
        os.kill(first["pid"], 9)
        sandbox._stop_pid(first["pid"])  # reap it
        status = sandbox.sandbox_status("sandbox")
        assert status["running"] is False and status["exit_code"] == 1
        with pytest.raises(ConfigError, match="is not running"):
            context_for("sandbox")
        second = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
        assert second["started_now"] and second["pid"] != first["pid"]
        assert second["groups"]["web"]["in_service"] == 6
    finally:
        sandbox.sandbox_down("sandbox", Reporter(quiet=True))


def _settings(root: Path) -> Path:
    return root / "inventories" / "sandbox" / "goldenimage.yml"


def test_a_port_in_use_names_the_setting(sandbox_project: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = _settings(sandbox_project)
        path.write_text(path.read_text().replace("port: 0 ", f"port: {port} "))
        with pytest.raises(
            ConfigError, match=f"field extra.sandbox.port: port {port} on 127.0.0.1 is in use"
        ):
            sandbox.sandbox_up("sandbox")
    assert not sandbox.state_path("sandbox").exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "port: 0 ",
            "port: 99999 ",
            "field extra.sandbox.port: Input should be less than or equal to 65535",
        ),
        (
            "zones: [a, b, c]",
            "zones: [a, us-east-1b]",
            "field extra.sandbox.seed.zones: Value error, zone 'us-east-1b'",
        ),
        (
            "image: web ",
            "image: db ",
            "field extra.sandbox.seed.groups.web.image: unknown image 'db'",
        ),
        (
            "max_attempts: 5",
            "max_attempt: 5",
            "field extra.aws.max_attempt: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_sandbox_settings_name_file_and_field(
    sandbox_project: Path, old: str, new: str, message: str
) -> None:
    path = _settings(sandbox_project)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as err:
        sandbox.sandbox_up("sandbox")
    assert str(err.value).startswith("inventories/sandbox/goldenimage.yml: ")
    assert message in str(err.value)


def test_context_for_aws_and_local_targets(sandbox_project: Path) -> None:
    inv = sandbox_project / "inventories"
    (inv / "prod").mkdir()
    (inv / "prod" / "goldenimage.yml").write_text(
        "target: aws\nregion: eu-west-1\nimages: {web: {playbook: playbooks/web.yml}}\n"
        "extra: {aws: {profile: ops, max_attempts: 7}}\n"
    )
    assert context_for("prod") == AwsContext(region="eu-west-1", profile="ops", max_attempts=7)
    (inv / "local").mkdir()
    (inv / "local" / "goldenimage.yml").write_text("images: {web: {playbook: playbooks/web.yml}}\n")
    with pytest.raises(ConfigError, match="field target: environment 'local' has target 'local'"):
        context_for("local")
    with pytest.raises(ConfigError, match="the sandbox needs target 'sandbox'"):
        sandbox.sandbox_up("prod")

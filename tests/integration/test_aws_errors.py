"""Bad input and faults on the AWS side: each becomes one line a user can act on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from goldenimage.aws.clients import AwsContext, Clients
from goldenimage.aws.registry import AwsRegistry
from goldenimage.cli import run
from goldenimage.errors import ConfigError, NotFoundError, OperationFailed
from goldenimage.sandbox.seed import fleet_counts, seed_fleet
from goldenimage.sections import SeedSettings
from goldenimage.store import ImageRecord
from tests.aws_faults import ErrorInjector, ThrottleInjector


@pytest.fixture
def no_aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def rec(local_id: str) -> ImageRecord:
    return ImageRecord(
        id=local_id,
        name="web",
        env="sandbox",
        fingerprint="sha256:" + "a" * 64,
        created="2026-11-26T10:00:00Z",
        status="validated",
        artifact="",
    )


def test_no_credentials(no_aws_config: None, moto_endpoint: str) -> None:
    reg = AwsRegistry(
        Clients(AwsContext(region="us-east-1", endpoint_url=moto_endpoint, max_attempts=1)), "prod"
    )
    with pytest.raises(
        ConfigError, match=r"^no AWS credentials for profile 'default': run `aws configure"
    ):
        reg.list()


def test_unknown_profile(no_aws_config: None, moto_endpoint: str) -> None:
    reg = AwsRegistry(
        Clients(AwsContext(region="us-east-1", profile="nope", endpoint_url=moto_endpoint)), "prod"
    )
    with pytest.raises(ConfigError, match=r"^unknown AWS profile 'nope'"):
        reg.list()


def test_unknown_profile_through_the_cli_is_exit_2_one_line(
    no_aws_config: None, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = AwsRegistry(Clients(AwsContext(region="us-east-1", profile="nope")), "prod")
    with pytest.raises(SystemExit) as exit_:
        run(lambda rep: {"images": [r.summary() for r in reg.list()]}, json_out=True)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown AWS profile 'nope'") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("action", "code", "status", "call"),
    [
        ("ec2:DescribeImages", "UnauthorizedOperation", 403, lambda r, ami: r.list()),
        ("ssm:PutParameter", "AccessDeniedException", 400, lambda r, ami: r.promote(ami, "stable")),
        ("ec2:CreateTags", "UnauthorizedOperation", 403, lambda r, ami: r.revoke(ami, "bad")),
    ],
)
def test_access_denied_names_the_action(
    aws_clients: Clients,
    action: str,
    code: str,
    status: int,
    call: Callable[[AwsRegistry, str], Any],
) -> None:
    reg = AwsRegistry(aws_clients, "sandbox")
    ami = reg.put(rec("a"), {}).id
    with ErrorInjector(action, code=code, status=status) as inj, pytest.raises(ConfigError) as err:
        call(reg, ami)
    assert inj.hits == 1  # not retried
    assert str(err.value).startswith(f"access denied: {action} ({code}) for profile 'default'")
    assert "invoke iam-policy" in str(err.value)


def test_ami_that_does_not_exist(aws_clients: Clients) -> None:
    reg = AwsRegistry(aws_clients, "sandbox")
    with pytest.raises(
        NotFoundError, match="unknown image id 'ami-0000000000000000f' in us-east-1"
    ):
        reg.get("ami-0000000000000000f")
    with pytest.raises(NotFoundError, match="'ami-xyz' is not an AMI id"):
        reg.revoke("ami-xyz", "typo")


def test_throttling_on_30_percent_of_calls_still_completes(
    retrying_clients: Clients, throttle: ThrottleInjector
) -> None:
    """Every protocol the toolkit speaks (ec2, query, json, cbor) is throttled and retried."""
    seeded = seed_fleet(retrying_clients, SeedSettings(), env="sandbox")
    reg = AwsRegistry(retrying_clients, "sandbox")
    new = reg.put(rec("new"), {"git_commit": "abc"})
    reg.promote(new.id, "stable")
    assert reg.resolve_channel("web", "stable").id == new.id
    assert reg.rollback_target("web", "stable") == seeded["images"]["web"]
    assert reg.revoke(new.id, "throttled test")["channels_moved"] == {
        "stable": seeded["images"]["web"]
    }
    assert {r.id for r in reg.list("web")} == {new.id, seeded["images"]["web"]}
    assert fleet_counts(retrying_clients)["web"]["in_service"] == 6
    assert throttle.requests > 50
    assert 0.15 * throttle.requests < throttle.injected < 0.45 * throttle.requests
    ops = set(throttle.by_operation)
    assert ops & {"ec2.DescribeImages", "ec2.CreateTags"}  # ec2 protocol
    assert any(o.startswith("ssm.") for o in ops)  # json
    assert any(o.startswith(("auto-scaling.", "elastic-load-balancing-v2.")) for o in ops)  # query


@pytest.mark.parametrize(
    ("service", "op", "kwargs"),
    [
        ("ec2", "describe_images", {"Owners": ["self"]}),
        ("ssm", "get_parameters_by_path", {"Path": "/goldenimage"}),
        ("autoscaling", "describe_auto_scaling_groups", {}),
        ("elbv2", "describe_target_groups", {}),
        ("cloudwatch", "describe_alarms", {}),
    ],
)
def test_injected_throttling_is_parsed_as_throttling_for_each_protocol(
    moto_endpoint: str, allow_unlisted_calls: None, service: str, op: str, kwargs: dict[str, Any]
) -> None:
    def clients(attempts: int) -> Clients:
        return Clients(
            AwsContext(
                region="us-east-1",
                endpoint_url=moto_endpoint,
                max_attempts=attempts,
                credentials={"aws_access_key_id": "t", "aws_secret_access_key": "t"},
            )
        )

    with ThrottleInjector(rate=1.0, max_consecutive=1) as inj:
        getattr(clients(2).client(service), op)(**kwargs)  # throttled once, retried, done
        assert inj.injected == 1
    from goldenimage.aws.errors import aws_errors

    with ThrottleInjector(rate=1.0, max_consecutive=5):
        c = clients(1)
        with pytest.raises(OperationFailed, match="kept throttling"), aws_errors(c):
            getattr(c.client(service), op)(**kwargs)

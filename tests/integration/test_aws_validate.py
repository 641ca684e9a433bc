"""AMI validation orchestration against moto: launch, check (faked), always clean up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from goldenimage.aws.clients import Clients
from goldenimage.aws.registry import AwsRegistry
from goldenimage.aws.validate import CheckResult, RemoteTarget, leftovers, validate_ami
from goldenimage.errors import ConfigError, ValidationFailed
from goldenimage.progress import Reporter


class FakeCheck:
    def __init__(self, outcome: CheckResult | BaseException) -> None:
        self.outcome = outcome
        self.targets: list[RemoteTarget] = []
        self.key_text = ""

    def __call__(self, target: RemoteTarget, reporter: Reporter) -> CheckResult:
        self.targets.append(target)
        self.key_text = target.key_file.read_text()
        assert oct(target.key_file.stat().st_mode & 0o777) == "0o600"
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


def assert_clean(clients: Clients, moto_client: Callable[[str], Any], check: FakeCheck) -> None:
    assert leftovers(clients) == {"instances": [], "security_groups": [], "key_pairs": []}
    ec2 = moto_client("ec2")
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    [target] = check.targets
    [inst] = ec2.describe_instances(InstanceIds=[target.instance_id])["Reservations"][0][
        "Instances"
    ]
    assert inst["State"]["Name"] == "terminated"
    assert not target.key_file.exists()


def test_a_passing_check_runs_on_the_ami_in_the_subnet_and_cleans_up(
    aws_clients: Clients, seeded_fleet: dict[str, Any], moto_client: Callable[[str], Any]
) -> None:
    ami = seeded_fleet["images"]["web"]
    subnet = seeded_fleet["subnets"][1]
    check = FakeCheck(CheckResult(passed=True))
    result = validate_ami(aws_clients, ami, subnet=subnet, check=check, ssh_cidrs=["192.0.2.7/32"])
    assert result["passed"] and result["failures"] == []
    [target] = check.targets
    assert target.image_id == ami and target.user == "admin"
    assert "PRIVATE KEY" in check.key_text or check.key_text
    inst = moto_client("ec2").describe_instances(InstanceIds=[target.instance_id])
    [i] = inst["Reservations"][0]["Instances"]
    assert (i["ImageId"], i["SubnetId"]) == (ami, subnet)
    assert i["MetadataOptions"]["HttpTokens"] == "required"
    assert_clean(aws_clients, moto_client, check)
    assert len(result["cleaned_up"]) == 4  # instance, its termination, group, key pair


def test_a_failing_check_is_validation_failed_and_cleans_up(
    aws_clients: Clients, seeded_fleet: dict[str, Any], moto_client: Callable[[str], Any]
) -> None:
    check = FakeCheck(CheckResult(passed=False, failures=["FAILED test_nginx_running"]))
    with pytest.raises(ValidationFailed, match=r"1 failure.*test_nginx_running") as err:
        validate_ami(
            aws_clients,
            seeded_fleet["images"]["web"],
            subnet=seeded_fleet["subnets"][0],
            check=check,
        )
    assert err.value.failures == ["FAILED test_nginx_running"]
    assert err.value.result["instance_id"] == check.targets[0].instance_id  # type: ignore[attr-defined]
    assert_clean(aws_clients, moto_client, check)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("ssh library crashed")])
def test_interrupted_or_crashed_checks_still_clean_up(
    aws_clients: Clients,
    seeded_fleet: dict[str, Any],
    moto_client: Callable[[str], Any],
    exc: BaseException,
) -> None:
    check = FakeCheck(exc)
    with pytest.raises(type(exc)):
        validate_ami(
            aws_clients,
            seeded_fleet["images"]["web"],
            subnet=seeded_fleet["subnets"][2],
            check=check,
        )
    assert_clean(aws_clients, moto_client, check)


def test_bad_subnet_and_revoked_image_create_nothing(
    aws_clients: Clients, seeded_fleet: dict[str, Any]
) -> None:
    ami = seeded_fleet["images"]["web"]
    check = FakeCheck(CheckResult(passed=True))
    with pytest.raises(ConfigError, match="subnet subnet-0123456789abcdef0 does not exist"):
        validate_ami(aws_clients, ami, subnet="subnet-0123456789abcdef0", check=check)
    AwsRegistry(aws_clients, "sandbox").revoke(ami, "bad")
    with pytest.raises(ConfigError, match="is revoked"):
        validate_ami(aws_clients, ami, subnet=seeded_fleet["subnets"][0], check=check)
    assert check.targets == []
    assert leftovers(aws_clients) == {"instances": [], "security_groups": [], "key_pairs": []}


def test_leftovers_of_a_killed_run_are_found_by_tag(
    aws_clients: Clients, moto_client: Callable[[str], Any]
) -> None:
    moto_client("ec2").create_key_pair(
        KeyName="goldenimage-validate-dead",
        TagSpecifications=[
            {
                "ResourceType": "key-pair",
                "Tags": [{"Key": "goldenimage:validation", "Value": "dead"}],
            }
        ],
    )
    assert leftovers(aws_clients)["key_pairs"] == ["goldenimage-validate-dead"]


def test_ctrl_c_during_cleanup_is_held_until_cleanup_is_done(
    aws_clients: Clients, seeded_fleet: dict[str, Any], moto_client: Callable[[str], Any]
) -> None:
    import os
    import signal

    from goldenimage.aws.clients import register_hook

    def interrupt(**_: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while we clean up

    check = FakeCheck(CheckResult(passed=True))
    remove = register_hook("before-call.ec2.TerminateInstances", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            validate_ami(
                aws_clients,
                seeded_fleet["images"]["web"],
                subnet=seeded_fleet["subnets"][0],
                check=check,
            )
    finally:
        remove()
    assert_clean(aws_clients, moto_client, check)  # the group and key pair went too

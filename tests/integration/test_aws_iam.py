"""Least privilege: the IAM action list is exact, real, and enforced on the suite's calls."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest

from goldenimage.aws import iam
from goldenimage.aws.clients import IAM_PREFIX, Clients
from goldenimage.cli import run
from tests.aws_faults import CallRecorder


def test_every_listed_action_is_a_real_api_operation() -> None:
    session = botocore.session.get_session()
    service_of = {prefix: service for service, prefix in IAM_PREFIX.items()}
    for action in [*iam.ACTIONS, *iam.SANDBOX_ONLY, *iam.PACKER_ACTIONS]:
        prefix, op = action.split(":")
        model = session.get_service_model(service_of[prefix])
        assert op in model.operation_names, action


def test_the_policy_grants_exactly_the_listed_actions() -> None:
    doc = iam.policy_document("/goldenimage")
    granted = [a for st in doc["Statement"] for a in st["Action"]]
    assert sorted(granted) == sorted(set(iam.ACTIONS) | set(iam.PACKER_ACTIONS))
    assert len(granted) == len(set(granted))
    assert not set(granted) & set(iam.SANDBOX_ONLY)
    ssm = next(st for st in doc["Statement"] if st["Sid"] == "GoldenImageChannels")
    assert ssm["Resource"] == [
        "arn:aws:ssm:*:*:parameter/goldenimage",
        "arn:aws:ssm:*:*:parameter/goldenimage/*",
    ]


def test_iam_policy_command_uses_the_environment_prefix(
    sandbox_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sandbox_project / "inventories" / "sandbox" / "goldenimage.yml"
    path.write_text(
        path.read_text().replace("parameter_prefix: /goldenimage", "parameter_prefix: /acme/images")
    )
    with pytest.raises(SystemExit) as exit_:
        run(lambda rep: iam.iam_policy("sandbox", rep), human=iam.human_policy)
    assert exit_.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["Statement"][1]["Resource"][1] == "arn:aws:ssm:*:*:parameter/acme/images/*"


def test_calls_are_recorded_and_unlisted_ones_are_caught(
    aws_clients: Clients, allow_unlisted_calls: None
) -> None:
    with CallRecorder() as rec:
        aws_clients.ec2.describe_regions()
        aws_clients.elbv2.describe_target_groups()
        aws_clients.ec2.describe_images(Owners=["self"])
    assert rec.calls == [
        "ec2:DescribeRegions",
        "elasticloadbalancing:DescribeTargetGroups",
        "ec2:DescribeImages",
    ]
    assert [c for c in rec.calls if not iam.allowed(c)] == [
        "ec2:DescribeRegions",
        "elasticloadbalancing:DescribeTargetGroups",
    ]


def test_a_test_making_an_unlisted_call_fails(tmp_path: Path) -> None:
    """The suite's guard itself: run a tiny test with this directory's fixtures."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "test_unlisted.py").write_text(
        "def test_calls_describe_regions(aws_clients):\n"
        "    aws_clients.ec2.describe_regions()\n\n"
        "def test_listed_only(aws_clients):\n"
        "    aws_clients.ec2.describe_images(Owners=['self'])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.integration.conftest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tmp_path / "test_unlisted.py"),
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "API calls not in goldenimage/aws/iam.py ACTIONS: ec2:DescribeRegions" in proc.stdout
    assert "2 passed, 1 error" in proc.stdout  # the call passes, its teardown errs

"""`invoke bake` of a `target: aws` environment: bad input is one `error:` line, exit 2,
before anything is built — nothing is left in the account or the local store.

The environment talks to the suite's moto server through AWS_ENDPOINT_URL, as boto3 (and,
through `custom_endpoint_ec2`, Packer) would to any EC2 endpoint override.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_project, run_invoke

pytestmark = pytest.mark.integration

SETTINGS = """\
target: aws
region: {region}
images:
  web: {{playbook: playbooks/web.yml, groups: [web]}}
extra:
  aws:
    max_attempts: 1
{aws}
"""


@pytest.fixture
def prod(tmp_path: Path, moto_endpoint: str, moto_client: Callable[[str], Any]) -> dict[str, Any]:
    project = copy_project(tmp_path / "project")
    (project / "inventories" / "prod").mkdir()
    (project / "inventories" / "prod" / "hosts.yml").write_text("all:\n  children:\n    web: {}\n")
    base = moto_client("ec2").register_image(Name="debian-12-amd64-20261101", RootDeviceName="/dev/xvda")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=moto_endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"), AWS_EC2_METADATA_DISABLED="true")
    return {"project": project, "home": tmp_path / "home", "base": base["ImageId"], "env": env,
            "ec2": moto_client("ec2")}


def bake(prod: dict[str, Any], aws: str, region: str = "us-east-1", **env: str) -> tuple[int, str]:
    settings = prod["project"] / "inventories" / "prod" / "goldenimage.yml"
    settings.write_text(SETTINGS.format(region=region, aws=aws))
    res = run_invoke("bake", "--env", "prod", root=prod["project"], home=prod["home"],
                     env={**prod["env"], **env}, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stdout + res.stderr
    # nothing was made: no AMI in the account, no workspace in the store
    assert prod["ec2"].describe_images(Owners=["self"], Filters=[
        {"Name": "tag-key", "Values": ["goldenimage:name"]}])["Images"] == []
    tmp = prod["home"] / "store" / ".tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []
    return res.returncode, lines[-1] if lines else ""


def aws_block(prod: dict[str, Any], base: str | None = None, **build: str) -> str:
    fields = {"ssh_cidrs": "[203.0.113.7/32]", "subnet": "subnet-0123abcd", **build}
    lines = [f"    base_ami: {{id: {base or prod['base']}}}", "    build:"]
    lines += [f"      {k}: {v}" for k, v in fields.items() if v]
    return "\n".join(lines)


def test_no_credentials(prod: dict[str, Any]) -> None:
    env = {k: v for k, v in prod["env"].items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    prod = {**prod, "env": env}
    code, line = bake(prod, aws_block(prod))
    assert code == 2 and line.startswith("error: no AWS credentials"), line


def test_unknown_profile(prod: dict[str, Any]) -> None:
    code, line = bake(prod, "    profile: nope\n" + aws_block(prod))
    assert code == 2 and line.startswith("error: unknown AWS profile 'nope'"), line


def test_base_ami_that_does_not_exist(prod: dict[str, Any]) -> None:
    code, line = bake(prod, aws_block(prod, base="ami-0000000000000000f"))
    assert code == 2, line
    assert line == ("error: base AMI ami-0000000000000000f is not available in region us-east-1 "
                    "(field extra.aws.base_ami, or `region:` of the environment)")


def test_region_without_the_base_ami(prod: dict[str, Any]) -> None:
    code, line = bake(prod, aws_block(prod), region="eu-west-1")
    assert code == 2 and f"base AMI {prod['base']} is not available in region eu-west-1" in line, line


def test_no_base_ami_matches_the_name_filter(prod: dict[str, Any]) -> None:
    aws = aws_block(prod).replace(f"base_ami: {{id: {prod['base']}}}", "base_ami: {name: 'debian-13-*'}")
    code, line = bake(prod, aws)
    assert code == 2 and "no x86_64 AMI named 'debian-13-*'" in line and "extra.aws.base_ami" in line, line


def test_runner_address_is_required(prod: dict[str, Any]) -> None:
    code, line = bake(prod, aws_block(prod, ssh_cidrs=""))
    assert code == 2 and "goldenimage.yml: field extra.aws.build.ssh_cidrs: give the runner's address" in line


def test_bad_cidr_names_the_field(prod: dict[str, Any]) -> None:
    code, line = bake(prod, aws_block(prod, ssh_cidrs="[203.0.113.7/33]"))
    assert code == 2 and "field extra.aws.build.ssh_cidrs" in line and "203.0.113.7/33" in line, line


def test_sharing_an_encrypted_ami_needs_a_kms_key(prod: dict[str, Any]) -> None:
    code, line = bake(prod, aws_block(prod, ami_users="['111122223333']"))
    assert code == 2 and "field extra.aws.build.kms_key_id: sharing an encrypted AMI" in line, line


def test_malformed_aws_source_names_file_and_line(prod: dict[str, Any]) -> None:
    sources = prod["project"] / "packer" / "sources.pkr.hcl"
    text = sources.read_text()
    sources.write_text(text.replace("instance_type       = var.aws_instance_type",
                                    "instance_type       = var.aws_instance_typo"))
    line_no = text.splitlines().index("  instance_type       = var.aws_instance_type") + 1
    code, line = bake(prod, aws_block(prod))
    assert code == 2, line
    assert line.startswith(f"error: packer validate: packer/sources.pkr.hcl:{line_no}: "), line

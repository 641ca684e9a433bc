"""The AWS side of an AMI bake: resolve the base AMI, and the amazon-ebs source's variables.

The base AMI is resolved with boto3 *before* the build so that the fingerprint holds the
resolved id (the same name filter resolves to a new AMI when the vendor publishes one,
and that must change the fingerprint).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from ..errors import ConfigError, NotFoundError
from ..settings import SETTINGS_FILE, Environment
from .clients import Clients
from .config import BaseAmiSpec, aws_settings, region_of
from .errors import aws_errors, error_code
from .registry import TAG, check_ami_id


def resolve_base_ami(clients: Clients, spec: BaseAmiSpec) -> dict[str, str]:
    """The newest available AMI matching `spec` in the client's region: id, name, created."""
    region = clients.ctx.region
    with aws_errors(clients):
        if spec.id:
            check_ami_id(spec.id)
            try:
                images = clients.ec2.describe_images(
                    ImageIds=[spec.id], Filters=[{"Name": "state", "Values": ["available"]}]
                )["Images"]
            except ClientError as exc:
                if not error_code(exc).startswith("InvalidAMIID."):
                    raise
                images = []
            what = f"base AMI {spec.id}"
        else:
            pages = clients.ec2.get_paginator("describe_images").paginate(
                Owners=spec.owners,
                Filters=[
                    {"Name": "name", "Values": [spec.name]},
                    {"Name": "state", "Values": ["available"]},
                ],
            )
            # architecture is checked here, not as a filter: moto's register_image drops it
            images = [
                i
                for page in pages
                for i in page.get("Images", [])
                if i.get("Architecture", spec.architecture) == spec.architecture
            ]
            what = (
                f"no {spec.architecture} AMI named {spec.name!r} owned by {', '.join(spec.owners)}"
            )
    if not images:
        raise NotFoundError(
            f"{what} is not available in region {region} "
            "(field extra.aws.base_ami, or `region:` of the environment)"
            if spec.id
            else f"{what} in region {region} (field extra.aws.base_ami)"
        )
    newest = max(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))
    return {
        "id": newest["ImageId"],
        "name": newest.get("Name", ""),
        "created": newest.get("CreationDate", ""),
        "owner": newest.get("OwnerId", ""),
    }


def packer_vars(
    env: Environment, base_ami: str, *, image: str, fingerprint: str, git_commit: str = ""
) -> dict[str, Any]:
    """Variables for the amazon-ebs source (`aws_*`), from the environment's settings."""
    aws = aws_settings(env)
    b = aws.build
    rel = f"inventories/{env.name}/{SETTINGS_FILE}"
    if not b.ssh_cidrs:
        raise ConfigError(
            f"{rel}: field extra.aws.build.ssh_cidrs: give the runner's address "
            "(e.g. [203.0.113.7/32]): the build instance's temporary security group admits "
            "only it"
        )
    tags = {
        TAG + "name": image,
        TAG + "fingerprint": fingerprint,
        TAG + "status": "building",
        TAG + "base-ami": base_ami,
        TAG + "git-commit": git_commit,
        TAG + "env": env.name,
    }
    return {
        "aws_region": region_of(env),
        "aws_profile": aws.profile or "",
        "aws_source_ami": base_ami,
        "aws_instance_type": b.instance_type,
        "aws_subnet_id": b.subnet or (aws.subnets[0] if aws.subnets else ""),
        "aws_ssh_username": b.ssh_username,
        "aws_ssh_cidrs": list(b.ssh_cidrs),
        "aws_volume_size": b.volume_size,
        "aws_encrypt_boot": b.encrypt_boot,
        "aws_kms_key_id": b.kms_key_id or "",
        "aws_ami_regions": list(b.ami_regions),
        "aws_ami_users": list(b.ami_users),
        "aws_ami_name": f"goldenimage-{image}-{fingerprint.removeprefix('sha256:')[:16]}",
        "aws_tags": tags,
    }

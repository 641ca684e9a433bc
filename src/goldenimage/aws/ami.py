"""The AWS side of an AMI bake: resolve the base AMI, and the amazon-ebs source's variables.

The base AMI is resolved with boto3 *before* the build so that the fingerprint holds the
resolved id (the same name filter resolves to a new AMI when the vendor publishes one,
and that must change the fingerprint).
"""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from ..errors import ConfigError, NotFoundError
from ..models import PARENT_FINGERPRINT_TAG, PARENT_ID_TAG, PARENT_NAME_TAG, TAG
from ..sections import BaseAmiSpec
from ..settings import SETTINGS_FILE, Environment
from .clients import Clients
from .errors import aws_errors, error_code
from .registry import check_ami_id


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
        "root_device_name": newest.get("RootDeviceName") or "/dev/xvda",
        "region": region,
    }


def ami_name(image_id: str) -> str:
    """The name an amazon-ebs bake gives the AMI of image `image_id` (`invoke allowed-amis`
    admits these names)."""
    return f"goldenimage-{image_id}"[:128]


def ec2_endpoint() -> str:
    """The EC2 endpoint override boto3 also honours (service-specific first), for Packer."""
    return os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("AWS_ENDPOINT_URL") or ""


def packer_vars(
    env: Environment,
    base: dict[str, str],
    *,
    image: str,
    image_id: str,
    fingerprint: str,
    git_commit: str = "",
) -> dict[str, Any]:
    """The amazon-ebs source's variables (`aws_*`, `ssh_username`, `tags`) from the settings.

    `base` is what `resolve_base_ami` returned. The tags mark the AMI `building` until the
    bake has validated it: nothing treats a `building` AMI as usable.
    """
    aws = env.aws
    b = aws.build
    rel = f"inventories/{env.name}/{SETTINGS_FILE}"
    if not b.ssh_cidrs:
        raise ConfigError(
            f"{rel}: field extra.aws.build.ssh_cidrs: give the runner's address "
            "(e.g. [203.0.113.7/32]): the build instance's temporary security group admits "
            "only it"
        )
    if b.ami_users and b.encrypt_boot and not b.kms_key_id:
        raise ConfigError(
            f"{rel}: field extra.aws.build.kms_key_id: sharing an encrypted AMI with ami_users "
            "needs a customer-managed KMS key (the default EBS key cannot be shared)"
        )
    tags = {
        TAG + "name": image,
        TAG + "fingerprint": fingerprint,
        TAG + "status": "building",
        TAG + "base-ami": base["id"],
        TAG + "git-commit": git_commit,
        TAG + "env": env.name,
        TAG + "local-id": image_id,
    }
    parent = base.get("parent")
    if isinstance(parent, dict):  # a child image: the parent AMI it was built on
        tags.update({PARENT_ID_TAG: parent["id"], PARENT_NAME_TAG: parent["name"],
                     PARENT_FINGERPRINT_TAG: parent["fingerprint"]})
    return {
        "aws_region": env.region,
        "aws_profile": aws.profile or "",
        "aws_endpoint_ec2": ec2_endpoint(),
        "aws_source_ami": base["id"],
        "aws_root_device_name": base.get("root_device_name") or "/dev/xvda",
        "aws_instance_type": b.instance_type,
        "aws_subnet_id": b.subnet or (aws.subnets[0] if aws.subnets else ""),
        "aws_ami_name": ami_name(image_id),
        "aws_volume_size": b.volume_size,
        "aws_encrypt_boot": b.encrypt_boot,
        "aws_kms_key_id": b.kms_key_id or "",
        "aws_region_kms_key_ids": dict(b.region_kms_key_ids),
        "aws_ami_regions": list(b.ami_regions),
        "aws_ami_users": list(b.ami_users),
        "aws_ssh_cidrs": list(b.ssh_cidrs),
        "aws_ssh_interface": b.ssh_interface,
        "aws_ssh_host": b.ssh_host,
        "aws_ssh_port": b.ssh_port,
        "aws_ssh_private_key_file": b.ssh_private_key_file,
        "ssh_username": b.ssh_username,
        "tags": tags,
    }

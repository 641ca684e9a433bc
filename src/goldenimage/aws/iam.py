"""Least privilege: the IAM actions the toolkit calls, kept beside the code that calls them.

`ACTIONS` maps each action to the module that calls it. The integration suite records
every call it makes through botocore's `before-call` event and fails on an action missing
here (tests/integration/conftest.py), so the list cannot drift from the code. Whoever adds
an AWS call adds its action here in the same change.

`SANDBOX_ONLY` are calls made only against the loopback sandbox (seeding its fleet): they
are allowed in the suite but never granted by the policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..progress import Reporter
from ..sections import PARAMETER_PREFIX

ACTIONS: dict[str, str] = {
    # registry (aws/registry.py)
    "ec2:DescribeImages": "registry: get/list/find-by-fingerprint, history statuses",
    "ec2:CreateTags": "registry: tag AMIs and snapshots with image facts, status, revocation",
    "ec2:EnableImageDeprecation": "registry: revoke deprecates the AMI; gc --apply: deprecate an unused AMI",
    "ec2:RegisterImage": "registry: register an AMI (sandbox bake of a local image)",
    "ec2:DeregisterImage": "registry: discard a half-registered AMI; gc --apply: deregister an unused AMI",
    "ec2:CreateVolume": "registry: the volume behind a registered AMI's snapshot",
    "ec2:DescribeVolumes": "registry: wait for that volume",
    "ec2:DeleteVolume": "registry: remove that volume",
    "ec2:CreateSnapshot": "registry: the snapshot a registered AMI boots from",
    "ec2:DescribeSnapshots": "registry: wait for that snapshot",
    "ec2:DeleteSnapshot": "registry: discard a half-registered AMI's snapshot; gc --apply: the deregistered AMI's own snapshots",
    "ssm:GetParameter": "registry: read a channel or a manifest",
    "ssm:GetParameters": "registry: read an image's SBOM parts (under the prefix)",
    "ssm:GetParametersByPath": "registry: list an image's channels; gc: AMI ids in any parameter (read-only, all paths)",
    "ssm:GetParameterHistory": "registry: channel promotion history and rollback target; gc: pinned parameter versions",
    "ssm:PutParameter": "registry: promote (a new channel version), store a manifest, its SBOM, attestation and compliance report parts",
    # sandbox status and fleet counts (sandbox/seed.py: fleet_counts)
    "autoscaling:DescribeAutoScalingGroups": "status: groups and their instances",
    "ec2:DescribeInstances": "status and validation: an instance's AMI and state; gc: AMIs instances use",
    # AMI validation (aws/validate.py)
    "ec2:RunInstances": "validate: launch one instance of the new AMI",
    "ec2:TerminateInstances": "validate: clean up that instance; gc --apply: a killed validation's or build's instance",
    "ec2:CreateKeyPair": "validate: a temporary key pair",
    "ec2:DeleteKeyPair": "validate: clean up the key pair; gc --apply: a killed validation's or build's key pair",
    "ec2:CreateSecurityGroup": "validate: a temporary security group (SSH from the runner)",
    "ec2:AuthorizeSecurityGroupIngress": "validate: allow SSH from the runner's address",
    "ec2:DeleteSecurityGroup": "validate: clean up the security group; gc --apply: a killed validation's or build's group",
    "ec2:DescribeSubnets": "validate: the subnet's VPC for the security group",
    "ec2:DescribeSecurityGroups": "validate and gc: find leftovers of killed runs",
    "ec2:DescribeKeyPairs": "validate and gc: find leftovers of killed runs",
    # rotation (rotation/executor.py, state.py, refresh.py)
    "autoscaling:CreateOrUpdateTags": "rotate: lock, heartbeat, progress and previous image in ASG tags",
    "autoscaling:DeleteTags": "rotate: clear the rotation state when done",
    "autoscaling:SuspendProcesses": "rotate: pause AZRebalance/alarm/scheduled actions meanwhile",
    "autoscaling:ResumeProcesses": "rotate: resume exactly the processes it paused",
    "autoscaling:UpdateAutoScalingGroup": "rotate: pin the launch-template version, surge max/desired",
    "autoscaling:SetDesiredCapacity": "rotate: surge and restore the desired capacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup": "rotate: retire old instances (decrementing)",
    "autoscaling:StartInstanceRefresh": "rotate --strategy refresh",
    "autoscaling:DescribeInstanceRefreshes": "rotate --strategy refresh: progress",
    "autoscaling:CancelInstanceRefresh": "rotate --strategy refresh: Ctrl-C",
    "ec2:CreateLaunchTemplateVersion": "rotate: a version with the full data of the current one + new AMI",
    "ec2:DescribeLaunchTemplateVersions": "rotate: read the current version's full data; gc: every version's AMI",
    # retention (aws/references.py): what uses an AMI
    "ec2:DescribeLaunchTemplates": "gc: every launch template, to list all its versions",
    "ec2:DescribeImageReferences": "gc: AWS's own view of what uses an AMI, as a second opinion",
    "ec2:DisableImage": "gc --apply: disable an unused AMI (reversible, unlaunchable)",
    "ec2:EnableImage": "gc --restore: make a disabled AMI launchable again",
    "ec2:DisableImageDeprecation": "gc --restore: take back gc's deprecation",
    "ec2:DeleteTags": "gc --restore: forget the AMI's gc stage",
    "ec2:DeleteLaunchTemplateVersions": "gc --apply: a launch-template version an aborted rotation made that nothing uses",
    "autoscaling:DescribeLaunchConfigurations": "gc: AMIs launch configurations use",
    "ec2:DescribeImageAttribute": "gc: who else may launch an AMI gc would change (launch permissions)",
    "ram:ListResources": "gc: AMIs the account shares through RAM resource shares",
    "ssm:DeleteParameter": "gc --apply / --restore: release the environment's gc lock (a parameter below the prefix)",
    "ssm:DeleteParameters": "gc --apply, a bake that did not finish: an AMI's manifest and parts (below the prefix)",
    # signed provenance (adapters/signing.py, trust.py): a kms: signing or trusted key
    "kms:Sign": "bake, sandbox registration: sign an image's attestation with the environment's KMS key",
    "kms:GetPublicKey": "verify, promote, rotate, a child's bake: the public key of a kms: trusted key",
    "kms:CreateKey": "keys.init: the environment's KMS signing key (ECC_NIST_P256, SIGN_VERIFY) when its alias is new",
    "kms:CreateAlias": "keys.init: the alias the settings name for that key",
    # publishing safety (aws/protection.py, aws/allowed.py)
    "ec2:EnableImageDeregistrationProtection": "promote: deregistration protection with cooldown on every copy "
                                               "of the AMI; gc --restore: put back where gc took it off",
    "ec2:DisableImageDeregistrationProtection": "gc --apply: an unused AMI's protection off at its disable stage "
                                                "(or before its delete)",
    "sts:GetCallerIdentity": "allowed-amis: the account that owns the toolkit's AMIs",
    "elasticloadbalancing:DescribeTargetHealth": "rotate: target-group health of new instances",
    "cloudwatch:DescribeAlarms": "rotate: abort alarms at checkpoints",
}

# What Packer's amazon-ebs builder calls for `invoke bake` of an aws environment (it calls
# AWS itself, not through `Clients`): recorded from real builds against the sandbox
# (tests/e2e/test_aws_bake.py fails on a call missing here).
PACKER_ACTIONS: dict[str, str] = {
    "ec2:DescribeRegions": "packer: check ami_regions",
    "ec2:DescribeImages": "packer: the source AMI; the new AMI's state",
    "ec2:DescribeSubnets": "packer: the build subnet's VPC",
    "ec2:DescribeSecurityGroups": "packer: wait for the temporary security group",
    "ec2:CreateSecurityGroup": "packer: the build instance's temporary security group",
    "ec2:AuthorizeSecurityGroupIngress": "packer: SSH from extra.aws.build.ssh_cidrs only",
    "ec2:DeleteSecurityGroup": "packer: clean up the security group",
    "ec2:CreateKeyPair": "packer: a temporary key pair (unless ssh_private_key_file is set)",
    "ec2:DeleteKeyPair": "packer: clean up the key pair",
    "ec2:RunInstances": "packer: the build instance",
    "ec2:DescribeInstances": "packer: wait for the build instance",
    "ec2:DescribeVolumes": "packer: the build instance's volumes",
    "ec2:StopInstances": "packer: stop the build instance before imaging it",
    "ec2:TerminateInstances": "packer: clean up the build instance",
    "ec2:CreateImage": "packer: the AMI",
    "ec2:CopyImage": "packer: the encrypted AMI, and copies to ami_regions",
    "ec2:DeregisterImage": "packer: drop the unencrypted intermediate AMI",
    "ec2:DeleteSnapshot": "packer: drop the intermediate AMI's snapshot",
    "ec2:ModifyImageAttribute": "packer: share with ami_users",
    "ec2:CreateTags": "packer: tags on the instance, AMIs and snapshots",
}

SANDBOX_ONLY: dict[str, str] = {
    "ec2:CreateVpc": "sandbox seed",
    "ec2:CreateSubnet": "sandbox seed",
    "ec2:CreateLaunchTemplate": "sandbox seed",
    "elasticloadbalancing:CreateLoadBalancer": "sandbox seed",
    "elasticloadbalancing:CreateTargetGroup": "sandbox seed",
    "elasticloadbalancing:CreateListener": "sandbox seed",
    "autoscaling:CreateAutoScalingGroup": "sandbox seed",
    "cloudwatch:PutMetricAlarm": "sandbox seed",
    "cloudwatch:SetAlarmState": "tests: drive an alarm into ALARM (moto alarms never change by themselves)",
    "autoscaling:AttachInstances": "sandbox seed: spread the starting fleet over the zones",
    "autoscaling:SetInstanceProtection": "tests: protect an instance from scale-in",
    "autoscaling:EnterStandby": "tests: put an instance in standby",
}


# Shared state (`state:`, goldenimage/state): objects below the environment's prefix of its
# bucket, called with the state's own S3 client (not `Clients`). Multipart uploads are
# PutObject; HeadBucket and HeadObject are ListBucket and GetObject.
STATE_ACTIONS: dict[str, str] = {
    "s3:GetObject": "state: read the catalog, leases and blobs (a download, HeadObject)",
    "s3:PutObject": "state: conditional writes of the catalog and leases; blob uploads (multipart)",
    "s3:DeleteObject": "state: release a lease; delete an upload whose bytes were not its digest's",
    "s3:AbortMultipartUpload": "state: an upload that failed halfway",
    "s3:ListBucket": "state: check the bucket (HeadBucket); list keys below the prefix",
}


def state_statements(bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The policy statements for an environment's shared state: its prefix of `bucket` only."""
    objects = sorted(a for a in STATE_ACTIONS if a != "s3:ListBucket")
    return [
        {"Sid": "GoldenImageStateObjects", "Effect": "Allow", "Action": objects,
         "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*"},
        {"Sid": "GoldenImageStateList", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}},
    ]


# SSM reads gc makes on any path (an AMI id, or a pinned older version of one, may sit in any
# parameter): granted on every parameter, read-only; every other SSM action stays below the
# toolkit's prefix.
SSM_ANY_PARAMETER = frozenset({"ssm:GetParametersByPath", "ssm:GetParameterHistory"})


def allowed(action: str, *, sandbox: bool = True) -> bool:
    return action in ACTIONS or (sandbox and action in SANDBOX_ONLY)


def policy_document(parameter_prefix: str = PARAMETER_PREFIX) -> dict[str, Any]:
    """The IAM policy granting exactly `ACTIONS` and Packer's `PACKER_ACTIONS`; SSM access
    only below the prefix."""
    prefix = parameter_prefix.strip("/")
    ssm = sorted(a for a in ACTIONS if a.startswith("ssm:") and a not in SSM_ANY_PARAMETER)
    other = sorted({a for a in (*ACTIONS, *PACKER_ACTIONS) if not a.startswith("ssm:")})
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "GoldenImageEc2AutoScaling",
                "Effect": "Allow",
                "Action": other,
                "Resource": "*",
            },
            {
                "Sid": "GoldenImageChannels",
                "Effect": "Allow",
                "Action": ssm,
                "Resource": [
                    f"arn:aws:ssm:*:*:parameter/{prefix}",
                    f"arn:aws:ssm:*:*:parameter/{prefix}/*",
                ],
            },
            {
                "Sid": "GoldenImageGcReadParameters",
                "Effect": "Allow",
                "Action": sorted(SSM_ANY_PARAMETER),
                "Resource": "arn:aws:ssm:*:*:parameter/*",
            },
        ],
    }


def iam_policy(
    env: str | None = None, reporter: Reporter | None = None, *, root: Path | None = None
) -> dict[str, Any]:
    """`invoke iam-policy`: the policy document (with the env's SSM prefix when given)."""
    doc = policy_document(PARAMETER_PREFIX)
    if env is not None:
        from ..settings import environment

        loaded = environment(env, root)
        doc = policy_document(loaded.aws.parameter_prefix)
        state = loaded.settings.state
        if state is not None:  # the environment's prefix of its state bucket
            doc["Statement"] += state_statements(state.bucket, state.prefix or loaded.name)
    return {
        "policy": doc,
        "actions": dict(sorted(ACTIONS.items())),
        "packer_actions": dict(sorted(PACKER_ACTIONS.items())),
        "state_actions": dict(sorted(STATE_ACTIONS.items())),
    }


def human_policy(result: dict[str, Any]) -> list[str]:
    import json

    return json.dumps(result["policy"], indent=2).splitlines()

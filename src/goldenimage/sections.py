"""The typed sections of an environment's settings under `extra:` (`aws`, `sandbox`,
`retention`, `nightly`).

`settings.Environment` parses each section once, when first asked (`env.aws`,
`env.sandbox`, `env.retention`, `env.rotation`), with the same file/field errors as the rest
of the settings. A new section (nightly) is a model here and one property there.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .channels import CHANNEL_RE

DEFAULT_REGION = "us-east-1"
PARAMETER_PREFIX = "/goldenimage"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _each(values: list[str], ok: Callable[[str], object], problem: str) -> list[str]:
    """`values` if `ok` holds for each; else ValueError naming the first that fails."""
    for v in values:
        if not ok(v):
            raise ValueError(problem.format(v=repr(v)))
    return values


class SeedGroup(_Model):
    """An auto-scaling group the sandbox creates, behind its own ALB target group."""

    image: str = Field(description="image name whose base AMI the group runs")
    size: int = Field(default=6, ge=0, le=100)
    max_size: int | None = Field(default=None, ge=0, le=200)
    instance_type: str = "t3.micro"
    health_check_grace: int = Field(default=60, ge=0)
    alarm: bool = Field(default=True, description="a CloudWatch alarm on the target group")


class SeedSettings(_Model):
    vpc_cidr: str = "10.42.0.0/16"
    zones: list[str] = Field(default_factory=lambda: ["a", "b", "c"], min_length=1, max_length=6)
    channels: list[str] = Field(default_factory=lambda: ["stable"], min_length=1)
    groups: dict[str, SeedGroup] = Field(default_factory=lambda: {"web": SeedGroup(image="web")})

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str]) -> list[str]:
        return _each(v, CHANNEL_RE.match, "channel {v}: a lowercase letter, then up to 31 of a-z, 0-9 and '-'")

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[str]) -> list[str]:
        _each(v, re.compile(r"[a-z]").fullmatch, "zone {v}: a zone is a letter suffix of the region (a, b, c)")
        if len(set(v)) != len(v):
            raise ValueError("zones must be distinct")
        return v


class SandboxSettings(_Model):
    port: int = Field(default=0, ge=0, le=65535, description="0: a free port")
    host: str = Field(default="127.0.0.1", pattern=r"^(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost)$")
    start_timeout: float = Field(default=30.0, gt=0)
    seed: SeedSettings = SeedSettings()


class ValidationSpec(_Model):
    """Where `validate` launches an AMI to check it."""

    subnet: str | None = Field(default=None, pattern=r"^subnet-[0-9a-f]+$")
    instance_type: str = "t3.micro"
    ssh_user: str = "admin"
    ssh_cidrs: list[str] = Field(default_factory=list, description="who may reach port 22")
    boot_timeout: int = Field(default=600, ge=10)


class BaseAmiSpec(_Model):
    """The AMI the amazon-ebs build starts from, resolved with boto3 before the build."""

    id: str | None = Field(default=None, pattern=r"^ami-[0-9a-f]{8,17}$")
    owners: list[str] = Field(default_factory=lambda: ["136693071363"])  # Debian's account
    name: str = "debian-12-amd64-*"
    architecture: Literal["x86_64", "arm64"] = "x86_64"


class BuildSpec(_Model):
    """How the amazon-ebs source builds (instance, network, encryption, distribution)."""

    instance_type: str = "t3.small"
    subnet: str | None = Field(default=None, pattern=r"^subnet-[0-9a-f]+$")
    ssh_username: str = "admin"
    ssh_cidrs: list[str] = Field(
        default_factory=list, description="the runner's address: the build SG admits only it"
    )
    ssh_interface: Literal["", "public_ip", "private_ip", "public_dns", "private_dns"] = ""
    # reach the build instance through a tunnel instead of its own address
    ssh_host: str = ""
    ssh_port: int = Field(default=0, ge=0, le=65535, description="0: 22")
    ssh_private_key_file: str = Field(
        default="", description="a key already on the instance; empty: a temporary key pair"
    )
    volume_size: int = Field(default=8, ge=1, le=16384)
    encrypt_boot: bool = True
    kms_key_id: str | None = None
    region_kms_key_ids: dict[str, str] = Field(
        default_factory=dict, description="KMS key per copy region (custom key + ami_regions)"
    )
    ami_regions: list[str] = Field(default_factory=list)
    ami_users: list[str] = Field(default_factory=list)

    @field_validator("ssh_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                ipaddress.ip_network(c, strict=True)
            except ValueError as exc:
                raise ValueError(f"{c!r} is not a CIDR block: {exc}") from None
        return v

    @field_validator("ami_users")
    @classmethod
    def _users(cls, v: list[str]) -> list[str]:
        return _each(v, re.compile(r"[0-9]{12}").fullmatch, "{v} is not a 12-digit AWS account id")


KMS_PREFIX = "kms:"


class TrustSettings(_Model):
    """`trust:`: how the environment signs its images' attestations and which keys it trusts.

    A key is a file path (a local Ed25519 key; relative: to the project root; `~` expanded)
    or `kms:<key id, ARN or alias>` (an AWS KMS ECC_NIST_P256 key, aws and sandbox targets).
    An environment without `trust:` signs with its own key under the toolkit's home
    (`keys/<env>.ed25519`, made on first use), trusts that key, and refuses images without
    an attestation; `unsigned: allow` admits those (a store made before attestations)."""

    signing_key: str | None = Field(default=None, description="default: <home>/keys/<env>.ed25519")
    trusted_keys: list[str] = Field(default_factory=list,
                                    description="public keys (PEM files) or kms: keys; default: the signing key's")
    unsigned: Literal["deny", "allow"] = Field(default="deny", description="allow: admit images without "
                                               "an attestation (a bad one is always refused)")

    @field_validator("signing_key")
    @classmethod
    def _signing(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or v == KMS_PREFIX):
            raise ValueError("a key file path or kms:<key id or alias>")
        return v

    @field_validator("trusted_keys")
    @classmethod
    def _trusted(cls, v: list[str]) -> list[str]:
        return _each(v, lambda k: bool(k.strip()) and k != KMS_PREFIX, "trusted key {v}: a PEM file path or "
                     "kms:<key id or alias>")


class StateSettings(_Model):
    """Where the environment's registry lives when a team shares it (`state:`): an
    S3-compatible bucket. Credentials come the usual boto3 way (environment, profile, role);
    without this section the registry is the store directory on this machine."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", description="an existing bucket")
    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*[^/]$",
                               description="key prefix of this environment (default: its name); one per environment")
    region: str | None = Field(default=None, description="the bucket's region (default: the environment's)")
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://",
                                     description="an S3-compatible endpoint (MinIO, Ceph RGW, the sandbox)")
    profile: str | None = Field(default=None, description="a named AWS profile")
    lease_seconds: int = Field(default=120, ge=10, le=3600,
                               description="how long a lease lives without a heartbeat")


class AwsSettings(_Model):
    profile: str | None = None
    max_attempts: int = Field(default=5, ge=1, le=20, description="botocore standard retries")
    parameter_prefix: str = Field(default=PARAMETER_PREFIX, pattern=r"^/[A-Za-z0-9_.\-/]*[^/]$")
    channel_data_type: str = Field(default="aws:ec2:image", pattern=r"^(aws:ec2:image|text)$")
    subnets: list[str] = Field(
        default_factory=list, description="default subnets for validation and builds"
    )
    base_ami: BaseAmiSpec = BaseAmiSpec()
    build: BuildSpec = BuildSpec()
    validation: ValidationSpec = ValidationSpec()
    deprecate_revoked: bool = True
    groups: dict[str, Any] = Field(
        default_factory=dict, description="auto-scaling groups to rotate: the rotator validates"
    )

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, v: list[str]) -> list[str]:
        return _each(v, re.compile(r"subnet-[0-9a-f]+").fullmatch, "{v} is not a subnet id (subnet-...)")




class Graces(_Model):
    """Days an image waits in each stage before the next: created or revoked -> deprecated
    -> disabled -> deleted (the shorter graces of quarantined, revoked, stale building)."""

    deprecate_after: int = Field(default=0, ge=0, description="days after the stage's anchor")
    disable_after: int = Field(default=1, ge=0, description="days after it was deprecated")
    delete_after: int = Field(default=1, ge=0, description="days after it was disabled")


class ImageRetention(_Model):
    """Retention of one image name (`extra.retention.images.<name>`).

    A validated image is kept while it is among the newest `keep` validated images or younger
    than `min_age_days`. Once out of both, it is deprecated `deprecate_after` days after the
    newer image that pushed it out of the newest `keep` was created, disabled `disable_after`
    days after that, deleted `delete_after` days after being disabled: one stage per run.
    """

    keep: int = Field(default=3, ge=0, description="newest validated images always kept")
    min_age_days: int = Field(default=7, ge=0, description="younger images are always kept")
    deprecate_after: int = Field(default=0, ge=0)
    disable_after: int = Field(default=7, ge=0)
    delete_after: int = Field(default=14, ge=0)
    max_age_days: int | None = Field(
        default=None, ge=1, description="the oldest image (days since created) `invoke allowed-amis` admits "
        "(EC2 Allowed AMIs' MaximumDaysSinceCreated), even on a channel; default: no age limit")
    quarantined: Graces = Graces()
    revoked: Graces = Graces(deprecate_after=0, disable_after=1, delete_after=3)
    building: Graces = Graces(deprecate_after=1, disable_after=0, delete_after=0)

    def graces(self, status: str) -> Graces:
        """The graces of an image of this status (validated: the image's own three)."""
        if status in ("quarantined", "revoked", "building"):
            g: Graces = getattr(self, status)
            return g
        return self._own

    @functools.cached_property
    def _own(self) -> Graces:
        return Graces(deprecate_after=self.deprecate_after, disable_after=self.disable_after,
                      delete_after=self.delete_after)


LOCAL_SEARCH = ("store", "base-cache", "/var/lib/libvirt/images", "/etc/libvirt/qemu", "running")
LOCAL_SEARCH_WORDS = ("store", "base-cache", "running")


class RetentionSettings(_Model):
    """`extra.retention`: what `invoke gc` keeps, per image name, and the kept bake logs."""

    images: dict[str, ImageRetention] = Field(
        default_factory=dict, description="image names without an entry are never collected"
    )
    failed_logs_days: int = Field(default=14, ge=0, description="logs of failed bakes kept this long")
    leftover_hours: int = Field(
        default=6, ge=0, description="AWS leftovers (a killed validation's or build's instance, key pair and "
        "security group; an aborted rotation's launch-template version) younger than this are kept: "
        "their run may still be going")
    shared_may_go: list[str] = Field(
        default_factory=list, description="image names whose AMIs may be collected while shared with other "
        "accounts, organisations, OUs, the public or through RAM (disabling one takes their access away; "
        "`invoke gc --restore` does not give it back): without it a shared AMI is always kept")
    local_search: list[str] = Field(
        default_factory=lambda: list(LOCAL_SEARCH), description="where local gc looks for the disks and VM "
        "definitions that use an image: `store`, `base-cache`, `running` (the /proc command lines of QEMU "
        "processes, libvirt's domains included) and absolute directories (qcow2 files under them, libvirt "
        "domain XML in them); a disk whose backing chain reaches an image keeps it")


class WebhookSpec(_Model):
    """Where `invoke nightly` POSTs its JSON report: retried with exponential back-off,
    bounded in attempts and in total time; its failure never changes the job's result."""

    url: str = Field(pattern=r"^https?://[^\s]+$", description="http(s) URL")
    attempts: int = Field(default=4, ge=1, le=10)
    timeout: float = Field(default=10.0, gt=0, le=120, description="seconds per attempt")
    backoff: float = Field(default=1.0, ge=0, le=60, description="seconds before the 2nd attempt, doubled after")
    deadline: float = Field(default=60.0, gt=0, le=600, description="seconds for all attempts together")


class NightlySettings(_Model):
    """`extra.nightly`: what `invoke nightly` does after its drift check and bake."""

    channel: str = Field(default="nightly", description="channel each newly validated image is promoted to")
    rotate: list[str] = Field(
        default_factory=list, description="groups of extra.rotation.groups rotated to the channel"
    )
    gc: Literal["apply", "plan", "off"] = Field(default="plan", description="retention after the run")
    report_dir: str | None = Field(default=None, description="default: <store>/reports/nightly/<env>")
    webhook: WebhookSpec | None = None
    failure_streak: int = Field(
        default=3, ge=1, description="after this many failed runs in a row the run exits 3 and says so first"
    )

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        return _each([v], CHANNEL_RE.match, "channel {v}: a lowercase letter, then up to 31 of a-z, 0-9 and '-'")[0]

    @field_validator("rotate")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("groups must be distinct")
        return v

"""Rotation policy per auto-scaling group, validated with file/field errors.

The policies live in the environment's settings file::

    extra:
      rotation:
        groups:
          web:
            asg: web-prod            # defaults to the group's key
            image: web
            channel: stable
            strategy: rolling        # rolling | refresh
            batch_size: 25%          # a count (3) or a percentage of desired ("25%")
            min_healthy_percent: 100
            max_surge_percent: 25
            warmup_seconds: 60
            checkpoints: [50]        # pause after crossing these % of replaced instances
            checkpoint_pause_seconds: 300
            health: {asg: true, elb: true, http: {url: "http://lb/healthz"}}
            abort_alarms: [web-5xx]
            protected: ignore        # ignore | replace | wait
            standby: ignore          # ignore | terminate | wait
            external_scaling: keep   # keep | restore (desired set by others meanwhile)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

_PERCENT = re.compile(r"^([0-9]{1,3})%$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpCheck(_Model):
    """GET a URL through the load balancer; optionally the body must name the image fingerprint."""

    url: str = Field(pattern=r"^https?://")
    expect_status: int = Field(default=200, ge=100, le=599)
    expect_fingerprint: bool = True
    timeout_seconds: float = Field(default=5.0, gt=0)


class HealthSources(_Model):
    asg: bool = True
    elb: bool = True
    http: HttpCheck | None = None


class GroupPolicy(_Model):
    asg: str = Field(default="", description="auto-scaling group name; defaults to the key")
    image: str | None = Field(default=None, description="image name the group runs")
    channel: str | None = Field(default=None, description="channel to take the image from")
    strategy: Literal["rolling", "refresh"] = "rolling"
    batch_size: int | str = Field(default="25%", description="count or percentage of desired")
    min_healthy_percent: int = Field(default=100, ge=0, le=100)
    max_surge_percent: int = Field(default=25, ge=0, le=100)
    warmup_seconds: float = Field(default=0.0, ge=0)
    checkpoints: list[int] = Field(default_factory=list)
    checkpoint_pause_seconds: float = Field(default=0.0, ge=0)
    bake_seconds: float = Field(default=0.0, ge=0, description="refresh: BakeTime")
    health: HealthSources = HealthSources()
    abort_alarms: list[str] = Field(default_factory=list)
    protected: Literal["ignore", "replace", "wait"] = "ignore"
    standby: Literal["ignore", "terminate", "wait"] = "ignore"
    external_scaling: Literal["keep", "restore"] = Field(
        default="keep",
        description="desired capacity set by someone else during a rotation: keep it at the "
        "end, or restore the desired capacity the group had when the rotation started",
    )
    health_timeout_seconds: float = Field(default=900.0, gt=0)
    poll_seconds: float = Field(default=5.0, gt=0)
    heartbeat_ttl_seconds: float = Field(default=300.0, gt=0)
    lock_settle_seconds: float = Field(
        default=1.0, ge=0, description="wait before reading the lock back (tags have no CAS)"
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int | str) -> int | str:
        if isinstance(v, bool):
            raise ValueError("must be a count (3) or a percentage ('25%')")
        if isinstance(v, int):
            if v < 1:
                raise ValueError("a count must be at least 1")
            return v
        m = _PERCENT.match(v.strip())
        if not m or not 1 <= int(m.group(1)) <= 100:
            raise ValueError(f"{v!r} is neither a count nor a percentage between 1% and 100%")
        return f"{int(m.group(1))}%"

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, v: list[int]) -> list[int]:
        if any(not 1 <= p <= 100 for p in v):
            raise ValueError("percentages must be between 1 and 100")
        if v != sorted(set(v)):
            raise ValueError("percentages must be strictly increasing")
        return v

    @model_validator(mode="after")
    def _can_progress(self) -> GroupPolicy:
        if self.max_surge_percent == 0 and self.min_healthy_percent == 100:
            raise ValueError(
                "max_surge_percent 0 with min_healthy_percent 100 leaves no room to replace "
                "anything: allow a surge or lower min_healthy_percent"
            )
        return self

    def batch_count(self, desired: int) -> int:
        """The batch size in instances for a group of `desired` instances (at least 1)."""
        if isinstance(self.batch_size, int):
            return self.batch_size
        pct = int(self.batch_size.rstrip("%"))
        return max(1, math.ceil(desired * pct / 100))

    def min_healthy(self, desired: int) -> int:
        """Healthy in-service instances to keep, rounded up (never fewer than the %)."""
        return math.ceil(desired * self.min_healthy_percent / 100)

    def surge(self, desired: int) -> int:
        """Extra instances allowed above desired, rounded up (like Kubernetes' maxSurge)."""
        return math.ceil(desired * self.max_surge_percent / 100)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def load_policies(raw: Mapping[str, Any], source: str) -> dict[str, GroupPolicy]:
    """Validate `extra.rotation.groups` (pass the settings mapping or its `extra`).

    Raises ConfigError("<source>: field extra.rotation.groups.<g>.<field>: <message>").
    """
    extra: Any = raw.get("extra", raw) if isinstance(raw.get("extra"), Mapping) else raw
    rotation = extra.get("rotation") if isinstance(extra, Mapping) else None
    if rotation is None:
        return {}
    if not isinstance(rotation, Mapping) or not isinstance(rotation.get("groups", {}), Mapping):
        raise ConfigError(f"{source}: field extra.rotation.groups: expected a mapping of groups")
    policies: dict[str, GroupPolicy] = {}
    for name, body in (rotation.get("groups") or {}).items():
        prefix = f"extra.rotation.groups.{name}"
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: field {prefix}: expected a mapping")
        try:
            policy = GroupPolicy.model_validate(dict(body))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = _loc(tuple(p for p in err["loc"] if not str(p).startswith("function-")))
            where = f"{prefix}.{loc}" if loc else prefix
            msg = err["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{source}: field {where}: {msg}") from None
        if not policy.asg:
            policy = policy.model_copy(update={"asg": str(name)})
        policies[str(name)] = policy
    return policies


def get_policy(policies: Mapping[str, GroupPolicy], group: str, source: str) -> GroupPolicy:
    try:
        return policies[group]
    except KeyError:
        known = ", ".join(sorted(policies)) or "none"
        raise ConfigError(
            f"{source}: field extra.rotation.groups: no group {group!r} (known: {known})"
        ) from None

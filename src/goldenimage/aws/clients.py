"""The one place that creates boto3 clients.

Clients are created from an `AwsContext` (profile, region, endpoint) when a command runs,
never at import time, and injected into the code that uses them. Retries use botocore's
`standard` mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

SERVICES = ("ec2", "autoscaling", "ssm", "cloudwatch", "elbv2", "sts", "iam")


@dataclass(frozen=True)
class AwsContext:
    region: str
    profile: str | None = None
    endpoint_url: str | None = None  # the sandbox's loopback moto server
    max_attempts: int = 5
    credentials: dict[str, str] | None = None  # explicit keys (the sandbox uses dummies)


@dataclass
class Clients:
    """Lazily created boto3 clients sharing one session."""

    ctx: AwsContext
    _session: Any = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def _sess(self) -> Any:
        if self._session is None:
            kw: dict[str, Any] = {"region_name": self.ctx.region}
            if self.ctx.profile:
                kw["profile_name"] = self.ctx.profile
            if self.ctx.credentials:
                kw.update(self.ctx.credentials)
            self._session = boto3.session.Session(**kw)
        return self._session

    def client(self, service: str) -> Any:
        if service not in self._cache:
            config = Config(retries={"mode": "standard", "max_attempts": self.ctx.max_attempts})
            self._cache[service] = self._sess().client(
                service, endpoint_url=self.ctx.endpoint_url, config=config
            )
        return self._cache[service]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def autoscaling(self) -> Any:
        return self.client("autoscaling")

    @property
    def ssm(self) -> Any:
        return self.client("ssm")

    @property
    def cloudwatch(self) -> Any:
        return self.client("cloudwatch")

    @property
    def elbv2(self) -> Any:
        return self.client("elbv2")

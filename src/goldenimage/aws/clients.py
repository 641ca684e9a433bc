"""The one place that creates boto3 clients.

Clients are created from an `AwsContext` (profile, region, endpoint) when a command runs,
never at import time, and injected into the code that uses them. Retries use botocore's
`standard` mode.

`register_hook(event, handler)` attaches a botocore event handler to every `Clients`
session, existing or future, until removed: the least-privilege call recorder and the
fault injectors of the test suite use it, and so can a `--debug` tracer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]

SERVICES = ("ec2", "autoscaling", "ssm", "cloudwatch", "elbv2", "sts", "iam")

# client service name -> IAM action prefix (they differ for elbv2)
IAM_PREFIX = {
    "ec2": "ec2",
    "autoscaling": "autoscaling",
    "ssm": "ssm",
    "cloudwatch": "cloudwatch",
    "elbv2": "elasticloadbalancing",
    "sts": "sts",
    "iam": "iam",
    "ram": "ram",
    "kms": "kms",
}

Hook = Callable[..., Any]
_hooks: list[tuple[str, Hook]] = []
_hooks_lock = threading.Lock()


# botocore events a hook may attach to (or to a more specific name: "before-send.ec2")
DISPATCHED = ("before-call", "before-send", "after-call", "after-call-error", "needs-retry")


def register_hook(event: str, handler: Hook) -> Callable[[], None]:
    """Attach `handler` to `event` on every `Clients` session; returns a remover."""
    if event.split(".", 1)[0] not in DISPATCHED:
        raise ValueError(f"hooks attach to {', '.join(DISPATCHED)} (or a narrower name)")
    entry = (event, handler)
    with _hooks_lock:
        _hooks.append(entry)

    def remove() -> None:
        with _hooks_lock:
            if entry in _hooks:
                _hooks.remove(entry)

    return remove


def _dispatch(**kwargs: Any) -> Any:
    """Run the registered hooks matching this event; the first answer wins."""
    name = str(kwargs.get("event_name", ""))
    with _hooks_lock:
        hooks = list(_hooks)
    for event, handler in hooks:
        if name == event or name.startswith(event + "."):
            answer = handler(**kwargs)
            if answer is not None:
                return answer
    return None


def iam_action(model: Any) -> str:
    """The IAM action of a botocore OperationModel: `ec2:DescribeImages`."""
    service = model.service_model.service_name
    return f"{IAM_PREFIX.get(service, service)}:{model.name}"


@dataclass(frozen=True)
class AwsContext:
    region: str
    profile: str | None = None
    endpoint_url: str | None = None  # the sandbox's loopback moto server
    max_attempts: int = 5
    credentials: dict[str, str] | None = None  # explicit keys (the sandbox uses dummies)

    @property
    def is_sandbox(self) -> bool:
        return self.endpoint_url is not None


def _service(name: str) -> Any:
    """A property of `Clients` that is the client of one service."""
    return property(lambda self: self.client(name))


@dataclass
class Clients:
    """Lazily created boto3 clients sharing one session."""

    ctx: AwsContext
    _session: Any = None
    _cache: dict[str, Any] = field(default_factory=dict)
    last_action: str | None = None  # the IAM action of the latest call (for error messages)

    def _record(self, model: Any = None, **_: Any) -> None:
        if model is not None:
            self.last_action = iam_action(model)

    def _sess(self) -> Any:
        if self._session is None:
            kw: dict[str, Any] = {"region_name": self.ctx.region}
            if self.ctx.profile:
                kw["profile_name"] = self.ctx.profile
            if self.ctx.credentials:
                kw.update(self.ctx.credentials)
            session = boto3.session.Session(**kw)
            session.events.register("before-call", self._record)
            for event in DISPATCHED:
                session.events.register(event, _dispatch)
            self._session = session
        return self._session

    def client(self, service: str) -> Any:
        if service not in self._cache:
            config = Config(retries={"mode": "standard", "max_attempts": self.ctx.max_attempts})
            self._cache[service] = self._sess().client(
                service, endpoint_url=self.ctx.endpoint_url, config=config
            )
        return self._cache[service]

    # the services the toolkit calls, each created on first use
    ec2 = _service("ec2")
    autoscaling = _service("autoscaling")
    ssm = _service("ssm")
    cloudwatch = _service("cloudwatch")
    elbv2 = _service("elbv2")
    sts = _service("sts")
    kms = _service("kms")  # a kms: signing or trusted key (trust.py)

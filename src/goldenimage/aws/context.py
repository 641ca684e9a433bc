"""Which AWS API an environment talks to, for code that only needs clients and the AMI
registry (the rotator): the environment's target says (`targets.target_for`).

- target `sandbox`: the environment's running loopback moto server (from the sandbox
  state file) with dummy credentials; ConfigError when it is not running.
- target `aws`: the profile (`extra.aws.profile`, else boto3's own resolution: AWS_PROFILE,
  environment keys, SSO, instance role) and `region:` from the settings.
- target `local`: no AWS API at all (ConfigError).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..settings import Environment, environment
from .clients import AwsContext, Clients
from .registry import AwsRegistry


def context_for(env: Environment | str, *, root: Path | None = None) -> AwsContext:
    """The AWS context every AWS-side command of `env` uses."""
    from ..targets import target_for

    return target_for(environment(env, root)).aws_context()


def clients_for(env: Environment | str, *, root: Path | None = None) -> Clients:
    return Clients(context_for(env, root=root))


def registry_for(
    env: Environment | str, *, root: Path | None = None, clients: Clients | None = None
) -> AwsRegistry:
    """The AMI registry of an aws or sandbox environment."""
    from ..targets import target_for

    return target_for(environment(env, root)).aws_registry(clients)


def verify_image(env: Environment | str, image_id: str, registry: AwsRegistry) -> dict[str, Any]:
    """The attestation of the AMI about to be rolled out, verified (`trust.verify`; the
    checks made), or UntrustedImage."""
    from ..targets import target_for

    return target_for(environment(env)).verify_image(image_id, registry)

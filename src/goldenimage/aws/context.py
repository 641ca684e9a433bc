"""Which AWS API an environment talks to: `context_for(env)`.

- target `sandbox`: the environment's running loopback moto server (from the sandbox
  state file) with dummy credentials; ConfigError when it is not running.
- target `aws`: the profile (`extra.aws.profile`, else boto3's own resolution: AWS_PROFILE,
  environment keys, SSO, instance role) and `region:` from the settings.
- target `local`: no AWS API at all.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..settings import SETTINGS_FILE, Environment, load_environment
from .clients import AwsContext, Clients
from .config import aws_settings, region_of
from .registry import AwsRegistry

SANDBOX_CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}


def environment(env: Environment | str, root: Path | None = None) -> Environment:
    return env if isinstance(env, Environment) else load_environment(env, root)


def context_for(env: Environment | str, *, root: Path | None = None) -> AwsContext:
    """The AWS context every AWS-side command of `env` uses."""
    from .sandbox import running_state  # the sandbox module imports this one

    e = environment(env, root)
    aws = aws_settings(e)
    target = e.settings.target
    if target == "sandbox":
        state = running_state(e)
        return AwsContext(
            region=str(state["region"]),
            endpoint_url=str(state["endpoint"]),
            max_attempts=aws.max_attempts,
            credentials=dict(SANDBOX_CREDENTIALS),
        )
    if target == "aws":
        return AwsContext(region=region_of(e), profile=aws.profile, max_attempts=aws.max_attempts)
    raise ConfigError(
        f"inventories/{e.name}/{SETTINGS_FILE}: field target: environment {e.name!r} has target "
        f"{target!r}; AWS commands need target 'aws' or 'sandbox'"
    )


def clients_for(env: Environment | str, *, root: Path | None = None) -> Clients:
    return Clients(context_for(env, root=root))


def registry_for(
    env: Environment | str, *, root: Path | None = None, clients: Clients | None = None
) -> AwsRegistry:
    """The AMI registry of an aws or sandbox environment."""
    e = environment(env, root)
    aws = aws_settings(e)
    c = clients or clients_for(e)
    return AwsRegistry(
        c,
        e.name,
        prefix=aws.parameter_prefix,
        channel_data_type=aws.channel_data_type,
        # moto (the sandbox) has no EnableImageDeprecation
        supports_deprecation=aws.deprecate_revoked and not c.ctx.is_sandbox,
    )

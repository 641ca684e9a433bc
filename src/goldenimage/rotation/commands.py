"""What the `rotate` and `rollback` tasks call: environment -> policy, clients, image.

Clients and the registry come from `goldenimage.aws.context` (the AWS target's module:
`clients_for(env)`, `registry_for(env, clients=...)`), imported when a command runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from .. import settings, trust
from ..errors import ConfigError
from ..progress import Reporter
from ..settings import Environment
from .executor import Result, rollback, rotate
from .policy import GroupPolicy, get_policy

STRATEGIES = ("rolling", "refresh")  # `--strategy` (the policy's `strategy` field allows the same)


def _group(env_name: Environment | str, group: str) -> tuple[Any, GroupPolicy, Any]:
    env = settings.environment(env_name)
    source = env.rel(env.settings_file)
    policy = get_policy(env.rotation, group, source)  # the environment's typed section, parsed once
    context = importlib.import_module("goldenimage.aws.context")
    return env, policy, context


def rotate_command(
    reporter: Reporter,
    *,
    env: Environment | str,
    group: str,
    image_id: str | None = None,
    channel: str | None = None,
    strategy: str | None = None,
    dry_run: bool = False,
    resume: bool = False,
) -> Result:
    # the options first: a bad one is named before anything (a sandbox, AWS) is contacted
    if image_id and channel:
        raise ConfigError(f"--image-id {image_id} and --channel {channel}: give one of them, not both")
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    environment, policy, context = _group(env, group)
    clients = context.clients_for(environment)
    registry = context.registry_for(environment, clients=clients)
    if image_id:
        registry.require_usable(image_id)
    elif not resume:
        chan = channel or policy.channel
        if not chan or not policy.image:
            raise ConfigError(
                f"group {group}: give --image-id or --channel (or set image and channel in "
                f"extra.rotation.groups.{group})"
            )
        image_id = registry.resolve_channel(policy.image, chan).id
        reporter.info(f"{group}: channel {policy.image}/{chan} -> {image_id}")
    if not resume:  # the image about to be rolled out: its attestation first (refused: exit 1)
        checked = context.verify_image(environment, image_id, registry)
        reporter.info(f"{group}: {image_id}: {trust.outcome(checked)}")
    return rotate(
        clients,
        policy,
        image_id,
        reporter=reporter,
        strategy=strategy,
        dry_run=dry_run,
        resume=resume,
    )


def rollback_command(reporter: Reporter, *, env: Environment | str, group: str, dry_run: bool = False) -> Result:
    environment, policy, context = _group(env, group)
    return rollback(context.clients_for(environment), policy, reporter=reporter, dry_run=dry_run)

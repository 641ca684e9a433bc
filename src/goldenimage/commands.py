"""What `invoke fingerprint`, `invoke promote`, `invoke revoke` and `invoke history` do.

Each command takes plain arguments and a Reporter and returns the result dict that
`cli.run` prints (`--json`) or hands to the matching `human_*` formatter. Errors are
GoldenImageErrors, so `cli.run` turns them into one `error:` line and the exit code.

Channels live where the environment's images live: the local image store for target
`local`, the AWS registry (SSM parameters, `aws.commands`) for `aws` and `sandbox`. The
results carry the same keys on every target, plus `target`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from . import channels as ch
from . import fingerprint as fp
from .adapters import baseimage, packer
from .errors import ConfigError
from .paths import base_cache_dir, store_dir
from .progress import Reporter
from .settings import Environment, load_environment
from .store import ImageRecord, LocalStore

Result = dict[str, Any]
ExtraResolver = Callable[[Environment, str, Reporter], dict[str, str]]


class ImageLookup(Protocol):
    """What `fingerprint_cmd` needs of a registry (the local store and AWS both have it)."""

    def get(self, image_id: str) -> ImageRecord: ...

    def manifest(self, image_id: str) -> dict[str, Any]: ...

    def find_by_fingerprint(self, name: str, fingerprint: str) -> ImageRecord | None: ...


def bake_extra(env: Environment, image: str, reporter: Reporter) -> dict[str, str]:
    """The resolved fingerprint inputs, from the same sources `bake` uses: the base image
    identity (local and sandbox: the base disk's content hash, built or fetched once, then
    cached; aws: the base AMI id resolved now), the Packer and ansible-core versions.

    Both this and `bake.bake` build the dict with `bake.fingerprint_extra`, so `invoke
    fingerprint` and `invoke bake` agree about what is up to date.
    """
    env.image(image)
    from ansible.release import __version__ as ansible_version

    if env.settings.target == "aws":  # the AMI the amazon-ebs source filter resolves to now
        from .aws import commands as aws_commands

        identity = str(aws_commands.base_ami(env, reporter)["base_ami"]["id"])
    else:  # local and sandbox bake on the local base disk
        with reporter.phase("base", "base disk identity"):
            identity = baseimage.ensure_base_image(env.settings.base, base_cache_dir(), reporter).identity
    from .bake import fingerprint_extra

    return fingerprint_extra(identity, packer.Packer.detect().version_text, ansible_version)


def local_store(env: Environment) -> LocalStore:
    """The registry of a local environment (the host's image store)."""
    if env.settings.target != "local":
        raise ConfigError(
            f"{env.rel(env.settings_file)}: field target: environment {env.name!r} has target "
            f"{env.settings.target!r}; the local image store serves target local"
        )
    return LocalStore(store_dir())


def required(**options: str | None) -> None:
    """Options a task takes as `None` by default, so that a missing one is exit 2 (bad
    input) with a one-line error rather than Invoke's own parse error (exit 1)."""
    for name, value in options.items():
        if value is None or not str(value).strip():
            raise ConfigError(f"--{name.replace('_', '-')} is required")


def _env_check(env: Environment, registry: LocalStore, image_id: str) -> None:
    rec = registry.get(image_id)  # NotFoundError if unknown
    if rec.env != env.name:
        raise ConfigError(
            f"image {image_id} belongs to environment {rec.env!r}, not {env.name!r} (use --env)"
        )


# -- promote -----------------------------------------------------------------------------
def promote(
    env_name: str,
    image_id: str | None,
    channel: str | None,
    reporter: Reporter,
    *,
    registry: LocalStore | None = None,
    root: Path | None = None,
    user: str | None = None,
    now: datetime | None = None,
) -> Result:
    """Point `channel` at a validated, non-revoked image; the move joins its history.

    Local environments use the host's image store; aws and sandbox environments their
    registry (`aws.commands.promote`). The result has the same keys on every target:
    env, target, image, channel, image_id, previous, changed, rollback_target.
    """
    required(image_id=image_id, channel=channel)
    assert image_id is not None and channel is not None
    env = load_environment(env_name, root)
    ch.check_channel(channel)
    if env.remote and registry is None:
        from .aws import commands as aws_commands

        remote = aws_commands.promote(env, image_id, channel, reporter, root=root)
        reg = aws_registry(env, root)
        back = reg.rollback_target(remote["image"], channel)
        return {"target": env.settings.target, **remote, "rollback_target": back}
    store = registry or local_store(env)
    _env_check(env, store, image_id)
    with reporter.phase("promote", f"{image_id} -> {channel}"):
        result = store.promote(image_id, channel, user, now)
    back = store.rollback_target(result["image"], channel)
    return {"env": env.name, "target": "local", **result, "rollback_target": back}


def aws_registry(env: Environment, root: Path | None) -> Any:
    from .aws.context import registry_for

    return registry_for(env, root=root)


def human_promote(r: Result) -> list[str]:
    where = f"{r['image']}/{r['channel']}"
    if not r["changed"]:
        lines = [f"{where} already points at {r['image_id']}: nothing to do"]
    elif r["target"] == "local":
        lines = [f"{where}: {r['previous'] or 'nothing'} -> {r['image_id']}"]
    else:
        from .aws import commands as aws_commands

        lines = aws_commands.human_promote(r)
    if r.get("rollback_target"):
        lines.append(
            f"rollback: invoke promote --env {r['env']} --image-id {r['rollback_target']} "
            f"--channel {r['channel']}"
        )
    return lines


# -- revoke ------------------------------------------------------------------------------
def revoke(
    env_name: str,
    image_id: str | None,
    reason: str | None,
    reporter: Reporter,
    *,
    registry: LocalStore | None = None,
    root: Path | None = None,
    user: str | None = None,
    now: datetime | None = None,
) -> Result:
    """Revoke an image for good; channels on it fall back and the result says where.

    Same keys on every target: env, target, image_id, image, reason, previous_status,
    channels_moved ({channel: image id}), channels_left (nothing valid to fall back to).
    """
    required(image_id=image_id, reason=reason)
    assert image_id is not None and reason is not None
    env = load_environment(env_name, root)
    if env.remote and registry is None:
        from .aws import commands as aws_commands

        remote = aws_commands.revoke(env, image_id, reason, reporter, root=root)
        return {"target": env.settings.target, "changed": True, **remote}
    store = registry or local_store(env)
    _env_check(env, store, image_id)
    with reporter.phase("revoke", image_id):
        result = store.revoke(image_id, reason, user, now)
    for channel, target in sorted(result["channels_moved"].items()):
        reporter.warn(f"channel {result['image']}/{channel} fell back to {target}")
    for channel in result["channels_left"]:
        reporter.warn(
            f"channel {result['image']}/{channel} has no earlier valid image: it points at "
            "nothing now; promote a new one"
        )
    return {"env": env.name, "target": "local", **result}


def human_revoke(r: Result) -> list[str]:
    if r["target"] != "local":
        from .aws import commands as aws_commands

        return aws_commands.human_revoke(r)
    if not r["changed"]:
        return [f"{r['image_id']} was already revoked ({r['reason']}): nothing to do"]
    lines = [f"revoked {r['image_id']} ({r['image']}): {r['reason']}"]
    for channel, target in sorted(r["channels_moved"].items()):
        lines.append(f"  channel {r['image']}/{channel} moved back to {target}")
    for channel in r["channels_left"]:
        lines.append(f"  channel {r['image']}/{channel} points at nothing now: promote a new image")
    if not r["channels_moved"] and not r["channels_left"]:
        lines.append("  no channel pointed at it")
    return lines


# -- channel history ---------------------------------------------------------------------
def history(
    env_name: str,
    image: str | None,
    channel: str | None,
    reporter: Reporter,
    *,
    registry: LocalStore | None = None,
    root: Path | None = None,
) -> Result:
    """A channel's moves, oldest first, and its rollback target."""
    required(image=image, channel=channel)
    assert image is not None and channel is not None
    env = load_environment(env_name, root)
    env.image(image)
    ch.check_channel(channel)
    if env.remote and registry is None:
        from .aws import commands as aws_commands

        return {
            "target": env.settings.target,
            **aws_commands.history(env, image, channel, reporter, root=root),
        }
    store = registry or local_store(env)
    return {
        "env": env.name,
        "target": "local",
        "image": image,
        "channel": channel,
        "history": store.history(image, channel),
        "rollback_target": store.rollback_target(image, channel),
    }


def human_history(r: Result) -> list[str]:
    where = f"{r['image']}/{r['channel']}"
    if not r["history"]:
        return [f"{where}: no history (never promoted)"]
    lines = [f"{where}:"]
    for e in r["history"]:
        when = e.get("at") or e.get("promoted") or ""
        what = f"{e['image_id'] or '(nothing)'} [{e.get('status') or '-'}]"
        if e.get("action") == "revoke":
            what += f"  fell back: {e.get('from')} revoked ({e.get('reason', '')})"
        if e.get("user"):
            what += f"  by {e['user']}"
        lines.append(f"  {when}  {what}")
    lines.append(f"rollback target: {r['rollback_target'] or 'none'}")
    return lines


# -- fingerprint -------------------------------------------------------------------------
def fingerprint_cmd(
    env_name: str,
    image: str | None,
    explain: bool,
    against: str | None,
    reporter: Reporter,
    *,
    registry: ImageLookup | None = None,
    root: Path | None = None,
    resolve_extra: ExtraResolver | None = None,
) -> Result:
    """The fingerprint of one image (or every image of the environment); with `explain`
    each input and its digest; with `against` which inputs differ from an existing image."""
    env = load_environment(env_name, root)
    resolve = resolve_extra or bake_extra
    # what `invoke bake` would skip to: a local bake (local and sandbox) looks in this store
    store: ImageLookup | None = registry
    if store is None and env.settings.target in ("local", "sandbox"):
        store = LocalStore(store_dir())

    old: dict[str, str] | None = None
    old_rec = None
    if against:
        reg: ImageLookup
        if registry is not None:
            reg = registry
        elif env.settings.target == "aws" or against.startswith("ami-"):
            reg = aws_registry(env, root)
        else:
            reg = LocalStore(store_dir())
        old_rec = reg.get(against)  # NotFoundError if unknown
        if image is not None and image != old_rec.name:
            raise ConfigError(f"image {against} is a {old_rec.name!r} image, not {image!r}")
        image = old_rec.name
        manifest = reg.manifest(against)
        raw = manifest.get("fingerprint_inputs")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"image {against}: its manifest has no fingerprint_inputs to compare")
        old = {str(k): str(v) for k, v in raw.items()}

    names = [image] if image is not None else sorted(env.settings.images)
    rows: list[Result] = []
    for name in names:
        env.image(name)  # NotFoundError naming the settings file
        extra = resolve(env, name, reporter)
        with reporter.phase("fingerprint", name):
            inputs = fp.collect(env.root, env, name, extra)
            value = fp.compute(inputs)
        row: Result = {"image": name, "fingerprint": value, "inputs": len(inputs)}
        if store is not None:
            hit = store.find_by_fingerprint(name, value)
            row["up_to_date"] = hit.id if hit else None
        if explain:
            row["explain"] = fp.explain(inputs)
        if old is not None and old_rec is not None:
            d = fp.diff(old, fp.as_manifest(inputs))
            details = {i.name: i.detail for i in inputs if i.detail and i.name in d["changed"]}
            row["against"] = {
                "image_id": old_rec.id,
                "fingerprint": old_rec.fingerprint,
                "same": value == old_rec.fingerprint,
                **d,
                "now": details,
            }
        rows.append(row)
    return {"env": env.name, "images": rows}


def human_fingerprint(r: Result) -> list[str]:
    lines: list[str] = []
    for row in r["images"]:
        state = ""
        if "up_to_date" in row:
            state = f"  up to date: {row['up_to_date']}" if row["up_to_date"] else "  not built"
        lines.append(f"{row['image']}  {row['fingerprint']}  ({row['inputs']} inputs){state}")
        for e in row.get("explain", []):
            detail = f"  = {e['detail']}" if e.get("detail") and e["detail"] != "normalised" else ""
            lines.append(f"  {e['digest'][:16]}  {e['name']}{detail}")
        a = row.get("against")
        if a:
            n = len(a["added"]) + len(a["removed"]) + len(a["changed"])
            if not n:
                same = "same fingerprint" if a["same"] else "same inputs"
                lines.append(f"against {a['image_id']}: {same}, nothing changed")
                continue
            lines.append(
                f"against {a['image_id']} ({a['fingerprint'][:16]}): {n} input{'s' if n != 1 else ''} differ"
            )
            for kind in ("changed", "added", "removed"):
                for name in a[kind]:
                    now = f" (now {a['now'][name]})" if name in a["now"] else ""
                    lines.append(f"  {kind:<8} {name}{now}")
    return lines

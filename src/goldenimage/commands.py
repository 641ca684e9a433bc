"""What `invoke fingerprint`, `invoke promote` and `invoke revoke` do.

Each command takes plain arguments and a Reporter and returns the result dict that
`cli.run` prints (`--json`) or hands to the matching `human_*` formatter. Errors are
GoldenImageErrors, so `cli.run` turns them into one `error:` line and the exit code.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import channels as ch
from . import fingerprint as fp
from .adapters import baseimage, packer
from .errors import ConfigError
from .paths import base_cache_dir, store_dir
from .progress import Reporter
from .settings import Environment, load_environment
from .store import LocalStore, Registry

Result = dict[str, Any]
ExtraResolver = Callable[[Environment, str, Reporter], dict[str, str]]


def bake_extra(env: Environment, image: str, reporter: Reporter) -> dict[str, str]:
    """The resolved fingerprint inputs, from the same sources `bake` uses: the base disk's
    content hash (built or fetched once, then cached), the Packer and ansible-core versions.

    `bake.bake` builds the same dict inline; both must agree or `invoke fingerprint` would
    disagree with `invoke bake` about what is up to date.
    """
    env.image(image)
    from ansible.release import __version__ as ansible_version

    with reporter.phase("base", "base disk identity"):
        base = baseimage.ensure_base_image(env.settings.base, base_cache_dir(), reporter)
    return {
        "base:image": base.identity,
        "tool:packer": packer.Packer.detect().version_text,
        "tool:ansible-core": ansible_version,
    }


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no $USER (some containers)
        return "unknown"


def registry_for(env: Environment) -> Registry:
    """The image registry of an environment's target."""
    if env.settings.target == "local":
        return LocalStore(store_dir())
    raise ConfigError(
        f"{env.rel(env.settings_file)}: field target: the {env.settings.target} registry "
        "is not available yet; channels and revocation work on the local target"
    )


def _env_check(env: Environment, registry: Registry, image_id: str) -> None:
    rec = registry.get(image_id)  # NotFoundError if unknown
    if rec.env != env.name:
        raise ConfigError(
            f"image {image_id} belongs to environment {rec.env!r}, not {env.name!r} (use --env)"
        )


# -- promote -----------------------------------------------------------------------------
def promote(
    env_name: str,
    image_id: str,
    channel: str,
    reporter: Reporter,
    *,
    registry: Registry | None = None,
    root: Path | None = None,
    user: str | None = None,
    now: datetime | None = None,
) -> Result:
    """Point `channel` at a validated, non-revoked image; the move joins its history."""
    env = load_environment(env_name, root)
    ch.check_channel(channel)
    reg = registry or registry_for(env)
    _env_check(env, reg, image_id)
    with reporter.phase("promote", f"{image_id} -> {channel}"):
        result = reg.promote(image_id, channel, user or current_user(), now or datetime.now(UTC))
    prev = reg.previous(result["name"], channel)
    back = prev["image_id"] if prev else None
    if back is not None and reg.get(back).status != "validated":
        back = None  # revoked since: not a target
    return {"env": env.name, **result, "rollback_to": back}


def human_promote(r: Result) -> list[str]:
    head = f"channel {r['channel']} of {r['name']}"
    if not r["changed"]:
        return [f"{head} already points at {r['to']}: nothing to do"]
    lines = [f"{head}: {r['from'] or '(none)'} -> {r['to']}"]
    if r.get("rollback_to"):
        lines.append(
            f"rollback: invoke promote --env {r['env']} --image-id {r['rollback_to']} "
            f"--channel {r['channel']}"
        )
    return lines


# -- revoke ------------------------------------------------------------------------------
def revoke(
    env_name: str,
    image_id: str,
    reason: str,
    reporter: Reporter,
    *,
    registry: Registry | None = None,
    root: Path | None = None,
    user: str | None = None,
    now: datetime | None = None,
) -> Result:
    """Revoke an image for good; channels on it fall back and the result says where."""
    env = load_environment(env_name, root)
    reg = registry or registry_for(env)
    _env_check(env, reg, image_id)
    with reporter.phase("revoke", image_id):
        result = reg.revoke(image_id, reason, user or current_user(), now or datetime.now(UTC))
    for move in result["moved"]:
        target = move["to"] or "nothing (no earlier valid image in its history)"
        reporter.warn(f"channel {move['channel']} of {result['name']} fell back to {target}")
    return {"env": env.name, **result}


def human_revoke(r: Result) -> list[str]:
    if not r["changed"]:
        return [f"{r['image_id']} was already revoked ({r['reason']}): nothing to do"]
    lines = [f"revoked {r['image_id']}: {r['reason']}"]
    for m in r["moved"]:
        if m["to"]:
            lines.append(f"channel {m['channel']}: {m['from']} -> {m['to']} (fell back)")
        else:
            lines.append(
                f"channel {m['channel']}: {m['from']} -> (none): no earlier valid image; promote one"
            )
    if not r["moved"]:
        lines.append("no channel pointed at it")
    return lines


# -- fingerprint -------------------------------------------------------------------------
def fingerprint_cmd(
    env_name: str,
    image: str | None,
    explain: bool,
    against: str | None,
    reporter: Reporter,
    *,
    registry: Registry | None = None,
    root: Path | None = None,
    resolve_extra: ExtraResolver | None = None,
) -> Result:
    """The fingerprint of one image (or every image of the environment); with `explain`
    each input and its digest; with `against` which inputs differ from an existing image."""
    env = load_environment(env_name, root)
    resolve = resolve_extra or bake_extra
    reg: Registry | None = registry
    if reg is None and (against or env.settings.target == "local"):
        reg = registry_for(env)

    old: dict[str, str] | None = None
    old_rec = None
    if against:
        assert reg is not None
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
        if reg is not None:
            hit = reg.find_by_fingerprint(name, value)
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

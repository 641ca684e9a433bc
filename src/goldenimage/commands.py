"""What `invoke images`, `validate`, `promote`, `revoke`, `history` and `fingerprint` do.

Each command takes plain arguments and a Reporter and returns the result dict that
`cli.run` prints (`--json`) or hands to the matching `human_*` formatter. Errors are
GoldenImageErrors, so `cli.run` turns them into one `error:` line and the exit code.

Every command is written once against the environment's target (`targets.target_for`):
its registry holds the images and channels (the local image store, or AMIs and SSM
parameters). The results carry the same keys on every target, plus `target`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ancestry, timing, trust
from . import channels as ch
from . import fingerprint as fp
from .adapters.packer import Packer
from .build import fingerprint_extra, parent_inputs
from .compliance import index_text
from .errors import ConfigError
from .models import REVOKED, VALIDATED, newest_validated
from .progress import Reporter
from .settings import Environment, environment
from .targets import ImageRegistry, Target, target_for

if TYPE_CHECKING:
    from .store import LocalStore

Result = dict[str, Any]
ExtraResolver = Callable[[Environment, str, Reporter], dict[str, str]]
ImageLookup = ImageRegistry


def bake_extra(env: Environment, image: str, reporter: Reporter) -> dict[str, str]:
    """The resolved fingerprint inputs, from the same sources `bake` uses: the target's base
    identity (local and sandbox: the base disk's content hash, built or fetched once, then
    cached; aws: the base AMI resolved now), the Packer and ansible-core versions."""
    env.image(image)
    from ansible.release import __version__ as ansible_version

    with reporter.phase("base", "base identity"):
        identity = target_for(env).base_identity(reporter)
    return fingerprint_extra(identity, Packer.detect().version_text, ansible_version)


def required(**options: str | None) -> None:
    """Options a task takes as `None` by default, so that a missing one is exit 2 (bad
    input) with a one-line error rather than Invoke's own parse error (exit 1)."""
    for name, value in options.items():
        if value is None or not str(value).strip():
            raise ConfigError(f"--{name.replace('_', '-')} is required")


def _image_registry(env: Environment | str, root: Path | None, registry: ImageRegistry | None,
                    image_id: str) -> tuple[Environment, Target, ImageRegistry]:
    """The environment, its target and the registry that holds `image_id`, an image of
    this environment (NotFoundError if unknown, ConfigError if another's)."""
    env = environment(env, root)
    target = target_for(env)
    reg = registry or target.registry()
    _own_image(env, reg, image_id)
    return env, target, reg


def _own_image(env: Environment, reg: ImageRegistry, image_id: str) -> None:
    """NotFoundError if `reg` does not know `image_id`, ConfigError if it is another
    environment's."""
    rec = reg.get(image_id)
    if rec.env and rec.env != env.name:
        raise ConfigError(
            f"image {image_id} belongs to environment {rec.env!r}, not {env.name!r} (use --env)"
        )


def _stamp(user: str | None, now: datetime | None) -> dict[str, Any]:
    """Who and when, where a test fixes them (the local store takes them)."""
    return {k: v for k, v in (("user", user), ("now", now)) if v is not None}


# -- images and validate -----------------------------------------------------------------
def images(env: Environment | str, image: str | None, image_id: str | None, reporter: Reporter,
           *, root: Path | None = None, tree: bool = False) -> Result:
    """`invoke images`: the environment's images (each built on a parent that has a newer
    image since is `outdated`); with an id, that image's full provenance; with `tree`, the
    family: each image name under its parent name, with its images."""
    env = environment(env, root)
    if image is not None:
        env.image(image)
    target = target_for(env)
    reg = target.registry()
    if image_id is not None:
        return {"image": reg.get(image_id).summary(), "manifest": reg.manifest(image_id),
                **target.provenance(image_id)}
    every = [r.summary() for r in reg.list()]
    channels: dict[str, dict[str, str | None]] = {}
    for r in every:
        for c in r["channels"]:
            channels.setdefault(r["name"], {})[c] = r["id"]
    stale = ancestry.outdated(every, channels)
    rows = [{**r, **({"outdated": stale[r["id"]]} if r["id"] in stale else {})}
            for r in every if image is None or r["name"] == image]
    result: Result = {"env": env.name, **target.listing(), "images": rows}
    if tree:
        parents = env.parents
        result["tree"] = [{"image": n, "depth": d, "parent": parents.get(n),
                           "images": [r["id"] for r in rows if r["name"] == n]}
                          for d, n in ancestry.tree(parents) if image is None or n == image]
    return result


def human_tree(result: Result) -> list[str]:
    by_id = {r["id"]: r for r in result["images"]}
    lines = []
    for node in result["tree"]:
        pad = "  " * node["depth"]
        on = f" (on {node['parent']})" if node["parent"] else ""
        lines.append(f"{pad}{node['image']}{on}")
        for image_id in node["images"] or []:
            r = by_id[image_id]
            chans = f"  [{', '.join(r['channels'])}]" if r["channels"] else ""
            parent = f"  built on {r['parent']['id']}" if r.get("parent") else ""
            late = f"  {r['outdated']}" if r.get("outdated") else ""
            lines.append(f"{pad}  {r['id']}  {r['status']}{chans}{parent}{late}")
        if not node["images"]:
            lines.append(f"{pad}  (no images)")
    return lines


def human_images(result: Result) -> list[str]:
    import json

    if "tree" in result:
        return human_tree(result)

    if "manifest" in result:
        m, rec = result["manifest"], result["image"]
        lines = [f"{k:<12} {rec.get(k)}" for k in ("id", "name", "status", "fingerprint", "created")]
        lines.append(f"{'channels':<12} {', '.join(rec.get('channels') or []) or '-'}")
        for key in ("base", "tools", "git", "validation"):
            if key in m:
                lines.append(f"{key:<12} {json.dumps(m[key], sort_keys=True, default=str)}")
        if "directory" in result:
            lines.append(f"{'directory':<12} {result['directory']}")
        return lines + timing.human(m.get("timings") or {}, top=timing.SLOWEST)
    rows = result["images"]
    if "region" in result:  # AMIs
        if not rows:
            return [f"no images in {result['env']} ({result['region']})"]
        lines = [f"{'ID':<22} {'NAME':<10} {'STATUS':<11} {'CREATED':<20} {'FINGERPRINT':<20} CHANNELS"]
        for r in rows:
            short = r["fingerprint"].removeprefix("sha256:")[:16]
            lines.append(f"{r['id']:<22} {r['name']:<10} {r['status']:<11} {r['created']:<20} "
                         f"{short:<20} {','.join(r['channels']) or '-'}")
        return lines
    if not rows:
        return [f"no images in {result['store']}"]
    head = f"{'ID':<34} {'NAME':<8} {'FINGERPRINT':<14} {'CREATED':<21} {'STATUS':<12} CHANNELS"
    return [head] + [
        f"{r['id']:<34} {r['name']:<8} {r['fingerprint'][:12]:<14} {r['created']:<21} {r['status']:<12} "
        f"{','.join(r['channels']) or '-'}" + (f"  ({r['stage']} by gc since {r['stage_at']})" if r.get("stage") else "")
        + (f"  {r['outdated']}" if r.get("outdated") else "")
        for r in rows
    ]


def validate(env: Environment | str, image_id: str | None, reporter: Reporter, verify_only: bool = False) -> Result:
    """`invoke validate`: boot a registered image again and rerun the image suite; with
    `verify_only`, check its signed attestation instead (`verify`), booting nothing."""
    if verify_only:
        return verify(env, image_id, reporter)
    required(image_id=image_id)
    assert image_id is not None
    return target_for(environment(env)).validate_image(image_id, reporter)


def human_validate(result: Result) -> list[str]:
    if "verified" in result:
        return human_verify(result)
    if "checks" not in result:  # an AMI: launched, checked, cleaned up
        return [f"passed: {result['image_id']}"]
    c = result["checks"]
    verdict = "passed" if result["ok"] else "FAILED"
    lines = [f"{verdict}: {result['image_id']} ({c['passed']} passed, {c['failed']} failed, {c['errors']} errors)"]
    audit = result.get("compliance") or {}
    if audit:
        lines.append(f"  compliance: {index_text(str(audit.get('scanner')), audit.get('score'), audit.get('min_score'))}: "
                     f"{'passed' if audit.get('ok') else 'FAILED'}")
    return lines + [f"  {f}" for f in [*c["failures"], *audit.get("failures", [])]]


# -- trust -------------------------------------------------------------------------------
def verify(env: Environment | str, image_id: str | None, reporter: Reporter, *, root: Path | None = None) -> Result:
    """`invoke verify`: check the image's signed attestation against its bytes (or AMI and
    snapshots) and the environment's trusted keys; what was checked, or UntrustedImage."""
    required(image_id=image_id)
    assert image_id is not None
    env = environment(env, root)
    target = target_for(env)
    reg = target.registry_for(image_id)  # a sandbox knows its local images and its AMIs
    _own_image(env, reg, image_id)
    return {"env": env.name, "target": target.name, **target.verify_image(image_id, reg)}


def human_verify(result: Result) -> list[str]:
    return trust.human_verify(result)


def keys_init(env: Environment | str, reporter: Reporter, *, root: Path | None = None) -> Result:
    """`invoke keys.init`: the environment's signing key, made if absent, and its public key."""
    env = environment(env, root)
    return trust.init_keys(env, reporter, target_for(env).kms_client)


def human_keys(r: Result) -> list[str]:
    return [f"{'created' if r['created'] else 'exists'}: signing key {r['signing_key']} of {r['env']} "
            f"(keyid {r['keyid'][:16]}…)",
            *([f"  public key file {r['public_key_file']}"] if r.get("public_key_file") else []),
            *r["public_key"].rstrip().splitlines()]


# -- promote -----------------------------------------------------------------------------
def promote(env: Environment | str, image_id: str | None, channel: str | None, reporter: Reporter, *,
            registry: ImageRegistry | None = None, root: Path | None = None, user: str | None = None,
            now: datetime | None = None) -> Result:
    """Point `channel` at a validated, non-revoked image; the move joins its history.

    The result has the same keys on every target: env, target, image, channel, image_id,
    previous, changed, rollback_target (AWS adds parameter and version).
    """
    required(image_id=image_id, channel=channel)
    assert image_id is not None and channel is not None
    ch.check_channel(channel)
    env, target, reg = _image_registry(env, root, registry, image_id)
    rec = reg.get(image_id)
    with _promote_lease(target, rec.name, channel, image_id, reporter):
        # an image that is not validated keeps the registry's own refusal (exit 2); a validated one
        # is promoted only if its attestation verifies (refused: exit 1, one line naming the check)
        checked = target.verify_image(image_id, reg) if rec.status == VALIDATED else {}
        result = reg.promote(image_id, channel, **_stamp(user, now))  # refused: one error line, nothing before
    back = reg.rollback_target(result["image"], channel)
    return {"env": env.name, "target": target.name, **result, "rollback_target": back,
            "attestation": {k: checked[k] for k in ("verified", "keyid", "admitted") if k in checked}}


PROMOTE_WAIT = 120.0  # seconds a promote waits for another machine's promote to the same channel


def _promote_lease(target: Target, name: str, channel: str, image_id: str, reporter: Reporter) -> Any:
    """With shared state, the lease `promote/<env>/<image>/<channel>`: one promote of a
    channel at a time across machines, from its checks (attestation, AMI protection) to the
    move, waited for up to PROMOTE_WAIT saying who holds it. The move itself is a
    compare-and-swap either way; the lease keeps a promote's checks and move together."""
    if target.shared_state() is None:
        return contextlib.nullcontext()
    lock = target.lease(f"promote/{target.env.name}/{name}/{channel}", f"promote {image_id} to {channel}")
    return lock.held(f"promote to {name}/{channel}", PROMOTE_WAIT, max_poll=2.0,
                     on_wait=lambda who: reporter.info(f"    waiting: {who}"))


def human_promote(r: Result) -> list[str]:
    where = f"{r['image']}/{r['channel']}"
    if not r["changed"]:
        lines = [f"{where} already points at {r['image_id']}: nothing to do"]
    elif "parameter" in r:  # an SSM parameter version
        lines = [f"{where}: {r['previous'] or 'nothing'} -> {r['image_id']} "
                 f"(version {r.get('version')}, {r['parameter']})"]
    else:
        lines = [f"{where}: {r['previous'] or 'nothing'} -> {r['image_id']}"]
    if r.get("rollback_target"):
        lines.append(
            f"rollback: invoke promote --env {r['env']} --image-id {r['rollback_target']} "
            f"--channel {r['channel']}"
        )
    return lines


# -- revoke ------------------------------------------------------------------------------
def revoke(env: Environment | str, image_id: str | None, reason: str | None, reporter: Reporter, *,
           registry: ImageRegistry | None = None, root: Path | None = None, user: str | None = None,
           now: datetime | None = None, cascade: bool = False) -> Result:
    """Revoke an image for good; channels on it fall back and the result says where.

    Same keys on every target: env, target, image_id, image, reason, previous_status,
    changed, channels_moved ({channel: image id}), channels_left (nothing valid to fall
    back to).
    """
    required(image_id=image_id, reason=reason)
    assert image_id is not None and reason is not None
    env, target, reg = _image_registry(env, root, registry, image_id)
    result = _revoke_one(reg, image_id, reason, reporter, user, now)
    built_on = [i for i in ancestry.built_on([r.summary() for r in reg.list()], image_id)
                if reg.get(i).status != REVOKED]
    out: Result = {"env": env.name, "target": target.name, "changed": True, **result, "descendants": built_on}
    if cascade:
        why = f"parent {image_id} revoked: {reason}"
        out["cascaded"] = [_revoke_one(reg, i, why, reporter, user, now) for i in built_on]
    elif built_on:
        reporter.warn(f"{len(built_on)} image(s) built on {image_id} are not revoked: {', '.join(built_on)} "
                      "(invoke revoke --cascade revokes them too)")
    return out


def _revoke_one(reg: ImageRegistry, image_id: str, reason: str, reporter: Reporter, user: str | None,
                now: datetime | None) -> Result:
    result = reg.revoke(image_id, reason, **_stamp(user, now))
    for channel, to in sorted(result["channels_moved"].items()):
        reporter.warn(f"channel {result['image']}/{channel} fell back to {to}")
    for channel in result["channels_left"]:
        reporter.warn(
            f"channel {result['image']}/{channel} has no earlier valid image: promote a new one"
        )
    return dict(result)


def human_revoke(r: Result) -> list[str]:
    if not r["changed"]:
        return [f"{r['image_id']} was already revoked ({r['reason']}): nothing to do"]
    lines = [f"revoked {r['image_id']} ({r['image']}): {r['reason']}"]
    if "deprecation" in r:
        lines.append(f"  deprecation: {r['deprecation']}")
    for channel, to in sorted(r["channels_moved"].items()):
        lines.append(f"  channel {r['image']}/{channel} moved back to {to}")
    left = "still names it" if "deprecation" in r else "points at nothing now"
    for channel in r["channels_left"]:
        lines.append(f"  channel {r['image']}/{channel} {left}: promote a new image")
    if not r["channels_moved"] and not r["channels_left"] and "deprecation" not in r:
        lines.append("  no channel pointed at it")
    for c in r.get("cascaded") or []:
        lines.append(f"  revoked {c['image_id']} ({c['image']}) too: built on it"
                     + ("" if c.get("changed", True) else " (already revoked)"))
    if r.get("descendants") and "cascaded" not in r:
        lines.append(f"  built on it and still usable: {', '.join(r['descendants'])} "
                     "(invoke revoke --cascade revokes them too)")
    return lines


# -- channel history ---------------------------------------------------------------------
def history(
    env: Environment | str,
    image: str | None,
    channel: str | None,
    reporter: Reporter,
    *,
    registry: ImageRegistry | None = None,
    root: Path | None = None,
) -> Result:
    """A channel's moves, oldest first (`models.history_entry`), and its rollback target."""
    required(image=image, channel=channel)
    assert image is not None and channel is not None
    env = environment(env, root)
    env.image(image)
    ch.check_channel(channel)
    target = target_for(env)
    reg = registry or target.registry()
    return {
        "env": env.name,
        "target": target.name,
        "image": image,
        "channel": channel,
        "history": reg.history(image, channel),
        "rollback_target": reg.rollback_target(image, channel),
    }


def human_history(r: Result) -> list[str]:
    where = f"{r['image']}/{r['channel']}"
    if not r["history"]:
        return [f"{where}: no history (never promoted)"]
    lines = [f"{where}:"]
    for e in r["history"]:
        what = f"{e['image_id'] or '(nothing)'} [{e['status'] or '-'}]"
        if e["action"] == "revoke":
            what += f"  fell back: {e['from']} revoked ({e['reason'] or ''})"
        if e["user"]:
            what += f"  by {e['user']}"
        lines.append(f"  {e['at']}  {what}")
    lines.append(f"rollback target: {r['rollback_target'] or 'none'}")
    return lines


# -- fingerprint -------------------------------------------------------------------------
def _changed_since(reg: ImageLookup, name: str, inputs: list[fp.FingerprintInput]) -> Result | None:
    """Why `name` is not up to date: which inputs differ from its newest validated image's
    (e.g. "parent changed"); None when it has none with recorded inputs."""
    newest = newest_validated(reg.list(name))
    if newest is None:
        return None
    raw = reg.manifest(newest.id).get("fingerprint_inputs")
    if not isinstance(raw, dict) or not raw:
        return None
    d = fp.diff({str(k): str(v) for k, v in raw.items()}, fp.as_manifest(inputs))
    return {"image_id": newest.id, "reasons": fp.reasons(d), **d}


def _parent_extra(env: Environment, target: Target, reg: ImageRegistry, name: str,
                  inputs_of: Callable[[str], list[fp.FingerprintInput]]) -> dict[str, str]:
    """A child's parent inputs as its bake would have them: the parent's channel image, else
    the validated parent image of the parent's current fingerprint; `(not built)` if none."""
    spec = env.image(name).parent
    if spec is None:
        return {}
    if spec.channel:
        parent_id = ch.current(reg.history(spec.image, spec.channel))
        rec = reg.get(parent_id) if parent_id else None
        parent_fp = rec.fingerprint if rec else "(channel points at nothing)"
    else:
        parent_fp = fp.compute(inputs_of(spec.image))
        rec = reg.find_by_fingerprint(spec.image, parent_fp)
    if rec is None:
        return {"base:image": f"(parent {spec.image} not built)", "parent:image": "(not built)",
                "parent:fingerprint": parent_fp}
    return {"base:image": target.parent_base_identity(rec, reg.manifest(rec.id)), **parent_inputs(rec)}


def fingerprint_cmd(
    env: Environment | str,
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
    env = environment(env, root)
    resolve = resolve_extra or bake_extra
    target = target_for(env)
    # what `invoke bake` would skip to
    store = registry or target.fingerprint_lookup()

    old: dict[str, str] | None = None
    old_rec = None
    if against:
        reg = registry or target.registry_for(against)
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
    known: dict[str, list[fp.FingerprintInput]] = {}

    def inputs_of(name: str) -> list[fp.FingerprintInput]:
        """The bake's inputs of `name`; a child's parent is the image its bake would take."""
        if name not in known:
            extra = {**resolve(env, name, reporter),
                     **_parent_extra(env, target, registry or target.parent_registry(), name, inputs_of)}
            with reporter.phase("fingerprint", name):
                known[name] = fp.collect(env.root, env, name, extra)
        return known[name]

    for name in names:
        env.image(name)  # NotFoundError naming the settings file
        inputs = inputs_of(name)
        value = fp.compute(inputs)
        row: Result = {"image": name, "fingerprint": value, "inputs": len(inputs)}
        if store is not None:
            hit = store.find_by_fingerprint(name, value)
            row["up_to_date"] = hit.id if hit else None
        if explain:
            row["explain"] = fp.explain(inputs)
            if store is not None and row.get("up_to_date") is None:
                row["changed_since"] = _changed_since(store, name, inputs)
        if old is not None and old_rec is not None:
            d = fp.diff(old, fp.as_manifest(inputs))
            details = {i.name: i.detail for i in inputs if i.detail and i.name in d["changed"]}
            row["against"] = {
                "image_id": old_rec.id,
                "fingerprint": old_rec.fingerprint,
                "same": value == old_rec.fingerprint,
                **d,
                "now": details,
                "reasons": fp.reasons(d),
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
        since = row.get("changed_since")
        if since:
            lines.append(f"  not up to date since {since['image_id']}: {', '.join(since['reasons']) or 'same inputs'}")
        a = row.get("against")
        if a:
            n = len(a["added"]) + len(a["removed"]) + len(a["changed"])
            if not n:
                same = "same fingerprint" if a["same"] else "same inputs"
                lines.append(f"against {a['image_id']}: {same}, nothing changed")
                continue
            why = f": {', '.join(a['reasons'])}" if a.get("reasons") else ""
            lines.append(
                f"against {a['image_id']} ({a['fingerprint'][:16]}): {n} input{'s' if n != 1 else ''} differ{why}"
            )
            for kind in ("changed", "added", "removed"):
                for name in a[kind]:
                    now = f" (now {a['now'][name]})" if name in a["now"] else ""
                    lines.append(f"  {kind:<8} {name}{now}")
    return lines


def store_push(env: Environment | str, source: str | None, reporter: Reporter, *, root: Path | None = None) -> Result:
    """`invoke store.push`: copy a local store (this machine's, or `source`) into the
    environment's shared state: every registered image (files as blobs, uploaded with
    progress, each image's record written after its files), retention stages and channel
    histories. What the bucket has already stays as it is; a second push copies nothing."""
    from .paths import store_dir
    from .store import LocalStore

    env = environment(env, root)
    target = target_for(env)
    where = env.rel(env.settings_file)
    shared = target.shared_state()
    if shared is None:
        raise ConfigError(f"{where}: field state: environment {env.name!r} keeps its state on this machine; "
                          "add `state: {bucket: ...}` to push it to a bucket")
    if not hasattr(target, "store"):
        raise ConfigError(f"{where}: field target: {target.name!r} images live in AWS, not in a local store: "
                          "there is nothing to push")
    path = Path(source).expanduser().resolve() if source else store_dir()
    if not (path / "catalog.json").is_file():
        raise ConfigError(f"--source: {path} is not a local store (no catalog.json)")
    local, dest = LocalStore(path), LocalStore(store_dir(), shared)

    def progress(name: str, done: int, size: int) -> None:
        reporter.step(f"upload {name}: {done / 2**20:.0f}/{size / 2**20:.0f} MiB")

    with reporter.phase("push", f"{local.where} -> {dest.where}"):
        out = local.push(dest, progress)
    out["bases"] = _push_bases(target, local, reporter)
    return {"env": env.name, **out}


def _push_bases(target: Target, local: LocalStore, reporter: Reporter) -> list[str]:
    """The base disks this machine built that the pushed images were baked on: published with
    them, so that another machine knows their identity without building them."""
    from .adapters import baseimage
    from .paths import base_cache_dir

    if target.bases is None:
        return []
    sources = {str((local.manifest(r.id).get("base") or {}).get("source") or "") for r in local.list(quarantined=False)}
    out = []
    for source in sorted(sources):
        directory = baseimage.cached_dir(base_cache_dir(), source)
        if directory is not None and baseimage.read_record(directory) is not None:
            target.bases.sync(directory.parent, directory.name, reporter)
            out.append(source)
    return out


def human_push(result: Result) -> list[str]:
    return [f"pushed {len(result['images'])} images and {len(result['channels'])} channels "
            f"from {result['from']} to {result['to']}",
            *(f"  image   {i}" for i in result["images"]),
            *(f"  channel {c}" for c in result["channels"]),
            *(f"  base    {b}" for b in result.get("bases", [])),
            *(f"  kept the bucket's history of {c}" for c in result["kept"])]

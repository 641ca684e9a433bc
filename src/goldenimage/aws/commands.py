"""AWS-side commands for `target: aws` and `target: sandbox` environments.

Each takes plain arguments and a `Reporter` and returns a result dict for `cli.run`, so
the tasks in tasks.py stay thin: they pick these for an aws or sandbox environment and the
local store's equivalents for a local one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models import ImageRecord
from ..progress import Reporter
from ..settings import SETTINGS_FILE, Environment
from .ami import resolve_base_ami
from .config import aws_settings
from .context import clients_for, environment, registry_for
from .validate import CheckResult, RemoteCheck, RemoteTarget, TestinfraCheck, validate_ami

Result = dict[str, Any]


def _env(env: str | Environment, root: Path | None) -> Environment:
    e = environment(env, root)
    if not e.remote:
        raise ConfigError(
            f"inventories/{e.name}/{SETTINGS_FILE}: field target: environment {e.name!r} has "
            f"target {e.settings.target!r}, not aws or sandbox"
        )
    return e


def images(
    env: str | Environment,
    reporter: Reporter | None = None,
    *,
    image: str | None = None,
    root: Path | None = None,
) -> Result:
    """`invoke images`: AMIs of the environment with their status and channels."""
    e = _env(env, root)
    if image is not None:
        e.image(image)  # NotFoundError naming the known images
    reg = registry_for(e)
    return {
        "env": e.name,
        "target": e.settings.target,
        "region": reg.clients.ctx.region,
        "images": [r.summary() for r in reg.list(image)],
    }


def promote(
    env: str | Environment,
    image_id: str,
    channel: str,
    reporter: Reporter | None = None,
    *,
    root: Path | None = None,
) -> Result:
    """`invoke promote`: point a channel at a validated AMI (a new parameter version)."""
    e = _env(env, root)
    return {"env": e.name, **registry_for(e).promote(image_id, channel)}


def revoke(
    env: str | Environment,
    image_id: str,
    reason: str,
    reporter: Reporter | None = None,
    *,
    root: Path | None = None,
) -> Result:
    """`invoke revoke`: tag revoked, deprecate, move channels back; refused from now on."""
    e = _env(env, root)
    result = registry_for(e).revoke(image_id, reason)
    if reporter is not None:
        for ch in result["channels_left"]:
            reporter.warn(
                f"channel {result['image']}/{ch} still names the revoked image and has "
                "no earlier validated image: promote a new one"
            )
    return {"env": e.name, **result}


def history(
    env: str | Environment,
    image: str,
    channel: str,
    reporter: Reporter | None = None,
    *,
    root: Path | None = None,
) -> Result:
    e = _env(env, root)
    e.image(image)
    reg = registry_for(e)
    return {
        "env": e.name,
        "image": image,
        "channel": channel,
        "history": reg.history(image, channel),
        "rollback_target": reg.rollback_target(image, channel),
    }


def register_baked_image(
    env: str | Environment,
    record: ImageRecord,
    manifest: dict[str, Any],
    reporter: Reporter | None = None,
    *,
    root: Path | None = None,
) -> Result:
    """After a bake: register the (locally validated) image in the environment's account.

    For `target: sandbox` this is the last step of `invoke bake --env sandbox`: the local
    qcow2 stays in the local store and an AMI standing for it is registered in the sandbox,
    tagged with the manifest's facts. With an AMI Packer already built (`manifest["ami_id"]`
    or `artifact_id`), the AMI is adopted and tagged.
    """
    e = _env(env, root)
    rec = registry_for(e).put(record, manifest)
    if reporter is not None:
        reporter.info(f"registered {rec.id} ({rec.name}, {rec.status}) in {rec.extra['region']}")
    return {"env": e.name, "image": rec.summary()}


def base_ami(
    env: str | Environment, reporter: Reporter | None = None, *, root: Path | None = None
) -> Result:
    """The base AMI the amazon-ebs bake starts from, resolved now (for the fingerprint)."""
    e = _env(env, root)
    return {"env": e.name, "base_ami": resolve_base_ami(clients_for(e), aws_settings(e).base_ami)}


class SandboxCheck:
    """The sandbox runs no guests: the remote check reports what was validated instead."""

    def __init__(self, local_id: str) -> None:
        self.local_id = local_id

    def __call__(self, target: RemoteTarget, reporter: Reporter) -> CheckResult:
        return CheckResult(
            passed=True,
            details={
                "skipped": "the sandbox (moto) boots no guests; the image's local qcow2 "
                f"({self.local_id or 'unknown'}) was validated by the local bake",
            },
        )


def validation_subnet(e: Environment) -> str:
    """Where validation launches: extra.aws.validation.subnet, the first of extra.aws.subnets,
    the build subnet, or (sandbox) the first seeded subnet."""
    aws = aws_settings(e)
    subnet = aws.validation.subnet or (aws.subnets[0] if aws.subnets else None) or aws.build.subnet
    if subnet is None and e.settings.target == "sandbox":
        from .sandbox import running_state

        subnet = str(running_state(e)["seed"]["subnets"][0])
    if subnet is None:
        raise ConfigError(
            f"inventories/{e.name}/{SETTINGS_FILE}: field extra.aws.validation.subnet: "
            "a subnet to launch the validation instance in is required"
        )
    return subnet


def validate(
    env: str | Environment,
    image_id: str,
    reporter: Reporter | None = None,
    *,
    root: Path | None = None,
    check: RemoteCheck | None = None,
) -> Result:
    """`invoke validate --image-id ami-...`: launch it, run the image suite, clean up."""
    rep = reporter or Reporter(quiet=True)
    e = _env(env, root)
    aws = aws_settings(e)
    reg = registry_for(e)
    subnet = validation_subnet(e)
    rec = reg.get(image_id)
    if e.settings.target == "sandbox":
        check = check or SandboxCheck(str(rec.extra.get("local_id", "")))
    with tempfile.TemporaryDirectory(prefix="goldenimage-validate-") as work:
        if check is None:
            built = reg.manifest(image_id).get("created") or rec.created
            expect = {"image_name": rec.name, "image_id": str(rec.extra.get("local_id") or rec.id),
                      "fingerprint": rec.fingerprint, "build_time": str(built)}
            check = TestinfraCheck(e.root / "tests" / "image", expect=expect, work=Path(work),
                                   boot_timeout=aws.validation.boot_timeout)
        result = validate_ami(
            reg.clients,
            image_id,
            subnet=subnet,
            check=check,
            reporter=rep,
            instance_type=aws.validation.instance_type,
            ssh_user=aws.validation.ssh_user,
            ssh_cidrs=aws.validation.ssh_cidrs or None,
            registry=reg,
        )
    return {"env": e.name, **result}


def human_images(result: Result) -> list[str]:
    rows = result["images"]
    if not rows:
        return [f"no images in {result['env']} ({result['region']})"]
    lines = [f"{'ID':<22} {'NAME':<10} {'STATUS':<11} {'CREATED':<20} {'FINGERPRINT':<20} CHANNELS"]
    for r in rows:
        fp = r["fingerprint"].removeprefix("sha256:")[:16]
        lines.append(
            f"{r['id']:<22} {r['name']:<10} {r['status']:<11} {r['created']:<20} "
            f"{fp:<20} {','.join(r['channels']) or '-'}"
        )
    return lines


def human_promote(result: Result) -> list[str]:
    if not result["changed"]:
        return [f"{result['image']}/{result['channel']} already points at {result['image_id']}"]
    prev = result["previous"] or "nothing"
    return [
        f"{result['image']}/{result['channel']}: {prev} -> {result['image_id']} "
        f"(version {result.get('version')}, {result['parameter']})"
    ]


def human_revoke(result: Result) -> list[str]:
    lines = [
        f"revoked {result['image_id']} ({result['image']}): {result['reason']}",
        f"  deprecation: {result['deprecation']}",
    ]
    for ch, ami in sorted(result["channels_moved"].items()):
        lines.append(f"  channel {result['image']}/{ch} moved back to {ami}")
    for ch in result["channels_left"]:
        lines.append(f"  channel {result['image']}/{ch} still names it: promote a new image")
    return lines

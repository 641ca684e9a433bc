"""`invoke bake` for `target: aws`: the amazon-ebs build, validation of the AMI, its status.

base (resolve the base AMI with boto3) → fingerprint (it holds that AMI id) → skip when a
validated AMI has the fingerprint → `packer build -only=amazon-ebs.aws` → launch the new
AMI and run `tests/image` against it → tag it `validated` (or `quarantined`) in every
region it was copied to.

Nothing half-done is usable: every AMI the build makes carries `goldenimage:status=
building` until the last step, and lookups, promote and channels only take `validated`.
A bake that fails or is interrupted after Packer made the AMIs deregisters them (and
their snapshots) in every region; an interrupted Packer cleans up its own build instance,
key pair and security group, and an interrupted validation its own (aws/validate.py). A
validation whose checks *fail* keeps the AMIs, quarantined, for the post-mortem.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

from .. import fingerprint
from ..adapters.packer import read_manifest
from ..bake import NewImage, Tools, fingerprint_extra, git_state, logs_kept_on_failure, packer_build
from ..errors import BuildFailed, ValidationFailed
from ..fsutil import file_lock
from ..models import TAG, ImageRecord
from ..paths import store_dir
from ..progress import Reporter
from ..settings import Environment
from ..store import LocalStore
from .ami import packer_vars, resolve_base_ami
from .clients import Clients
from .commands import validation_subnet
from .config import aws_settings
from .context import clients_for, registry_for
from .registry import AwsRegistry
from .validate import RemoteCheck, TestinfraCheck, validate_ami

SOURCE = "amazon-ebs.aws"
PACKER_GRACE = 600.0  # an interrupted Packer terminates its instance and waits for it
_ARTIFACT = re.compile(r"^([a-z0-9-]+):(ami-[0-9a-f]+)$")


def parse_artifact(artifact_id: str) -> dict[str, str]:
    """Packer's amazon artifact id `eu-west-1:ami-1,us-east-1:ami-2` as {region: ami}."""
    out: dict[str, str] = {}
    for part in filter(None, artifact_id.split(",")):
        m = _ARTIFACT.match(part.strip())
        if not m:
            raise BuildFailed(f"packer manifest: unexpected artifact id part {part!r}")
        out[m[1]] = m[2]
    if not out:
        raise BuildFailed("packer manifest: the build recorded no AMI")
    return out


def bake_ami(
    env: Environment,
    name: str,
    force: bool,
    reporter: Reporter,
    tools: Tools,
    *,
    clients: Clients | None = None,
    check: RemoteCheck | None = None,
) -> dict[str, Any]:
    """Bake `name` as an AMI in the environment's account; the result dict of `invoke bake`."""
    aws = aws_settings(env)
    c = clients or clients_for(env)
    reg = registry_for(env, clients=c)
    region = c.ctx.region
    store = LocalStore(store_dir())  # the bake's lock, workspace and kept logs
    result: dict[str, Any] = {"image": name, "env": env.name, "skipped": False, "region": region}

    def waiting() -> None:
        reporter.info(f"another bake of {name!r} is running; waiting for it to finish")

    with file_lock(store.root / "locks" / f"{env.name}-{name}.lock", on_wait=waiting):
        with reporter.phase("base", "resolve the base AMI"):
            base = resolve_base_ami(c, aws.base_ami)
            reporter.info(f"    base {base['id']} ({base['name'] or 'unnamed'}) in {region}")
        result["base_ami"] = base["id"]

        with reporter.phase("fingerprint"):
            inputs = fingerprint.collect(env.root, env, name, extra=fingerprint_extra(
                f"ami:{region}:{base['id']}", tools.packer.version_text, tools.ansible))
            fp = fingerprint.compute(inputs)
            reporter.info(f"    fingerprint {fp}")
        result["fingerprint"] = fp

        if not force:
            hit = reg.find_by_fingerprint(name, fp)
            if hit is not None:
                reporter.info(f"up to date: {hit.id}")
                result.update(skipped=True, image_id=hit.id, status=hit.status,
                              artifact=hit.artifact, durations=reporter.durations)
                return result

        with store.workspace() as ws, logs_kept_on_failure(store, ws, lambda: str(result.get("local_id", "unknown"))):
            amis: dict[str, str] = {}
            try:
                _bake_in(env, name, base, fp, inputs, tools, c, reg, ws, reporter, result, amis, check)
            except BaseException:
                if amis and not result.get("status"):
                    _discard(c, amis, reporter)
                raise
            logs = store.root / "logs" / result["local_id"]
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ws / "image" / "build.log", logs / "build.log")
            result["logs"] = str(logs)
    if result["status"] != "validated":
        exc = ValidationFailed(
            f"image {result['image_id']} failed validation ({len(result['failures'])} failing checks); "
            f"quarantined: tagged {TAG}status=quarantined in {', '.join(sorted(result['amis']))}",
            result["failures"],
        )
        exc.result = dict(result)
        raise exc
    return result


def _bake_in(
    env: Environment, name: str, base: dict[str, str], fp: str, inputs: list[fingerprint.FingerprintInput],
    tools: Tools, c: Clients, reg: AwsRegistry, ws: Path, reporter: Reporter, result: dict[str, Any],
    amis: dict[str, str], check: RemoteCheck | None,
) -> None:
    aws = aws_settings(env)
    img = NewImage.start(name, fp)
    image_id, build_time = img.id, img.build_time
    result["local_id"] = image_id
    git = git_state(env.root)
    (ws / "image").mkdir()

    with reporter.phase("build", f"packer build of {name} ({image_id}) in {c.ctx.region}"):
        try:
            packer_build(env, img, tools, ws, SOURCE, reporter, grace=PACKER_GRACE, **packer_vars(
                env, base, image=name, image_id=image_id, fingerprint=fp, git_commit=git.get("commit") or ""))
        finally:
            # the manifest exists once Packer made the AMIs: they are ours to remove on failure
            if (ws / "packer-manifest.json").is_file():
                amis.update(parse_artifact(str(read_manifest(ws / "packer-manifest.json").get("artifact_id", ""))))
        if c.ctx.region not in amis:
            raise BuildFailed(f"packer made no AMI in {c.ctx.region} (made: {amis})")
        home = amis[c.ctx.region]
        result.update(image_id=home, amis=dict(amis), artifact=f"{c.ctx.region}:{home}")
        reporter.info(f"    built {', '.join(f'{r}:{a}' for r, a in sorted(amis.items()))}")

    subnet = validation_subnet(env)
    with reporter.phase("validate", f"launch {home} and run tests/image"):
        check = check or TestinfraCheck(env.root / "tests" / "image", expect=img.facts(), work=ws / "validate",
                                        boot_timeout=aws.validation.boot_timeout)
        try:
            validated = validate_ami(
                c, home, subnet=subnet, check=check, reporter=reporter,
                instance_type=aws.validation.instance_type, ssh_user=aws.validation.ssh_user,
                ssh_cidrs=aws.validation.ssh_cidrs or None, registry=reg)
            failures: list[str] = []
        except ValidationFailed as exc:
            validated, failures = exc.result, list(exc.failures) or [exc.message]
    status = "quarantined" if failures else "validated"
    result.update(failures=failures, validation=validated)

    with reporter.phase("register", f"{status}: {home}"):
        manifest = {
            "id": image_id, "name": name, "env": env.name, "fingerprint": fp,
            "fingerprint_inputs": fingerprint.as_manifest(inputs), "created": build_time, "status": status,
            "ami_id": home, "amis": dict(amis), "base_ami": base["id"], "base": base,
            "git_commit": git.get("commit") or "", "git": git, "tools": tools.versions(),
            "validation": {"status": status, "failures": failures,
                           "instance": validated.get("instance_id"), "cleaned_up": validated.get("cleaned_up")},
            "durations": dict(reporter.durations),
        }
        record = ImageRecord(id=image_id, name=name, env=env.name, fingerprint=fp, created=build_time,
                             status=status, artifact=f"{c.ctx.region}:{home}")
        tags = [{"Key": TAG + "status", "Value": status}]
        for region, ami in sorted(amis.items()):  # the copies first: the home AMI is what lookups see
            if region != c.ctx.region:
                _in_region(c, region).ec2.create_tags(Resources=[ami], Tags=tags)
        reg.put(record, manifest)
    result.update(status=status, durations=reporter.durations)


def _in_region(c: Clients, region: str) -> Clients:
    return c if region == c.ctx.region else Clients(dataclasses.replace(c.ctx, region=region))


def _discard(c: Clients, amis: dict[str, str], reporter: Reporter) -> None:
    """Deregister the AMIs of a bake that did not finish, with their snapshots."""
    for region, ami in sorted(amis.items()):
        reporter.info(f"    removing {region}:{ami} (the bake did not finish)")
        reg = AwsRegistry(_in_region(c, region), env="")
        try:
            reg.discard(ami)
        except Exception as exc:  # keep removing the others; say what is left
            reporter.warn(f"could not remove {region}:{ami}: {exc} (tagged {TAG}status=building)")

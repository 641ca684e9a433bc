"""Target `aws`: Packer's amazon-ebs source, validation on an instance, AMIs and SSM channels.

base (resolve the base AMI with boto3) -> fingerprint (it holds that AMI id) -> skip when a
validated AMI has the fingerprint -> `packer build -only=amazon-ebs.aws` -> launch the new
AMI and run the image's suites against it -> tag it `validated` (or `quarantined`) in every
region it was copied to.

Nothing half-done is usable: every AMI the build makes carries `goldenimage:status=
building` until the last step, and lookups, promote and channels only take `validated`.
A bake that fails or is interrupted after Packer made the AMIs deregisters them (and
their snapshots) in every region; an interrupted Packer cleans up its own build instance,
key pair and security group, and an interrupted validation its own (aws/validate.py). A
validation whose checks *fail* keeps the AMIs, quarantined, for the post-mortem.

`AwsSide` is what the aws and sandbox targets share: the AMI registry, `invoke validate`
of an AMI and where validation launches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped, unused-ignore]
from botocore.parsers import ResponseParserError  # type: ignore[import-untyped, unused-ignore]

from .. import ancestry, attestation, fingerprint, retention, trust
from ..adapters.packer import read_manifest
from ..build import ID_WILDCARD, TIMINGS, Tools, detect_tools, git_state, packer_build
from ..compliance import REPORT_FILE
from ..errors import BuildFailed, ConfigError, NotFoundError, OperationFailed, ValidationFailed
from ..locks import Lock
from ..models import ENV_TAG, PARENT_ID_TAG, QUARANTINED, STATUS_TAG, TAG, VALIDATED, ImageRecord
from ..paths import store_dir
from ..progress import Reporter
from ..sections import AwsSettings, BaseAmiSpec
from ..settings import Environment
from ..targets import Base, Checked, GcWorld, ImageRegistry, Job, Result, Target
from . import collect, leftovers, protection, references
from .ami import ami_name, packer_vars, resolve_base_ami
from .clients import AwsContext, Clients
from .collect import GC_STAGE_AT_TAG, GC_STAGE_TAG
from .errors import aws_errors, error_code
from .lock import ParameterLock
from .registry import AwsRegistry
from .validate import RemoteCheck, TestinfraCheck, validate_ami

SOURCE = "amazon-ebs.aws"
# how an endpoint without DescribeImageReferences answers it: an error, or (moto) an HTTP 500 page
NO_REFERENCES_API = (ClientError, BotoCoreError, ResponseParserError, NotImplementedError)
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




class AwsSide(Target):
    """The AWS-side half of the aws and sandbox targets."""

    gc_applies = True
    gc_batch = 20  # one fresh look per 20 steps (DescribeImageReferences: 10 AMIs a request)

    def __init__(self, env: Environment, *, clients: Clients | None = None,
                 check: RemoteCheck | None = None) -> None:
        super().__init__(env)
        self._clients = clients
        self._check = check

    @property
    def aws(self) -> AwsSettings:
        return self.env.aws

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(self.aws_context())
        return self._clients

    def registry(self) -> AwsRegistry:
        c = self.clients
        return AwsRegistry(
            c, self.env.name, prefix=self.aws.parameter_prefix, channel_data_type=self.aws.channel_data_type,
            # moto (the sandbox) has no EnableImageDeprecation
            supports_deprecation=self.aws.deprecate_revoked and not c.ctx.is_sandbox,
            copy_regions=self.copy_regions(),
        )

    def aws_registry(self, clients: Clients | None = None) -> AwsRegistry:
        if clients is not None:
            self._clients = clients
        return self.registry()

    def listing(self) -> Result:
        return {"target": self.name, "region": self.clients.ctx.region}

    def ami_name_pattern(self, name: str) -> str:
        """The names this target's bakes give the AMIs of image `name`, with EC2's name
        wildcards (`invoke allowed-amis`)."""
        return ami_name(f"{name}-{ID_WILDCARD}")

    def fleet(self) -> list[Result]:
        """Each group of `extra.rotation.groups` as AWS has it now, with the real `ImageId`
        of every instance (`describe_instances`: what the instance was launched from)."""
        rows: list[Result] = []
        c = self.clients
        for key, policy in sorted(self.env.rotation.items()):
            row: Result = {"group": key, "asg": policy.asg or key, "image": policy.image, "channel": policy.channel,
                           "desired": None, "min": None, "max": None, "instances": [], "error": ""}
            rows.append(row)
            with aws_errors(c):
                found = c.autoscaling.describe_auto_scaling_groups(
                    AutoScalingGroupNames=[row["asg"]]).get("AutoScalingGroups", [])
                if not found:
                    row["error"] = f"no auto-scaling group {row['asg']!r} in {c.ctx.region}"
                    continue
                g = found[0]
                row.update(desired=g.get("DesiredCapacity"), min=g.get("MinSize"), max=g.get("MaxSize"))
                members = {i["InstanceId"]: i for i in g.get("Instances", [])}
                images: dict[str, str] = {}
                if members:
                    pages = c.ec2.get_paginator("describe_instances").paginate(InstanceIds=sorted(members))
                    images = {inst["InstanceId"]: inst.get("ImageId", "")
                              for page in pages for r in page.get("Reservations", []) for inst in r.get("Instances", [])}
                row["instances"] = [{"id": iid, "image_id": images.get(iid, ""),
                                     "lifecycle": m.get("LifecycleState", ""), "health": m.get("HealthStatus", "")}
                                    for iid, m in sorted(members.items())]
        return rows

    # -- retention (invoke gc) ---------------------------------------------------------------
    def gc_world(self) -> GcWorld:
        """The environment's AMIs in its region (disabled ones too), what uses any AMI there
        (`aws.references`, each source listed once), every channel's history, and what a
        killed validation or build, or an aborted rotation, left there (`aws.leftovers`, from
        the same listing). Public AMIs and AMIs shared through RAM are references too (who
        else may launch an AMI the plan would change: `gc_shares`)."""
        reg = self.registry()
        ec2 = self.clients.ec2
        pages = ec2.get_paginator("describe_images").paginate(
            Owners=["self"], IncludeDisabled=True, Filters=[{"Name": f"tag:{ENV_TAG}", "Values": [self.env.name]}])
        images, local_ids, records, shared = [], {}, [], []
        for page in pages:
            for img in page.get("Images", []):
                rec = reg.record(img)
                records.append(rec.summary())
                if rec.extra.get("local_id"):
                    local_ids[str(rec.extra["local_id"])] = rec.id
                shared += references.public(img)
                one = _retention_image(rec, img)
                if one is not None:
                    images.append(one)
        channels = self._channels(reg, sorted(self.env.settings.images))
        listing = references.Listing(self.clients)  # one listing for the references and the leftovers
        ram, note = references.ram_shares(self.clients)
        uses = [*self.gc_references([i.id for i in images], local_ids, listing), *_children(records), *shared, *ram]
        self._gathered = listing
        self._ram = note is None
        return GcWorld(images, uses, channels,
                       leftovers.gather(self.clients, listing),
                       {"region": self.clients.ctx.region, "copy_regions": self.copy_regions(),
                        **({"notes": [note]} if note else {})})

    def _channels(self, reg: AwsRegistry, names: Iterable[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return {name: {c: reg.history(name, c) for c in sorted(reg.channels(name))} for name in names}

    def gc_shares(self, decisions: list[retention.Decision]) -> list[retention.Reference]:
        """The launch permissions of each image the plan would change (DescribeImageAttribute:
        other accounts, organisations, OUs, the public), one request per image; not of a
        disabled one (disabling an AMI takes all its launch permissions away)."""
        return references.launch_permissions(
            self.clients, [d.image_id for d in decisions if d.stage != retention.DISABLED])

    def copy_regions(self) -> list[str]:
        """The other regions the environment's AMIs are copied to (extra.aws.ami_regions)."""
        home = self.clients.ctx.region
        return sorted({r for r in self.aws.build.ami_regions if r != home})

    def copies(self, region: str, local_ids: dict[str, str]) -> dict[str, str]:
        """{copy AMI id in `region`: its home AMI id}: the same image (the same
        `local-id` tag) copied there, disabled copies too."""
        pages = _in_region(self.clients, region).ec2.get_paginator("describe_images").paginate(
            Owners=["self"], IncludeDisabled=True, Filters=[{"Name": f"tag:{ENV_TAG}", "Values": [self.env.name]}])
        out = {}
        for page in pages:
            for img in page.get("Images", []):
                tags = {t["Key"]: t["Value"] for t in img.get("Tags", [])}
                home = local_ids.get(tags.get(TAG + "local-id", ""))
                if home:
                    out[img["ImageId"]] = home
        return out

    def _everywhere(self, image_id: str, img: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """[(region, AMI)] of the image: its copies in the copy regions, then the home AMI
        (`img`: the home AMI as just described, else described now)."""
        img = img or collect.image(self.clients, image_id)
        if img is None:
            raise NotFoundError(f"{image_id} is not in {self.clients.ctx.region} (deleted since the plan?)")
        local_id = {t["Key"]: t["Value"] for t in img.get("Tags", [])}.get(TAG + "local-id", "")
        out = []
        if local_id:
            for region in self.copy_regions():
                out += [(region, copy) for copy in sorted(self.copies(region, {local_id: image_id}))]
        return [*out, (self.clients.ctx.region, image_id)]

    def gc_recheck(self, decisions: list[retention.Decision]) -> Fresh:
        """One fresh look at the batch's AMIs right before their steps, at the cost of what
        could have changed since the run's gathering, not of everything: the AMIs themselves
        (gone? their stage; public?), their launch permissions, images built on them, the channels of their names, their uses
        that may have appeared since (`references.recent`: DescribeImageReferences where AWS
        answers it, else instances of these AMIs, launch-template versions added since,
        parameters), RAM shares, and every use of their copies in the copy regions."""
        fresh = self._fresh(sorted({d.image_id for d in decisions}))
        if any(d.action == retention.DELETE for d in decisions):  # one listing for the batch's deletes
            fresh = dataclasses.replace(fresh, snapshots=collect.snapshot_map(self.clients))
        return fresh

    # named apart from LocalTarget._still_used: the sandbox inherits both, the local one first
    def _ami_still_used(self, image_id: str) -> str | None:
        """Why the image must not be touched now (`gc_recheck` of it alone); None: unused."""
        return self._fresh([image_id]).used.get(image_id)

    def _fresh(self, ids: list[str]) -> Fresh:
        reg = self.registry()
        ec2 = self.clients.ec2
        states: dict[str, dict[str, Any]] = {}
        for page in ec2.get_paginator("describe_images").paginate(
                Owners=["self"], IncludeDisabled=True, Filters=[{"Name": "image-id", "Values": ids}]):
            for img in page.get("Images", []):
                states[img["ImageId"]] = img
        records = {i: reg.record(img) for i, img in states.items()}
        children = []
        for page in ec2.get_paginator("describe_images").paginate(
                Owners=["self"], IncludeDisabled=True, Filters=[{"Name": f"tag:{PARENT_ID_TAG}", "Values": ids}]):
            children += [reg.record(img).summary() for img in page.get("Images", [])]
        names = sorted({r.name for r in records.values()})
        channels = self._channels(reg, [n for n in names if n in self.env.settings.images])
        since = getattr(self, "_gathered", None) or references.Listing(self.clients)
        seen = references.latest_versions(since)
        present = sorted(states)
        uses = self._recent(present, since, seen) if present else []
        uses += [s for i in present for s in references.public(states[i])]
        may_go = set(self.env.retention.shared_may_go)
        uses += references.launch_permissions(  # shared since the gathering (a disabled AMI cannot be)
            self.clients, [i for i in present if states[i].get("State") != "disabled"
                           and records[i].name not in may_go])
        if getattr(self, "_ram", True):
            uses += references.ram_shares(self.clients)[0]
        local_ids = {str(r.extra["local_id"]): i for i, r in records.items() if r.extra.get("local_id")}
        for region in self.copy_regions():
            copies = self.copies(region, local_ids)
            for r in references.gather(_in_region(self.clients, region), sorted(copies)):
                if r.image_id in copies:
                    uses.append(retention.Reference(copies[r.image_id], r.kind,
                                                    f"{r.where} in {region} ({r.image_id})"))
        fresh = [one for r, img in ((records[i], states[i]) for i in present)
                 if (one := _retention_image(r, img, keep_undated=True)) is not None]
        used = retention.protections(fresh, [*uses, *_children(children)], channels,
                                     self.env.retention.shared_may_go)
        return Fresh(states, used, frozenset(ids), seen=seen)

    def _recent(self, image_ids: list[str], since: references.Listing, seen: dict[str, int],
                ) -> list[retention.Reference]:
        """`references.recent`, with AWS's DescribeImageReferences where it answers (never
        tried on the sandbox: moto lacks it); an endpoint that lacks it is not asked again."""
        if self._references_api():
            try:
                return references.recent(self.clients, image_ids, since, seen, references_api=True)
            except NO_REFERENCES_API:
                self._no_references_api = True
        return references.recent(self.clients, image_ids, since, seen)

    def _references_api(self) -> bool:
        return not self.clients.ctx.is_sandbox and not getattr(self, "_no_references_api", False)

    def _step_check(self, decision: retention.Decision, fresh: Fresh) -> str | None:
        """Right before a destructive step (disable, delete): what could have appeared since
        the batch's look, cheaply -- DescribeImageReferences of this AMI where AWS answers
        it, else the launch-template versions added since the last look and (before a
        disable: a disabled AMI cannot be launched) this AMI's instances; and before a
        disable, its launch permissions now (unless its name is in shared_may_go)."""
        image_id = decision.image_id
        found: list[retention.Reference] = []
        if self._references_api():
            try:
                found = references.second_opinion(self.clients, [image_id], force=True)
            except NO_REFERENCES_API:
                self._no_references_api = True
        if not self._references_api():
            found = references.since_last_look(self.clients, sorted(fresh.asked), fresh.seen,
                                               instances_too=decision.action == retention.DISABLE)
            found = [r for r in found if r.image_id == image_id or r.image_id in fresh.asked]
            found = [r for r in found if r.kind != "instance" or r.image_id == image_id]
        for r in found:
            fresh.used.setdefault(r.image_id, r.reason())
        if fresh.used.get(image_id):
            return fresh.used[image_id]
        if decision.action == retention.DISABLE and decision.name not in self.env.retention.shared_may_go:
            shared = references.launch_permissions(self.clients, [image_id])
            if shared:
                return shared[0].reason()
        return None

    def gc_apply(self, decision: retention.Decision, now: datetime, fresh: Any = None) -> Result:
        """One stage for every copy of the image, right after a fresh look (`fresh`, the
        batch's `gc_recheck`; else one for this image alone) and its launch permissions
        now: an image used since the plan, shared (unless its name is in shared_may_go), or
        whose stage moved since (restored) is skipped; one that is gone is `gone`. A failing
        AWS call is an OperationFailed naming the region and AMI."""
        image_id, action = decision.image_id, decision.action
        if action not in (retention.DEPRECATE, retention.DISABLE, retention.DELETE):
            raise ValueError(f"not an action to carry out: {action}")
        try:
            if not isinstance(fresh, Fresh) or image_id not in fresh.asked:
                fresh = self.gc_recheck([decision])
            return self._gc_step(decision, now, fresh)
        except (ClientError, BotoCoreError) as exc:  # a failed read: nothing of this image was changed
            raise OperationFailed(f"{action} {image_id}: {exc}") from exc

    def _gc_step(self, decision: retention.Decision, now: datetime, fresh: Fresh) -> Result:
        image_id, action = decision.image_id, decision.action
        home = fresh.states.get(image_id)
        if home is None:
            return {"done": False, "gone": f"{image_id} is no longer registered in {self.clients.ctx.region}"}
        why = fresh.used.get(image_id)
        if why:
            return {"done": False, "skipped": f"in use now: {why}"}
        tags = {t["Key"]: t["Value"] for t in home.get("Tags", [])}
        now_stage = retention.DISABLED if home.get("State") == "disabled" else (tags.get(GC_STAGE_TAG) or None)
        if now_stage != decision.stage:
            return {"done": False, "skipped": f"its stage is {now_stage or 'none'} now, "
                                              f"not {decision.stage or 'none'} as planned"}
        if action == retention.DELETE and home.get("State") != "disabled":
            return {"done": False, "skipped": "not disabled: only a disabled AMI is deleted"}
        if action in (retention.DISABLE, retention.DELETE):
            why = self._step_check(decision, fresh)
            if why:
                return {"done": False, "skipped": f"in use now: {why}"}
        places = self._everywhere(image_id, home)
        if action == retention.DELETE:
            waiting = self._protection_wait(image_id, home, places, now)
            if waiting:
                return waiting
        done: list[str] = []
        for region, ami in places:
            c = _in_region(self.clients, region)
            try:
                if action == retention.DEPRECATE:
                    collect.deprecate(c, ami, now)
                elif action == retention.DISABLE:
                    collect.disable(c, ami, now, tags if ami == image_id else None)
                    # unused and on its way out: its deregistration protection goes now, so that
                    # the cooldown (24 h) runs while the image waits in `disabled`
                    img = home if ami == image_id else collect.image(c, ami)
                    if img is not None:
                        protection.unprotect(c, img, now)
                else:
                    collect.deregister(c, ami, fresh.snapshots if c is self.clients else None)
            except ClientError as exc:
                if (ami == image_id and not done and error_code(exc).startswith("InvalidAMIID")
                        and collect.image(c, ami) is None):  # removed by someone else since the look
                    return {"done": False, "gone": f"{image_id} is no longer registered in {region}"}
                raise OperationFailed(f"{action} {region}:{ami}: {exc}"
                                      + (f" (done before it: {', '.join(done)})" if done else "")) from exc
            except BotoCoreError as exc:
                raise OperationFailed(f"{action} {region}:{ami}: {exc}"
                                      + (f" (done before it: {', '.join(done)})" if done else "")) from exc
            done.append(f"{region}:{ami}")
        if action == retention.DELETE:  # the registry's parameters of the image: its manifest and SBOM parts
            try:
                forgotten = self.registry().forget(decision.name, image_id)
            except (ClientError, BotoCoreError) as exc:
                raise OperationFailed(f"delete {image_id}: deregistered ({', '.join(done)}), but its "
                                      f"parameters were not deleted: {exc}") from exc
            return {"done": True, "where": done, **({"parameters": forgotten} if forgotten else {})}
        return {"done": True, "where": done}

    def _protection_wait(self, image_id: str, home: dict[str, Any], places: list[tuple[str, str]],
                         now: datetime) -> Result | None:
        """Before a delete: every copy's deregistration protection. One still on (an image
        disabled before gc took protection off, or protected again since) is turned off now;
        while any copy is in its cooldown the image is `waiting` (not a failure), with the time
        it becomes deletable."""
        why: list[str] = []
        until: list[datetime] = []
        for region, ami in places:
            c = _in_region(self.clients, region)
            img = home if ami == image_id else collect.image(c, ami)
            if img is None:
                continue
            try:
                off = protection.unprotect(c, img, now)
            except (ClientError, BotoCoreError) as exc:
                raise OperationFailed(f"delete {region}:{ami}: turning deregistration protection off: {exc}") from exc
            if off is not None:
                img = collect.image(c, ami) or img
            blocked = protection.blocked(img, now)
            if blocked:
                why.append(f"{region}:{ami}: {blocked}")
                until.append(protection.deletable_at(img) or now)
        if not why:
            return None
        return {"done": False, "waiting": "; ".join(why), "deletable_at": protection.stamp(max(until))}

    def gc_lock(self, command: str) -> Lock:
        """An SSM parameter below the toolkit's prefix, per environment (`aws.lock`): it
        holds across processes and machines that share the account; with shared state
        (`state:`), the lease there instead, which expires when its holder dies."""
        if self.shared_state() is not None:
            return self.lease(f"gc/{self.env.name}", command)
        return ParameterLock(self.clients, f"{self.aws.parameter_prefix.rstrip('/')}/_locks/gc/{self.env.name}",
                             command)

    def gc_restore(self, image_id: str) -> Result:
        """Enable the image again, take back its deprecation and forget its stage, in every
        region it was copied to. `stage`: the stage it had (None: none)."""
        stage = None
        for region, ami in self._everywhere(image_id):
            had = collect.restore(_in_region(self.clients, region), ami)
            if region == self.clients.ctx.region:
                stage = had
        return {"stage": stage}

    def gc_remove_leftover(self, decision: retention.Decision) -> Result:
        """Remove one leftover (an instance, key pair or security group of a killed validation
        or build; a rotation's launch-template version), gathered again right before: one
        that became used since the plan is skipped (`aws.leftovers.remove`)."""
        return leftovers.remove(self.clients, decision)

    def gc_references(self, image_ids: list[str], local_ids: dict[str, str],
                      listing: references.Listing | None = None) -> list[retention.Reference]:
        """What uses the images in the home region, and what uses any of their copies in the
        copy regions (counted against the home AMI: an image goes only when every copy in
        every region is unreferenced). `local_ids`: {local-id tag: home AMI id}; `listing`:
        the run's listing of the home region (else listed now)."""
        refs = references.gather(self.clients, image_ids, listing)
        for region in self.copy_regions():
            copies = self.copies(region, local_ids)
            for r in references.gather(_in_region(self.clients, region), sorted(copies)):
                if r.image_id in copies:
                    refs.append(retention.Reference(copies[r.image_id], r.kind, f"{r.where} in {region} ({r.image_id})"))
        return refs

    def default_subnet(self) -> str | None:
        """Where validation launches when the settings name no subnet."""
        return None

    def validation_subnet(self) -> str:
        """extra.aws.validation.subnet, the first of extra.aws.subnets, the build subnet, or
        the target's default."""
        aws = self.aws
        subnet = aws.validation.subnet or (aws.subnets[0] if aws.subnets else None) or aws.build.subnet
        subnet = subnet or self.default_subnet()
        if subnet is None:
            raise ConfigError(
                f"{self.env.rel(self.env.settings_file)}: field extra.aws.validation.subnet: "
                "a subnet to launch the validation instance in is required"
            )
        return subnet

    def remote_check(self, expect: dict[str, Any], work: Path) -> RemoteCheck:
        """What runs against a launched AMI: the image suite over SSH, expecting `expect`."""
        if self._check:
            return self._check
        note = self.env.suite_note(str(expect["image_name"]))
        return TestinfraCheck(self.env.suites(str(expect["image_name"])), root=self.env.root,
                              expect=expect, work=work, note=note,
                              boot_timeout=self.aws.validation.boot_timeout,
                              compliance=self.env.compliance(str(expect["image_name"])))

    def launch_and_check(self, image_id: str, check: RemoteCheck, reporter: Reporter,
                         reg: AwsRegistry) -> dict[str, Any]:
        v = self.aws.validation
        return validate_ami(reg.clients, image_id, subnet=self.validation_subnet(), check=check,
                            reporter=reporter, instance_type=v.instance_type, ssh_user=v.ssh_user,
                            ssh_cidrs=v.ssh_cidrs or None, registry=reg)

    # -- trust: an AMI's attestation, beside its manifest in SSM -------------------------------
    def kms_client(self) -> Any:
        return self.clients.kms

    def evidence(self, image_id: str, registry: ImageRegistry | None = None) -> trust.Evidence:
        """The AMI's envelope (SSM) and what the AMI is: its id, region and snapshots now;
        its parent's AMI and that one's envelope digest."""
        reg: Any = registry if registry is not None else self.registry()
        rec = reg.get(image_id)
        _, parent_ami, parent_att = _parent_attestation(reg, reg.manifest(image_id))
        report = reg.compliance_report(rec.name, image_id)
        return trust.Evidence(
            attestation.Expect(image_id=image_id, name=rec.name, env=self.env.name, ami=image_id,
                               region=self.clients.ctx.region, snapshots=tuple(reg.snapshots(image_id)),
                               parent_id=parent_ami, parent_attestation=parent_att,
                               report_sha256=hashlib.sha256(report).hexdigest() if report is not None else None),
            reg.attestation(rec.name, image_id), f"SSM {reg.attestation_path(rec.name, image_id)}")

    def sign_ami(self, reg: AwsRegistry, name: str, ami: str, manifest: dict[str, Any],
                 qcow2_sha256: str | None, junit_sha256: str | None, reporter: Reporter) -> str:
        """Sign the attestation of a validated AMI and keep it in SSM beside its manifest;
        the envelope's sha256."""
        parent, parent_ami, parent_att = _parent_attestation(reg, manifest)
        doc = attestation.statement(
            {**manifest, "id": ami, "parent": {**parent, "id": parent_ami} if parent else None},
            attestation.ami_subject(ami, reg.clients.ctx.region, reg.snapshots(ami), qcow2_sha256),
            parent_attestation=parent_att, junit_sha256=junit_sha256)
        envelope = trust.sign(self.env, doc, reporter, self.kms_client)
        parts = reg.put_attestation(name, ami, envelope)
        digest = str(trust.envelope_digest(envelope))
        reporter.info(f"    signed the attestation of {ami} ({parts} SSM part{'s' if parts > 1 else ''}, "
                      f"envelope sha256 {digest[:12]}…)")
        return digest

    def keep_report(self, reg: AwsRegistry, name: str, ami: str, report: Path | None, reporter: Reporter) -> None:
        """Keep the compliance audit's report (a file, None: no audit) with the AMI, in SSM."""
        if report is None or not report.is_file():
            return
        parts = reg.put_compliance_report(name, ami, report.read_bytes())
        reporter.info(f"    kept the compliance report of {ami} ({parts} SSM part{'s' if parts > 1 else ''})")

    def validate_image(self, image_id: str, reporter: Reporter) -> Result:
        """`invoke validate --image-id ami-...`: launch it, run the image suite, clean up."""
        reg = self.registry()
        self.validation_subnet()  # a missing subnet is an error before any lookup
        rec = reg.get(image_id)
        with tempfile.TemporaryDirectory(prefix="goldenimage-validate-") as work:
            built = reg.manifest(image_id).get("created") or rec.created
            expect = {"image_name": rec.name, "image_id": str(rec.extra.get("local_id") or rec.id),
                      "fingerprint": rec.fingerprint, "build_time": str(built)}
            result = self.launch_and_check(image_id, self.remote_check(expect, Path(work)), reporter, reg)
        return {"env": self.env.name, **result}


def _parent_attestation(reg: Any, manifest: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """An AMI's parent as its manifest records it, the parent's AMI, and the sha256 of that
    AMI's attestation envelope (None without a parent AMI)."""
    parent = manifest.get("parent") if isinstance(manifest.get("parent"), dict) else None
    parent_ami = _parent_ami(parent)
    digest = trust.envelope_digest(reg.attestation(parent["name"], parent_ami)) if parent and parent_ami else None
    return parent, parent_ami, digest


def _parent_ami(parent: dict[str, Any] | None) -> str | None:
    """The parent's AMI as a manifest records it (the sandbox's `ami`, the aws target's `id`)."""
    if parent is None:
        return None
    ami = parent.get("ami") or parent.get("id")
    return str(ami) if isinstance(ami, str) and ami.startswith("ami-") else None


class AwsTarget(AwsSide):
    name = "aws"

    def aws_context(self) -> AwsContext:
        return AwsContext(region=self.env.region, profile=self.aws.profile, max_attempts=self.aws.max_attempts)

    # -- bake --------------------------------------------------------------------------------
    def detect_tools(self) -> Tools:
        return detect_tools(local=False)

    def resolve_base(self, reporter: Reporter, parent: ImageRecord | None = None) -> Base:
        base: dict[str, Any]
        if parent is None:
            base = resolve_base_ami(self.clients, self.aws.base_ami)
        else:  # the parent's AMI is the source AMI (once its attestation verifies); its tags record the ancestry
            self.require_trusted(parent, reporter, "parent")
            base = {**resolve_base_ami(self.clients, BaseAmiSpec(id=parent.id)),
                    "parent": {"id": parent.id, "name": parent.name, "fingerprint": parent.fingerprint}}
        region = self.clients.ctx.region
        reporter.info(f"    base {base['id']} ({base['name'] or 'unnamed'}) in {region}")
        return Base(f"ami:{region}:{base['id']}", base, {"region": region, "base_ami": base["id"]})

    def parent_base_identity(self, parent: ImageRecord, manifest: dict[str, Any]) -> str:
        return f"ami:{self.clients.ctx.region}:{parent.id}"

    def lookup(self, name: str, fingerprint: str, reporter: Reporter) -> tuple[ImageRecord | None, list[str]]:
        return self.registry().find_by_fingerprint(name, fingerprint), []

    def started(self, job: Job) -> Result:
        return {"local_id": job.image.id}

    def build(self, job: Job, reporter: Reporter) -> Result:
        c, img, ws = self.clients, job.image, job.ws
        amis: dict[str, str] = job.artifacts.setdefault("amis", {})
        git = job.artifacts["git"] = git_state(self.env.root)
        (ws / "image").mkdir()
        with reporter.phase("build", f"packer build of {img.name} ({img.id}) in {c.ctx.region}"):
            try:
                job.artifacts["timings"] = packer_build(
                    self.env, img, job.tools, ws, SOURCE, reporter, grace=PACKER_GRACE, **packer_vars(
                    self.env, job.base.details, image=img.name, image_id=img.id, fingerprint=img.fingerprint,
                    git_commit=git.get("commit") or ""))
            finally:
                # the manifest exists once Packer made the AMIs: they are ours to remove on failure
                if (ws / "packer-manifest.json").is_file():
                    amis.update(parse_artifact(str(read_manifest(ws / "packer-manifest.json").get("artifact_id", ""))))
            if c.ctx.region not in amis:
                raise BuildFailed(f"packer made no AMI in {c.ctx.region} (made: {amis})")
            home = amis[c.ctx.region]
            reporter.info(f"    built {', '.join(f'{r}:{a}' for r, a in sorted(amis.items()))}")
        return {"image_id": home, "amis": dict(amis), "artifact": f"{c.ctx.region}:{home}"}

    def validate(self, job: Job, reporter: Reporter) -> Checked:
        home = job.artifacts["amis"][self.clients.ctx.region]
        reg = self.registry()
        self.validation_subnet()
        with reporter.phase("validate", f"launch {home} and run the image checks"):
            check = self.remote_check(job.image.facts(), job.ws / "validate")
            try:
                validated = self.launch_and_check(home, check, reporter, reg)
                failures: list[str] = []
            except ValidationFailed as exc:
                validated, failures = exc.result, list(exc.failures) or [exc.message]
        return Checked(not failures, failures, validated)

    def register(self, job: Job, checked: Checked, reporter: Reporter) -> Result:
        c, img, amis, git = self.clients, job.image, job.artifacts["amis"], job.artifacts["git"]
        home = amis[c.ctx.region]
        status = VALIDATED if checked.ok else QUARANTINED
        validated = checked.details
        with reporter.phase("register", f"{status}: {home}"):
            base = job.base.details
            manifest = {
                "id": img.id, "name": img.name, "env": self.env.name, "fingerprint": img.fingerprint,
                "fingerprint_inputs": fingerprint.as_manifest(job.inputs), "created": img.build_time,
                "status": status, "ami_id": home, "amis": dict(amis), "base_ami": base["id"], "base": base,
                **({"parent": job.ancestry()} if job.parent else {}),
                "git_commit": git.get("commit") or "", "git": git, "tools": job.tools.versions(),
                "validation": {"status": status, "failures": checked.failures,
                               "instance": validated.get("instance_id"), "cleaned_up": validated.get("cleaned_up")},
                "durations": dict(reporter.durations),
                # the SBOM read on the validation instance (the registry stores it in SSM parts)
                **{k: validated["check"][k] for k in ("packages", "apt_sources", "compliance")
                   if isinstance(validated.get("check"), dict) and k in validated["check"]},
                # the whole record stays with the build's logs; the SSM manifest keeps its gist
                "timings": {k: job.artifacts["timings"][k] for k in ("ansible_seconds", "slowest_tasks")},
            }
            record = ImageRecord(id=img.id, name=img.name, env=self.env.name, fingerprint=img.fingerprint,
                                 created=img.build_time, status=status, artifact=f"{c.ctx.region}:{home}")
            tags = [{"Key": STATUS_TAG, "Value": status}]
            for region, ami in sorted(amis.items()):  # the copies first: the home AMI is what lookups see
                if region != c.ctx.region:
                    _in_region(c, region).ec2.create_tags(Resources=[ami], Tags=tags)
            # the report and the signature first: a validated AMI is never seen without them
            reg = self.registry()
            self.keep_report(reg, img.name, home, job.ws / "validate" / REPORT_FILE, reporter)
            if status == VALIDATED:
                self.sign_ami(reg, img.name, home, manifest, None, None, reporter)
            reg.put(record, manifest)
        job.finished = True
        check = {k: v for k, v in (validated.get("check") or {}).items() if k not in ("packages", "apt_sources")}
        return {"failures": checked.failures, "validation": {**validated, "check": check}, "status": status}

    def discard(self, job: Job, reporter: Reporter) -> None:
        """Deregister the AMIs of a bake that did not finish, with their snapshots, and the
        home AMI's parameters (its report and attestation are written before its manifest)."""
        c = self.clients
        for region, ami in sorted(job.artifacts.get("amis", {}).items()):
            reporter.info(f"    removing {region}:{ami} (the bake did not finish)")
            reg = AwsRegistry(_in_region(c, region), env="")
            try:
                reg.discard(ami)
                if region == c.ctx.region:
                    self.registry().forget(job.image.name, ami)
            except Exception as exc:  # keep removing the others; say what is left
                reporter.warn(f"could not remove {region}:{ami}: {exc} (tagged {STATUS_TAG}=building)")

    def kept_logs(self, job: Job) -> Path | None:
        logs = store_dir() / "logs" / job.image.id
        logs.mkdir(parents=True, exist_ok=True)
        for name in ("build.log", TIMINGS):
            if (job.ws / "image" / name).is_file():
                shutil.copy2(job.ws / "image" / name, logs / name)
        return logs

    def quarantined(self, result: Result) -> str:
        return f"quarantined: tagged {STATUS_TAG}=quarantined in {', '.join(sorted(result['amis']))}"


@dataclasses.dataclass(frozen=True)
class Fresh:
    """A batch's fresh look (`AwsSide.gc_recheck`): {AMI: as described now} (a missing one
    is gone), {AMI: why it must stay}."""

    states: dict[str, dict[str, Any]]
    used: dict[str, str]
    asked: frozenset[str] = frozenset()  # the AMIs it looked at
    snapshots: dict[str, set[str]] | None = None  # {AMI: its snapshots} of the region, for deletes
    seen: dict[str, int] = dataclasses.field(default_factory=dict)  # {template: latest version looked at}


def _retention_image(rec: ImageRecord, img: dict[str, Any], keep_undated: bool = False) -> retention.Image | None:
    """The AMI as retention sees it (None: it does not say when it was made: never collected)."""
    tags = {t["Key"]: t["Value"] for t in img.get("Tags", [])}
    stage = retention.DISABLED if img.get("State") == "disabled" else (tags.get(GC_STAGE_TAG) or None)
    created = retention.parse_time(rec.created)
    if created is None:
        if not keep_undated:
            return None
        created = datetime.now(UTC)
    size = sum(int(m.get("Ebs", {}).get("VolumeSize", 0)) for m in img.get("BlockDeviceMappings", []))
    return retention.Image(
        id=rec.id, name=rec.name, status=rec.status, created=created, stage=stage,
        stage_at=retention.parse_time(tags.get(GC_STAGE_AT_TAG)),
        revoked_at=retention.parse_time(rec.extra.get("revoked_at")), size=size << 30)


def _children(records: Iterable[dict[str, Any]]) -> list[retention.Reference]:
    """A parent AMI is in use while an image built on it is registered (image families)."""
    return [retention.Reference(parent, "parent of", child) for parent, child in ancestry.parent_uses(records)]


def _in_region(c: Clients, region: str) -> Clients:
    return c if region == c.ctx.region else Clients(dataclasses.replace(c.ctx, region=region))

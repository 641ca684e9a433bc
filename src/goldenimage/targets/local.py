"""Target `local`: Packer's qemu source, validation in QEMU, the local image store.

The artifact that is validated is the artifact that is registered: the final qcow2, after
the hygiene role, booted through an overlay with a fresh key.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import ancestry, attestation, drift, fingerprint, requirements, retention, timing, trust
from ..adapters import baseimage, directboot, galaxy, imagefacts, lynis, packer, qemu, testinfra, usage
from ..build import BUILD_USER, TIMINGS, Tools, common_packer_vars, detect_tools, git_state
from ..errors import NotFoundError, TemplateError
from ..fsutil import atomic_write_json, sha256_file, tar_length
from ..models import QUARANTINED, VALIDATED, ImageRecord
from ..paths import base_cache_dir, store_dir
from ..progress import Reporter
from ..settings import Environment
from ..store import LocalStore
from . import Base, Checked, GcWorld, ImageRegistry, Job, Result, Target

FAILED_LOGS = "failed bake logs"
APT_STATE = "apt-state.tar"  # beside a parent's qcow2: the package index its children start from
APT_STATE_DISK = 2 * 2**30  # the (sparse) disk a parent's build writes that index to


class LocalTarget(Target):
    name = "local"
    gc_applies = True

    # opened on first use, not with the target: the shared state may need a server that a
    # command which reads no image (a sandbox's name patterns) does not ask for
    @cached_property
    def store(self) -> LocalStore:
        return LocalStore(store_dir(), self.shared_state())

    @cached_property
    def bases(self) -> baseimage.SharedBases | None:
        shared = self.store.shared
        return baseimage.SharedBases(shared) if shared is not None else None

    # -- registry ----------------------------------------------------------------------------
    def registry(self) -> ImageRegistry:
        return self.store

    def listing(self) -> Result:
        return {"store": str(self.store.root)}

    def fence(self, lease: str, token: int) -> None:
        self.store.fence(lease, token)

    def archive_url(self, url: str) -> str:
        """The images are built and validated on QEMU's user network, where this host's
        loopback is the gateway address: an apt repository a role added under that address
        is read here on 127.0.0.1."""
        return qemu.host_view(url)

    def provenance(self, image_id: str) -> Result:
        directory = self.store.fetch(image_id)
        manifest = self.store.manifest(image_id)
        sbom_file = directory / str(manifest.get("sbom", "sbom.cdx.json"))
        return {"directory": str(directory),
                "sbom": json.loads(sbom_file.read_text()) if sbom_file.is_file() else None,
                "junit": str(directory / "junit.xml")}

    def validate_image(self, image_id: str, reporter: Reporter) -> Result:
        detect_tools()
        store = self.store
        rec = store.get(image_id)
        manifest = store.manifest(image_id)
        disk = store.verified(image_id)
        lynis.version()
        accel = qemu.choose_accelerator(self.env.settings.qemu.accelerator, disk, base_cache_dir(), reporter)
        with store.workspace() as ws, reporter.phase("validate", f"boot {image_id} and run the image checks"):
            done = validate_disk(self.env, disk, accel, {
                "image_name": rec.name, "image_id": rec.id, "fingerprint": rec.fingerprint,
                "build_time": manifest["created"],
            }, ws, reporter)
        ok = done.suite.ok and done.audit["ok"]
        return {"image_id": image_id, "status": rec.status, "ok": ok, "checks": done.suite.as_dict(),
                "compliance": done.audit, "durations": reporter.durations, "boot": done.boot,
                "exit_code": 0 if ok else 1}

    # -- trust -------------------------------------------------------------------------------
    def evidence(self, image_id: str, registry: ImageRegistry | None = None) -> trust.Evidence:
        """The image's envelope and what its qcow2 is: the manifest's digest, which the bytes
        are checked against here (`verified`, once per change of the file) when they are on
        this machine, and on their download otherwise (the shared store's blob)."""
        store = registry if isinstance(registry, LocalStore) else self.store
        rec = store.get(image_id)
        path = store.image_dir(image_id) / rec.artifact
        if store.shared is None or path.is_file():
            path = store.verified(image_id)
        manifest = store.manifest(image_id)
        digest = manifest.get("artifact_sha256") or sha256_file(path)
        parent = manifest.get("parent") if isinstance(manifest.get("parent"), dict) else None
        audit = manifest.get("compliance")
        named = audit.get("report") if isinstance(audit, dict) else None
        report = store.record_file(image_id, str(named)) if named else None
        return trust.Evidence(
            attestation.Expect(image_id=rec.id, name=rec.name, env=self.env.name, sha256=str(digest),
                               parent_id=parent.get("id") if parent else None,
                               parent_attestation=self._envelope_digest(str(parent.get("id")), store)
                               if parent else None,
                               report_sha256=sha256_file(report) if report is not None else None),
            self._envelope(image_id, store), f"{store.where} ({image_id}/{attestation.FILE})")

    def _envelope(self, image_id: str, store: LocalStore | None = None) -> bytes | None:
        path = (store or self.store).record_file(image_id, attestation.FILE)
        return path.read_bytes() if path is not None else None

    def _envelope_digest(self, image_id: str, store: LocalStore | None = None) -> str | None:
        try:
            return trust.envelope_digest(self._envelope(image_id, store))
        except NotFoundError:  # a parent gc removed: the child's statement cannot be matched
            return "(parent gone)"

    def _sign(self, job: Job, manifest: dict[str, Any], image_dir: Path, reporter: Reporter) -> None:
        """The signed attestation of a validated image, among its files (`attestation.FILE`),
        so that it is published with the record; the manifest names its digest."""
        junit = image_dir / "junit.xml"
        junit_sha = sha256_file(junit) if junit.is_file() else None
        manifest["validation"].update(junit_sha256=junit_sha,
                                      suites=[self.env.rel(p) for p in self.env.suites(job.image.name)])
        parent_att = self._envelope_digest(job.parent.id) if job.parent is not None else None
        doc = attestation.statement(
            manifest, attestation.local_subject(job.image.id, "disk.qcow2", manifest["artifact_sha256"]),
            parent_attestation=parent_att, junit_sha256=junit_sha)
        envelope = trust.sign(self.env, doc, reporter, self.kms_client)
        (image_dir / attestation.FILE).write_bytes(envelope)
        manifest["attestation"] = {"file": attestation.FILE, "sha256": trust.envelope_digest(envelope)}
        reporter.info(f"    signed {attestation.FILE} (envelope sha256 {manifest['attestation']['sha256'][:12]}…)")

    # -- retention (invoke gc) ---------------------------------------------------------------
    def gc_world(self) -> GcWorld:
        """The store's images (quarantined too), the uses of their disks (running VMs, qcow2
        files backing onto them), the channels, and the logs of failed bakes."""
        store = self.store
        images: list[retention.Image] = []
        disks: dict[str, Path] = {}
        for rec in store.list():
            directory = store.image_dir(rec.id)
            disks[rec.id] = directory / rec.artifact
            images.append(retention.Image(
                id=rec.id, name=rec.name, status=rec.status, created=_time(rec.created),
                stage=rec.extra.get("stage"), stage_at=retention.parse_time(rec.extra.get("stage_at")),
                revoked_at=retention.parse_time(rec.extra.get("revoked_at")), size=usage.tree_size(directory)))
        leftovers = []
        if store.failed_dir.is_dir():
            for d in sorted(store.failed_dir.iterdir()):
                if d.is_dir():
                    leftovers.append(retention.Leftover(
                        d.name, FAILED_LOGS, datetime.fromtimestamp(d.stat().st_mtime, UTC), usage.tree_size(d)))
        return GcWorld(images, self._uses(disks), store.histories(), leftovers, {"store": str(store.root)})

    def _uses(self, disks: dict[str, Path]) -> list[retention.Reference]:
        children = [retention.Reference(parent, "parent of", child)
                    for parent, child in ancestry.parent_uses(r.summary() for r in self.store.list())]
        places = self.gc_search()
        return [*(usage.vm_references(disks) if "running" in places else []),
                *usage.backing_references(disks, [p for p in places.values() if p is not None]),
                *usage.domain_references(disks, [p for p in places.values() if p is not None]),
                *(c for c in children if c.image_id in disks)]

    def gc_search(self) -> dict[str, Path | None]:
        """{place: directory} gc looks in for disks and VM definitions using an image
        (`extra.retention.local_search`; `running`: QEMU processes, no directory)."""
        out: dict[str, Path | None] = {}
        for place in self.env.retention.local_search:
            if place == "store":
                out[place] = self.store.root
            elif place == "base-cache":
                out[place] = base_cache_dir()
            elif place == "running":
                out[place] = None
            else:
                out[place] = Path(place).expanduser()
        return out

    def _still_used(self, image_id: str) -> str | None:
        """Why `image_id` must not be touched now (a channel, its rollback target, a VM, a
        backing file), gathered afresh; None if nothing uses it."""
        rec = self.store.get(image_id)
        disk = self.store.image_dir(image_id) / rec.artifact
        img = retention.Image(id=rec.id, name=rec.name, status=rec.status, created=_time(rec.created))
        return retention.protections([img], self._uses({image_id: disk}), self.store.histories()).get(image_id)

    def gc_apply(self, decision: retention.Decision, now: datetime, fresh: Any = None) -> Result:
        """One stage, re-checked under the store lock (the local look is cheap: `fresh` is not
        used); an image removed meanwhile is `gone`."""
        image_id, action = decision.image_id, decision.action
        if action not in (retention.DELETE, retention.DEPRECATE, retention.DISABLE):
            raise ValueError(f"not an action to carry out: {action}")
        try:
            if action == retention.DELETE:
                why = self.store.remove(image_id, lambda: self._still_used(image_id))
            else:
                stage = retention.NEXT[decision.stage][1]
                assert stage is not None
                why = self.store.set_stage(image_id, stage, now, still_used=lambda: self._still_used(image_id))
        except NotFoundError:
            return {"done": False, "gone": f"{image_id} is no longer in {self.store.root}"}
        return {"done": False, "skipped": f"in use now: {why}"} if why else {"done": True}

    def gc_restore(self, image_id: str) -> Result:
        return {"stage": self.store.restore(image_id)}

    def gc_remove_leftover(self, decision: retention.Decision) -> Result:
        directory = self.store.failed_dir / decision.image_id
        shutil.rmtree(directory)
        return {"done": True}

    # -- bake --------------------------------------------------------------------------------
    def detect_tools(self) -> Tools:
        # each version is a process start (packer's ~0.2 s): the ones the bake asks next
        # (qemu's, mmdebstrap's for the base disk's recipe) are asked meanwhile, and cached
        with ThreadPoolExecutor(2) as pool:
            pool.submit(qemu.qemu_version)
            if not self.env.settings.base.url:
                pool.submit(baseimage.mmdebstrap_version)  # an error comes when the base needs it
            return detect_tools()

    def check_build(self, name: str, tools: Tools, reporter: Reporter) -> None:
        lynis.version()  # the validation's audit needs the scanner: said before any slow step
        check_templates(self.env, name, tools)

    def base_is_at_hand(self, parent: ImageRecord | None) -> bool:
        if parent is not None:
            return True
        if self.bases is not None and not self.env.settings.base.url:
            key = baseimage.recipe_key(self.env.settings.base, baseimage.mmdebstrap_version())
            self.bases.sync(base_cache_dir(), key, Reporter(quiet=True))
        return baseimage.is_at_hand(self.env.settings.base, base_cache_dir())

    def base_identity(self, reporter: Reporter) -> str:
        return baseimage.ensure_base_image(self.env.settings.base, base_cache_dir(), reporter, self.bases,
                                           need_bytes=False).identity

    def parent_base_identity(self, parent: ImageRecord, manifest: dict[str, Any]) -> str:
        return f"sha256:{manifest.get('artifact_sha256')}"

    def parent_registry(self) -> ImageRegistry:
        return self.store  # a child is baked on its parent's qcow2

    def resolve_base(self, reporter: Reporter, parent: ImageRecord | None = None) -> Base:
        if parent is None:
            base = baseimage.ensure_base_image(self.env.settings.base, base_cache_dir(), reporter, self.bases,
                                               need_bytes=False)
        else:  # the parent's validated qcow2, checked byte for byte; Packer copies it
            self.require_trusted(parent, reporter, "parent")
            path = self.store.image_dir(parent.id) / parent.artifact
            if self.store.shared is None or path.is_file():
                path = self.store.verified(parent.id)
            # else it is in the shared store only: its identity is its manifest's digest, and
            # its bytes are downloaded (and checked) when a build needs them (`_parent_bytes`)
            base = baseimage.BaseImage(path, self.store.manifest(parent.id)["artifact_sha256"], f"image:{parent.id}")
        details: dict[str, Any] = {"disk": base, "parent": parent, "accelerator": None, "apt_state": None}
        if base.path.is_file():
            self._parent_bytes(details, reporter)
        return Base(base.identity, details)

    def _parent_bytes(self, details: dict[str, Any], reporter: Reporter) -> None:
        """What a build needs of its base beside the identity: the disk's bytes (a parent
        image from the shared store is downloaded and checked here), the accelerator, and the
        package index the parent's build kept."""
        base, parent = details["disk"], details["parent"]
        if details["accelerator"] is not None:
            return
        if parent is not None and not base.path.is_file():
            with reporter.phase("download", f"the parent image {parent.id} from {self.store.where}"):
                self.store.verified(parent.id)
        elif not base.path.is_file() and self.bases is not None and (
                cached := baseimage.cached_dir(base_cache_dir(), base.source)) is not None:
            self.bases.download(cached.parent, cached.name, reporter)
        details["accelerator"] = accel = qemu.choose_accelerator(
            self.env.settings.qemu.accelerator, base.path, base_cache_dir(), reporter)
        reporter.info(f"    base {base.identity[:19]}… ({base.source}); accelerator {accel}")
        details["apt_state"] = self._apt_state(parent, reporter) if parent is not None else None

    def _apt_state(self, parent: ImageRecord, reporter: Reporter) -> Path | None:
        """The package index the parent's build kept (hygiene role), if its bytes are the
        ones its manifest recorded: the child's build starts from it. Only a shortcut: without
        it the child's apt tasks update, as on any fresh machine."""
        kept = self.store.manifest(parent.id).get("apt_state")
        if not isinstance(kept, dict):
            return None
        path = self.store.fetch(parent.id) / str(kept.get("file"))
        actual = sha256_file(path) if path.is_file() else "(missing)"
        if actual != kept.get("sha256"):
            reporter.warn(f"{parent.id}: its package index {path.name} has sha256 {actual}, its manifest "
                          f"{kept.get('sha256')}: not used, the build updates the package lists itself")
            return None
        reporter.info(f"    package index of {parent.id} ({kept.get('bytes', 0) / 2**20:.0f} MiB) for the build")
        return path

    @staticmethod
    def _keep_apt_state(disk: Path, dest: Path, reporter: Reporter) -> None:
        """The package index the build's hygiene role wrote to `disk`, cut to its length, as
        `dest`; nothing when the disk holds no archive (hygiene switched off, say)."""
        length = tar_length(disk)
        if not length:
            reporter.warn("the build wrote no package index for the images built on this one: "
                          "their builds update the package lists themselves")
            disk.unlink()
            return
        with disk.open("r+b") as fh:
            fh.truncate(length)
        disk.rename(dest)

    def lookup(self, name: str, fingerprint: str, reporter: Reporter) -> tuple[ImageRecord | None, list[str]]:
        hit, refused = self.store.find_intact(name, fingerprint)  # the bytes, not just the record
        for why in refused:
            reporter.warn(f"not skipping to it: {why}")
        return hit, refused

    def fingerprint_lookup(self) -> ImageRegistry | None:
        return self.store

    def skipped(self, hit: ImageRecord, reporter: Reporter) -> Result:
        return {"image_id": hit.id, "status": hit.status,
                "artifact": str(self.store.image_dir(hit.id) / hit.artifact)}

    def build(self, job: Job, reporter: Reporter) -> Result:
        from ..build import packer_build

        self._parent_bytes(job.base.details, reporter)
        ws, img, disk = job.ws, job.image, job.base.details["disk"]
        image_dir = ws / "image"
        image_dir.mkdir()
        # the parent's package index on a read-only disk; an image others are built on gets an
        # empty one that its hygiene role writes its own index to
        restore: Path | None = job.base.details.get("apt_state")
        keep = ws / "apt-state.raw" if img.name in self.env.parents.values() else None
        disks = qemu.raw_disk_args(restore, qemu.APT_IN, read_only=True, slot=qemu.APT_IN_SLOT) if restore else []
        if keep is not None:
            with keep.open("wb") as fh:
                fh.truncate(APT_STATE_DISK)  # sparse
            disks += qemu.raw_disk_args(keep, qemu.APT_OUT, read_only=False, slot=qemu.APT_OUT_SLOT)
        with reporter.phase("build", f"packer build of {img.name} ({img.id})"):
            key = ws / "build_key"
            pubkey = qemu.make_key(key)
            # the disk's own kernel and initrd, the build key as systemd credentials; a disk
            # without an extlinux MBR layout boots through its loader with a NoCloud seed
            files = directboot.boot_files(disk.path, ws / "boot")
            if files is not None:
                seeds: list[Path] = []
                disks = [*directboot.qemu_args(files, ws / "boot", BUILD_USER, pubkey), *disks]
                boot = {"mode": "direct kernel boot", "direct": files.as_dict()}
                boot_vars: dict[str, Any] = {"boot_check": files.check(),
                                             "shutdown_command": directboot.shutdown_command(BUILD_USER)}
                reporter.info(f"    build VM: direct kernel boot of {files.kernel_path} (sha256 {files.kernel_sha256[:12]}…)")
            else:
                seeds = qemu.seed_files(ws / "seed", BUILD_USER, pubkey, img.name)
                boot, boot_vars = {"mode": "bootloader"}, {}
                reporter.info("    build VM: the disk has no extlinux MBR layout: boot loader and cloud-init")
            job.artifacts["timings"] = packer_build(
                self.env, img, job.tools, ws, "qemu.local", reporter, base_image=str(disk.path),
                base_image_checksum=disk.identity, accelerator=job.base.details["accelerator"],
                ssh_private_key_file=str(key), seed_files=[str(s) for s in seeds],
                disk_convert_args=qemu.convert_args(job.tools.qemu), extra_qemuargs=disks, boot=boot,
                extra_vars={"apt_state_device": f"/dev/disk/by-id/virtio-{qemu.APT_OUT}" if keep else ""},
                **boot_vars)
            key.unlink()
            shutil.rmtree(ws / "boot", ignore_errors=True)
            job.artifacts["packer_manifest"] = packer.read_manifest(ws / "packer-manifest.json")
            artifact = ws / "output" / "disk.qcow2"
            if not artifact.is_file():
                raise TemplateError(f"packer reported success but {artifact.name} is missing")
            shutil.move(str(artifact), image_dir / "disk.qcow2")
            if keep is not None:
                self._keep_apt_state(keep, image_dir / APT_STATE, reporter)
            shutil.copy2(ws / "packer-manifest.json", image_dir / "packer-manifest.json")
        return {}

    def validate(self, job: Job, reporter: Reporter) -> Checked:
        image_dir = job.ws / "image"
        with reporter.phase("validate", "boot the final image, run the image checks and the compliance audit"):
            done = validate_disk(
                self.env, image_dir / "disk.qcow2", job.base.details["accelerator"], job.image.facts(),
                job.ws / "validate", reporter)
            shutil.copy2(done.suite.junit, image_dir / "junit.xml")
            for kept in (lynis.REPORT_FILE, lynis.LOG_FILE):
                shutil.copy2(job.ws / "validate" / kept, image_dir / kept)
            timings = job.artifacts.setdefault("timings", {})
            timings.setdefault("boot", {})["validation"] = done.boot
            timings["compliance_seconds"] = done.audit["seconds"]
            atomic_write_json(image_dir / TIMINGS, timings)
        failures = list(done.suite.as_dict().get("failures", [])) + list(done.audit["failures"])
        return Checked(done.suite.ok and done.audit["ok"], failures,
                       {"suite": done.suite, "packages": done.packages, "apt_sources": done.sources,
                        "compliance": done.audit})

    def register(self, job: Job, checked: Checked, reporter: Reporter) -> Result:
        env, img, ws = self.env, job.image, job.ws
        image_dir = ws / "image"
        status = VALIDATED if checked.ok else QUARANTINED
        installed = checked.details["packages"]
        packages = [(p.name, p.version, p.arch) for p in installed]
        disk = job.base.details["disk"]
        manifest: dict[str, Any] = {
            "id": img.id, "name": img.name, "env": env.name, "fingerprint": img.fingerprint,
            "fingerprint_inputs": fingerprint.as_manifest(job.inputs),
            "created": img.build_time, "status": status, "artifact": "disk.qcow2",
            "artifact_sha256": sha256_file(image_dir / "disk.qcow2"),
            "base": {"source": disk.source, "identity": disk.identity, "path": str(disk.path)},
            **({"parent": job.ancestry()} if job.parent else {}),
            "tools": job.tools.versions(), "accelerator": job.base.details["accelerator"],
            "git": git_state(env.root),
            "built_by": f"{getpass.getuser()}@{socket.gethostname()}",
            **imagefacts.as_manifest(installed, checked.details["apt_sources"]),  # packages, apt_sources
            "sbom": "sbom.cdx.json",
            "validation": {"status": status, **checked.details["suite"].as_dict(), "junit": "junit.xml"},
            "compliance": checked.details["compliance"],
            "packer_manifest": job.artifacts["packer_manifest"],
            **({"apt_state": {"file": APT_STATE, "sha256": sha256_file(image_dir / APT_STATE),
                              "bytes": (image_dir / APT_STATE).stat().st_size}}
               if (image_dir / APT_STATE).is_file() else {}),
            "timings": job.artifacts["timings"],
        }
        installed = galaxy.installed_record(env.root, requirements.load(env.root))
        if installed is not None:
            manifest["requirements"] = installed
        from .. import sbom  # cyclonedx: only a build that registers pays its import

        atomic_write_json(image_dir / "sbom.cdx.json",
                          sbom.build(packages, image_name=img.name, fingerprint=img.fingerprint, now=img.created))
        record = ImageRecord(id=img.id, name=img.name, env=env.name, fingerprint=img.fingerprint,
                             created=img.build_time, status=status, artifact="disk.qcow2",
                             extra={"parent": job.ancestry()} if job.parent else {})
        if checked.ok:
            self._sign(job, manifest, image_dir, reporter)
        with reporter.phase("register"):
            manifest["durations"] = dict(reporter.durations)
            self.store.put(record, manifest, image_dir, fence=job.fence)
        job.finished = True
        return {"image_id": record.id, "status": record.status,
                "artifact": str(self.store.image_dir(record.id) / record.artifact),
                **({} if checked.ok else {"failures": list(checked.failures)})}

    def quarantined(self, result: Result) -> str:
        return f"quarantined at {self.store.image_dir(result['image_id'])}"


def _time(text: str) -> datetime:
    parsed = retention.parse_time(text)
    if parsed is None:
        raise ValueError("an image without a creation time")
    return parsed


def check_templates(env: Environment, name: str, tools: Tools) -> None:
    """`packer validate` the staged templates with placeholder values: Packer's own file:line
    for a malformed template, before any slow step."""
    with tempfile.TemporaryDirectory(prefix="goldenimage-check-") as tmp:
        work = Path(tmp)
        staged = tools.packer.stage(env.root / "packer", work / "packer")
        var_file = work / "check.pkrvars.json"
        (work / "inventory").mkdir()
        key = work / "check_key"
        qemu.make_key(key)
        placeholders = {"fingerprint": "0" * 64, "image_id": f"{name}-check", "ssh_private_key_file": str(key),
                        "base_image": str(work / "base.qcow2"), "base_image_checksum": "sha256:" + "0" * 64}
        atomic_write_json(var_file, common_packer_vars(env, name, work, **placeholders))
        tools.packer.validate(staged, var_file, "qemu.local", rel_to=env.root, work=work)


@dataclass(frozen=True)
class Validation:
    """What one validation boot found (`validate_disk`): the suite's result, the packages
    and apt sources read from the running image, the boot's own account
    (`timing.boot_analysis`, with when SSH answered) and the audit's manifest entry
    (`lynis.audit_image`)."""

    suite: testinfra.SuiteResult
    packages: list[drift.Installed]
    sources: list[drift.Source]
    boot: dict[str, Any]
    audit: dict[str, Any]


def validate_disk(
    env: Environment, disk: Path, accel: str, expect: dict[str, Any], work: Path, reporter: Reporter
) -> Validation:
    """Boot `disk` through an overlay with a fresh key and run the image's suite directories
    (`Environment.suites` of expect["image_name"]) against it; read its packages and apt
    sources while it runs, then audit it (`Environment.compliance`; lynis's report and log
    are left in `work`). The checks and the SBOM read see the image before the scanner is
    brought in, and the overlay takes it away."""
    q = env.settings.qemu
    suites = env.suites(expect["image_name"])
    note = env.suite_note(expect["image_name"])
    if note:
        reporter.info(f"    {note}")
    with qemu.boot(disk, work, accelerator=accel, cpus=q.cpus, memory=q.memory,
                   timeout=q.boot_timeout, reporter=reporter, user=BUILD_USER) as vm:
        pub = Path(f"{vm.key}.pub").read_text().strip()
        suite = testinfra.run_suite(suites, vm.host, vm.ssh_config, {
            **expect, "validation_user": BUILD_USER, "validation_pubkey": pub,
        }, work, reporter, root=env.root, workers=min(q.cpus, 2))  # one per vCPU: more were slower
        packages, sources = imagefacts.read(lambda cmd: _run(vm, cmd))
        reporter.info(f"    testinfra: {suite.passed} passed, {suite.failed} failed, {suite.errors} errors")
        audit = lynis.audit_image(vm.ssh_config, vm.host, env.compliance(expect["image_name"]), work, reporter)
    for line in timing.boot_lines("validation", vm.boot, top=3):
        reporter.info(f"    {line}")
    return Validation(suite, packages, sources, vm.boot, audit)


def _run(vm: qemu.Vm, command: str) -> tuple[int, str, str]:
    res = vm.ssh(command)
    return res.returncode, res.stdout, res.stderr

"""Target `sandbox`: a local bake (qemu, the local store), then the validated image also
stands as an AMI in the environment's running sandbox (a moto server on loopback), whose
registry holds the channels.

The sandbox boots no guests: validating one of its AMIs reports what the local bake
validated instead.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import retention, trust
from ..aws.clients import AwsContext, Clients
from ..aws.registry import AwsRegistry, local_ami_name
from ..aws.target import AwsSide
from ..aws.validate import CheckResult, RemoteCheck, RemoteTarget
from ..build import ID_WILDCARD
from ..compliance import REPORT_FILE
from ..errors import NotFoundError, OperationFailed
from ..locks import Lock
from ..models import REVOKED, VALIDATED, ImageRecord
from ..progress import Reporter
from ..settings import Environment
from ..state import Backend
from ..store import LocalStore
from ..targets import Checked, GcWorld, ImageRegistry, Job, Result
from ..targets.local import LocalTarget
from . import SANDBOX_CREDENTIALS, running_state, sandbox_context, state_bucket


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


class SandboxParents:
    """Where a sandbox child's parent comes from. The channels and the statuses are the
    sandbox's (SSM parameters, AMI tags): a parent revoked, quarantined or disabled there is
    refused, and `parent: {channel: …}` follows the sandbox's channel. The bytes are the local
    store's: each AMI stands for a local qcow2 (its `local-id` tag), which the child is built
    on. A local image never registered in the sandbox keeps its local status."""

    def __init__(self, remote: AwsRegistry, store: LocalStore) -> None:
        self.remote, self.store = remote, store

    def _local_id(self, image_id: str) -> str:
        if not image_id.startswith("ami-"):
            return image_id
        local_id = self.remote.get(image_id).extra.get("local_id")
        if not local_id:
            raise NotFoundError(f"{image_id} stands for no local image (no goldenimage:local-id tag)")
        return str(local_id)

    def _as_in_sandbox(self, recs: builtins.list[ImageRecord]) -> builtins.list[ImageRecord]:
        amis = {r.extra.get("local_id"): r for name in {r.name for r in recs} for r in self.remote.list(name)}
        out = []
        for rec in recs:
            ami = amis.get(rec.id)
            if ami is not None and (ami.status != rec.status or ami.extra.get("stage") == "disabled"):
                rec = replace(rec, status=ami.status, extra={**rec.extra, "stage": ami.extra.get("stage"),
                                                             "ami": ami.id})
            out.append(rec)
        return out

    def get(self, image_id: str) -> ImageRecord:
        return self._as_in_sandbox([self.store.get(self._local_id(image_id))])[0]

    def list(self, name: str | None = None) -> builtins.list[ImageRecord]:
        return self._as_in_sandbox(self.store.list(name))

    def manifest(self, image_id: str) -> dict[str, Any]:
        return self.store.manifest(self._local_id(image_id))

    def histories(self, names: Iterable[str]) -> dict[str, dict[str, builtins.list[dict[str, Any]]]]:
        return self.remote.histories(names)

    def find_by_fingerprint(self, name: str, fingerprint: str) -> ImageRecord | None:
        hit = self.store.find_by_fingerprint(name, fingerprint)
        return hit if hit is None or self.get(hit.id).status == VALIDATED else None

    def history(self, name: str, channel: str) -> builtins.list[dict[str, Any]]:
        out = []
        for entry in self.remote.history(name, channel):
            image_id = entry.get("image_id")
            if isinstance(image_id, str) and image_id.startswith("ami-") and entry.get("status") != "deregistered":
                entry = {**entry, "image_id": self._local_id(image_id), "ami": image_id}
            out.append(entry)
        return out

    def _read_only(self, *_: Any) -> Any:
        raise OperationFailed("a sandbox parent is only read here: promote and revoke its AMI instead")

    promote = revoke = rollback_target = _read_only


class SandboxTarget(LocalTarget, AwsSide):
    name = "sandbox"

    def __init__(self, env: Environment, *, clients: Clients | None = None,
                 check: RemoteCheck | None = None) -> None:
        LocalTarget.__init__(self, env)  # and AwsSide's, next in the method order
        self._clients, self._check = clients, check

    # gc: the sandbox's images are AMIs (registered from local bakes): it plans over them and
    # carries the plan out like target aws, never over the local store underneath them
    # (that would delete the qcow2s they came from).
    gc_applies = True
    gc_batch = AwsSide.gc_batch

    def gc_world(self) -> GcWorld:
        return AwsSide.gc_world(self)

    def gc_shares(self, decisions: list[retention.Decision]) -> list[retention.Reference]:
        return AwsSide.gc_shares(self, decisions)

    def gc_recheck(self, decisions: list[retention.Decision]) -> Any:
        return AwsSide.gc_recheck(self, decisions)

    def gc_apply(self, decision: retention.Decision, now: datetime, fresh: Any = None) -> Result:
        return AwsSide.gc_apply(self, decision, now, fresh)

    def gc_lock(self, command: str) -> Lock:
        return AwsSide.gc_lock(self, command)

    def gc_restore(self, image_id: str) -> Result:
        return AwsSide.gc_restore(self, image_id)

    def gc_remove_leftover(self, decision: retention.Decision) -> Result:
        return AwsSide.gc_remove_leftover(self, decision)

    def shared_state(self) -> Backend | None:
        """`state:` naming no endpoint: the bucket is the sandbox's own (its moto server serves
        S3 too), reached with the sandbox's endpoint and credentials; ConfigError when the
        sandbox is not running."""
        spec = self.env.settings.state
        if self._shared is False and spec is not None and spec.endpoint_url is None:
            from ..state.bucket import open_backend

            state = running_state(self.env)
            state_bucket(self.env, state)
            self._shared = open_backend(self.env, str(state["endpoint"]), dict(SANDBOX_CREDENTIALS))
        return super().shared_state()

    def aws_context(self) -> AwsContext:
        # ConfigError when the environment's sandbox is not running
        return sandbox_context(running_state(self.env), self.aws.max_attempts)

    # -- registry: the sandbox's AMIs; the local store still knows the local ids --------------
    def registry(self) -> AwsRegistry:
        return AwsSide.registry(self)

    def listing(self) -> Result:
        return AwsSide.listing(self)

    def ami_name_pattern(self, name: str) -> str:
        return local_ami_name(name, f"{name}-{ID_WILDCARD}")  # AwsRegistry.register_local_image

    def parent_registry(self) -> ImageRegistry:
        return SandboxParents(self.registry(), self.store)

    def registry_for(self, image_id: str) -> ImageRegistry:
        return self.registry() if image_id.startswith("ami-") else self.store

    def provenance(self, image_id: str) -> Result:
        return {}

    def evidence(self, image_id: str, registry: ImageRegistry | None = None) -> trust.Evidence:
        if image_id.startswith("ami-"):
            return AwsSide.evidence(self, image_id, registry if isinstance(registry, AwsRegistry) else None)
        return LocalTarget.evidence(self, image_id, registry)

    def default_subnet(self) -> str | None:
        return str(running_state(self.env)["seed"]["subnets"][0])

    def remote_check(self, expect: dict[str, Any], work: Path) -> RemoteCheck:
        return self._check or SandboxCheck(str(expect.get("image_id", "")))

    def validate_image(self, image_id: str, reporter: Reporter) -> Result:
        return AwsSide.validate_image(self, image_id, reporter)

    # -- bake: local, then registered in the sandbox -----------------------------------------
    def check_ready(self, name: str, tools: Any, reporter: Reporter) -> None:
        self.registry()  # a sandbox that is not running is an error now, not after the bake
        super().check_ready(name, tools, reporter)

    def lookup(self, name: str, fingerprint: str, reporter: Reporter) -> tuple[ImageRecord | None, list[str]]:
        hit, refused = super().lookup(name, fingerprint, reporter)
        if hit is not None and any(r.status == REVOKED and r.extra.get("local_id") == hit.id
                                   for r in self.registry().list(hit.name)):
            why = f"{hit.id} is revoked in {self.env.name}: it may not be used again, baking anew"
            reporter.warn(why)
            return None, [*refused, why]
        return hit, refused

    def skipped(self, hit: ImageRecord, reporter: Reporter) -> Result:
        return {**super().skipped(hit, reporter), "registered": self._register_remote(hit, reporter)}

    def register(self, job: Job, checked: Checked, reporter: Reporter) -> Result:
        out = super().register(job, checked, reporter)
        if out["status"] == VALIDATED:
            out["registered"] = self._register_remote(self.store.get(out["image_id"]), reporter)
        return out

    def _register_remote(self, rec: ImageRecord, reporter: Reporter) -> dict[str, Any]:
        """The locally validated image also stands as an AMI in the sandbox (once)."""
        remote = self.registry()
        existing = remote.find_by_fingerprint(rec.name, rec.fingerprint)
        if existing is not None:
            return {"image_id": existing.id, "new": False}
        self.require_trusted(rec, reporter, "local image")  # its attestation over the bytes that were validated, or nothing
        manifest = self.store.manifest(rec.id)
        parent = manifest.get("parent")
        if isinstance(parent, dict):  # the parent's AMI here, registered before its children
            ami = next((r.id for r in remote.list(parent["name"]) if r.extra.get("local_id") == parent["id"]), None)
            manifest["parent"] = {**parent, "ami": ami}
        with reporter.phase("register-remote", f"register {rec.id} in {self.env.name}"):
            done = remote.put(rec, manifest)
            reporter.info(f"registered {done.id} ({done.name}, {done.status}) in {done.extra['region']}")
            self.sign_ami(remote, rec.name, done.id, manifest, manifest.get("artifact_sha256"),
                          (manifest.get("validation") or {}).get("junit_sha256"), reporter)
            self.keep_report(remote, rec.name, done.id, self.store.record_file(rec.id, REPORT_FILE), reporter)
        return {"image_id": done.id, "new": True}

"""Targets: where an environment's images are built, validated and registered.

One interface (`Target`), three implementations chosen once from the environment's
`target:` setting, in the spirit of pytest-testinfra's backend registry: `local` (qemu
source, the local image store), `sandbox` (a local bake, then registered as an AMI in the
loopback AWS API) and `aws` (amazon-ebs source, AMIs and SSM channels). The modules of
this package, `aws.target` and `sandbox.target` are the only code that asks
which target an environment has; commands and the bake pipeline are written once against
`Target`.
"""

from __future__ import annotations

import builtins
import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .. import retention, trust
from ..errors import ConfigError
from ..fingerprint import FingerprintInput
from ..locks import FileLock, Lock
from ..models import ImageRecord
from ..paths import store_dir
from ..progress import Reporter
from ..settings import Environment

if TYPE_CHECKING:
    from ..adapters.baseimage import SharedBases
    from ..aws.clients import AwsContext, Clients
    from ..aws.registry import AwsRegistry
    from ..build import NewImage, Tools
    from ..state import Backend

Result = dict[str, Any]

# name -> "module:class", imported when chosen: a local bake never imports boto3
TARGETS = {
    "local": "goldenimage.targets.local:LocalTarget",
    "sandbox": "goldenimage.sandbox.target:SandboxTarget",
    "aws": "goldenimage.aws.target:AwsTarget",
}


class ImageRegistry(Protocol):
    """What commands need of a target's registry (`models.Registry`, untyped `put`)."""

    def get(self, image_id: str) -> ImageRecord: ...

    def list(self, name: str | None = None) -> list[ImageRecord]: ...

    def manifest(self, image_id: str) -> dict[str, Any]: ...

    def find_by_fingerprint(self, name: str, fingerprint: str) -> ImageRecord | None: ...

    def promote(self, image_id: str, channel: str) -> dict[str, Any]: ...

    def revoke(self, image_id: str, reason: str) -> dict[str, Any]: ...

    def history(self, name: str, channel: str) -> builtins.list[dict[str, Any]]: ...

    def rollback_target(self, name: str, channel: str) -> str | None: ...

    def histories(self, names: Iterable[str]) -> dict[str, dict[str, builtins.list[dict[str, Any]]]]: ...


@dataclass(frozen=True)
class Base:
    """What an image is built on: its identity (a fingerprint input) and target details."""

    identity: str
    details: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)  # what the bake's result shows of it


@dataclass
class Job:
    """One build in progress: the new image, its inputs and its private workspace."""

    env: Environment
    image: NewImage
    inputs: list[FingerprintInput]
    base: Base
    tools: Tools
    ws: Path
    artifacts: dict[str, Any] = field(default_factory=dict)  # what the build made so far
    finished: bool = False  # registered (validated or quarantined): nothing to discard
    parent: ImageRecord | None = None  # the image this one is baked on (image families)
    parent_channel: str | None = None  # the parent's channel it was taken from
    fence: tuple[str, int] | None = None  # (lease, token) the bake holds: a register under a lost lease is refused

    def ancestry(self) -> dict[str, Any] | None:
        """What the manifest, catalog and tags record of the parent (None: on the base)."""
        from ..build import ancestry

        return ancestry(self.parent, self.parent_channel)


@dataclass(frozen=True)
class Checked:
    """The validation of a built image."""

    ok: bool
    failures: list[str]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GcWorld:
    """What `invoke gc` plans from, gathered once per run (`retention.plan`'s inputs)."""

    images: list[retention.Image]
    references: list[retention.Reference]
    channels: dict[str, dict[str, list[dict[str, Any]]]]
    leftovers: list[retention.Leftover] = field(default_factory=list)
    where: dict[str, Any] = field(default_factory=dict)  # what the plan shows of the place


class Target(ABC):
    """One kind of place images live in; `target_for(env)` picks the environment's."""

    name: ClassVar[str]
    gc_applies: ClassVar[bool] = False  # `invoke gc --apply` is built for this target

    def __init__(self, env: Environment) -> None:
        self.env = env
        self._shared: Backend | bool | None = False  # False: not opened yet

    @property
    def bases(self) -> SharedBases | None:
        """The base disks in the shared state (targets that build them)."""
        return None

    def shared_state(self) -> Backend | None:
        """The environment's shared state (`state:`): where bake, nightly and gc take their
        leases across machines; None for state kept on this machine only."""
        if self._shared is False:
            from ..state.bucket import open_backend

            self._shared = open_backend(self.env)
        return self._shared if not isinstance(self._shared, bool) else None

    def archive_url(self, url: str) -> str:
        """The URL this machine fetches for an apt source URL recorded on one of the
        target's images (nightly's drift check reads the indexes the image installs from)."""
        return url

    # -- the registry and its commands ---------------------------------------------------
    @abstractmethod
    def registry(self) -> ImageRegistry:
        """Where the environment's images and channels are listed, promoted, revoked."""

    def registry_for(self, image_id: str) -> ImageRegistry:
        """The registry that knows `image_id` (a sandbox knows local ids and AMIs)."""
        return self.registry()

    def listing(self) -> Result:
        """What `invoke images` shows beside the images (where they are)."""
        return {}

    def provenance(self, image_id: str) -> Result:
        """What `invoke images --image-id` shows beside the record and the manifest."""
        return {}

    def fleet(self) -> builtins.list[Result] | None:
        """The groups of `extra.rotation.groups` and the image each instance runs (one row a
        group: group, asg, image, channel, desired, min, max, instances, error); None where
        the target has no groups."""
        return None

    @abstractmethod
    def validate_image(self, image_id: str, reporter: Reporter) -> Result:
        """`invoke validate`: boot a registered image again and run the image suite."""

    def aws_context(self) -> AwsContext:
        """The AWS API this environment's AWS-side commands use."""
        raise self._not_aws()

    def ami_name_pattern(self, name: str) -> str:
        """The names of this target's AMIs of image `name`, with EC2's name wildcards."""
        raise self._not_aws()

    def aws_registry(self, clients: Clients | None = None) -> AwsRegistry:
        """The AMI registry (with `clients`, else the target's own)."""
        raise self._not_aws()

    def _not_aws(self) -> ConfigError:
        return ConfigError(
            f"{self.env.rel(self.env.settings_file)}: field target: environment {self.env.name!r} has "
            f"target {self.name!r}; AWS commands need target 'aws' or 'sandbox'"
        )

    # -- trust (trust.py) -----------------------------------------------------------------
    def evidence(self, image_id: str, registry: ImageRegistry | None = None) -> trust.Evidence:
        """The image's attestation and what its bytes (or AMI) about to be used are (in
        `registry`, where a command was handed one, else the target's own)."""
        raise ConfigError(f"{self.env.rel(self.env.settings_file)}: field target: attestations are not "
                          f"built for target {self.name!r} yet")

    def kms_client(self) -> Any:
        """The KMS client of a `kms:` key (aws and sandbox targets only)."""
        raise ConfigError(f"{self.env.rel(self.env.settings_file)}: field trust: a kms: key needs target "
                          f"aws or sandbox, not {self.name!r}")

    def verify_image(self, image_id: str, registry: ImageRegistry | None = None) -> Result:
        """Verify `image_id`'s attestation (`trust.verify`): the checks, or UntrustedImage."""
        return trust.verify(self.env, self.evidence(image_id, registry), self.kms_client)

    def require_trusted(self, rec: ImageRecord, reporter: Reporter, what: str) -> Result:
        """Use an image (a child's parent, one registered in the sandbox) only if its
        attestation verifies, before its bytes (or AMI) are used: the digest it attests is
        the one the download, or `verified`, checks the bytes against."""
        checked = self.verify_image(rec.id)
        reporter.info(f"    {what} {rec.id}: {trust.outcome(checked)}")
        return checked

    # -- retention (invoke gc) -------------------------------------------------------------
    def gc_world(self) -> GcWorld:
        """The images, their references and channels, and the leftovers, gathered now."""
        raise self.gc_not_built()

    gc_batch: ClassVar[int] = 10  # decisions re-checked together, right before their steps

    def gc_shares(self, decisions: list[retention.Decision]) -> list[retention.Reference]:
        """Who else may launch the images of these decisions (kind `shared`): asked only for
        the images a plan would change. None on a target without sharing."""
        return []

    def gc_recheck(self, decisions: list[retention.Decision]) -> Any:
        """One fresh look at what uses the images of a batch of decisions, right before their
        steps (passed to `gc_apply`); None: `gc_apply` looks for itself."""
        return None

    def gc_apply(self, decision: retention.Decision, now: datetime, fresh: Any = None) -> Result:
        """Carry out one decision (deprecate, disable, delete), re-checking right before that
        nothing uses the image (`fresh`: the batch's look from `gc_recheck`, plus the cheap
        checks of what could have appeared since). Result: `done` True, or `skipped` with
        the use found, or `gone` (someone else removed it already)."""
        raise self.gc_not_built("`invoke gc --apply`")

    def gc_lock(self, command: str) -> Lock:
        """The environment's gc lock: a lease on the shared state when there is one (across
        machines; it expires when its holder dies), else a file lock on this machine."""
        shared = self.shared_state()
        if shared is not None:
            return self.lease(f"gc/{self.env.name}", command)
        return FileLock(store_dir() / "locks" / f"gc-{self.env.name}.lock", command)

    def fence(self, lease: str, token: int) -> None:
        """Where the target registers images, record that `lease` is held under `token`, so
        that a register under an older token is refused there (`Job.fence`). Targets whose
        registry cannot check it rely on the lease check right before they register."""
        return None

    def lease(self, name: str, command: str) -> Lock:
        """A lease `name` on the shared state (`state.lease.LeaseLock`)."""
        from ..state.lease import LeaseLock

        shared = self.shared_state()
        assert shared is not None and self.env.settings.state is not None
        return LeaseLock(shared, name, command, ttl=self.env.settings.state.lease_seconds)

    def gc_restore(self, image_id: str) -> Result:
        """Take back an image's deprecate/disable stage. Result: `stage` it had (None: none)."""
        raise self.gc_not_built("`invoke gc --restore`")

    def gc_remove_leftover(self, decision: retention.Decision) -> Result:
        """Remove one leftover the plan decided to delete."""
        raise self.gc_not_built("`invoke gc --apply`")

    def gc_not_built(self, what: str = "`invoke gc`") -> ConfigError:
        """The exit-2 error of a gc step this target does not have yet."""
        return ConfigError(
            f"{self.env.rel(self.env.settings_file)}: field target: {what} is not built for target "
            f"{self.name!r} yet"
        )

    # -- the bake --------------------------------------------------------------------------
    @abstractmethod
    def detect_tools(self) -> Tools:
        """The host tools this target's bake needs (MissingToolError if one is absent)."""

    def check_ready(self, name: str, tools: Tools, reporter: Reporter) -> None:
        """Fail before any step, cheaply: a registry that must be reachable."""
        return None

    @abstractmethod
    def resolve_base(self, reporter: Reporter, parent: ImageRecord | None = None) -> Base:
        """What the image is built on, resolved now (its identity joins the fingerprint): the
        environment's base, or the artifact of `parent` (a validated image of a parent name)."""

    def parent_base_identity(self, parent: ImageRecord, manifest: dict[str, Any]) -> str:
        """The base identity a child baked on `parent` (with that `manifest`) has, as
        `resolve_base(.., parent)` gives it, known without resolving (`invoke fingerprint`)."""
        return f"image:{parent.id}"

    def parent_registry(self) -> ImageRegistry:
        """Where a child's parent image is looked up (the registry its artifact is in)."""
        return self.registry()

    def base_identity(self, reporter: Reporter) -> str:
        """The base's identity alone (`invoke fingerprint`): the bake's, without its extras."""
        return self.resolve_base(reporter).identity

    @abstractmethod
    def lookup(self, name: str, fingerprint: str, reporter: Reporter) -> tuple[ImageRecord | None, list[str]]:
        """A validated image with this fingerprint that a bake may skip to (None: none), and
        why each other image with it may not be skipped to (its bytes changed, say)."""

    def check_build(self, name: str, tools: Tools, reporter: Reporter) -> None:
        """Fail before the first slow step of a build (the templates): run only when
        something will be built, never for a bake that skips."""
        return None

    def base_is_at_hand(self, parent: ImageRecord | None) -> bool:
        """`resolve_base` will not build or fetch anything slow (a cached base disk): if it
        would, the bake runs `check_build` before it."""
        return True

    def fingerprint_lookup(self) -> ImageRegistry | None:
        """Where `invoke fingerprint` looks for an up-to-date image (None: nowhere)."""
        return None

    def skipped(self, hit: ImageRecord, reporter: Reporter) -> Result:
        """The result fields of a bake that skipped to `hit`."""
        return {"image_id": hit.id, "status": hit.status, "artifact": hit.artifact}

    def started(self, job: Job) -> Result:
        """The result fields known once the build starts."""
        return {"image_id": job.image.id}

    @abstractmethod
    def build(self, job: Job, reporter: Reporter) -> Result:
        """Build the image with this target's Packer source; the result fields it adds."""

    @abstractmethod
    def validate(self, job: Job, reporter: Reporter) -> Checked:
        """Boot the final artifact and run the image's suites (`Environment.suites`) against it."""

    @abstractmethod
    def register(self, job: Job, checked: Checked, reporter: Reporter) -> Result:
        """Register the image (validated or quarantined); the result fields it adds."""

    def discard(self, job: Job, reporter: Reporter) -> None:
        """Remove what an unfinished build made outside its workspace."""
        return None

    def quarantined(self, result: Result) -> str:
        """Where a quarantined image is, for the error message."""
        return "quarantined"

    def kept_logs(self, job: Job) -> Path | None:
        """Where a finished build's logs are kept outside the registered image (if anywhere)."""
        return None


def target_for(env: Environment) -> Target:
    """The environment's target, chosen once from its `target:` setting."""
    module, cls = TARGETS[env.settings.target].split(":")
    chosen: type[Target] = getattr(importlib.import_module(module), cls)
    return chosen(env)


def require_sandbox(env: Environment) -> None:
    """The sandbox commands (`invoke sandbox.*`) serve target sandbox only."""
    if env.settings.target != "sandbox":
        raise ConfigError(
            f"{env.rel(env.settings_file)}: field target: environment {env.name!r} has "
            f"target {env.settings.target!r}; the sandbox needs target 'sandbox' (try --env sandbox)"
        )

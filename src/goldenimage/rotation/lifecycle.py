"""One rotate or rollback run of one group: its life cycle around the run loop.

Preflight (launch template, target image, lock, steadiness), the new launch-template
version, finishing (restore what the rotation changed, record the outcome, release the
lock), the rollback after an abort, and the safe stop after Ctrl-C or an unexpected error.
The entry points (`rotate`, `rollback`) are in executor.py; the loop in loop.py.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, GoldenImageError, Interrupted, NotFoundError
from ..models import FINGERPRINT_TAG, ROTATION_VERSION_DESCRIPTION, STATUS_TAG
from ..progress import Reporter
from .adapter import RotationAws
from .clock import Clock, StopFlag, Stopped
from .loop import NOT_COUNTED, RollingStrategy, RotationFailed, RunLoop, Strategy
from .plan import PlanError
from .policy import GroupPolicy
from .state import (
    CURRENT_IMAGE,
    CURRENT_VERSION,
    LAST_ROTATION,
    PREVIOUS_IMAGE,
    PREVIOUS_VERSION,
    RotationState,
    clear_keys,
    default_owner,
    iso,
    tag_map,
)


def one_line(text: str, limit: int = 400) -> str:
    return " ".join(str(text).split())[:limit]


class Rotation:
    """One rotate or rollback run of one group."""

    def __init__(
        self,
        clients: Any,
        policy: GroupPolicy,
        reporter: Reporter,
        *,
        clock: Clock | None = None,
        owner: str | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self.clients = clients
        self.policy = policy
        self.reporter = reporter
        self.clock = clock or Clock()
        self.owner = owner or default_owner()
        self.aws = RotationAws(clients, policy.asg)
        self.loop = RunLoop(self.aws, policy, reporter, clock=self.clock, stop=stop or StopFlag())
        self.active: Strategy | None = None  # the strategy running now (for the safe stop)

    @property
    def name(self) -> str:
        return self.policy.asg

    @property
    def st(self) -> RotationState | None:
        return self.loop.st

    # ---- preflight -----------------------------------------------------------------

    def template_of(self, raw: dict[str, Any]) -> dict[str, str]:
        lt = raw.get("LaunchTemplate")
        if not lt:
            what = "mixed instances policy" if raw.get("MixedInstancesPolicy") else "launch config"
            raise ConfigError(f"group {self.name}: uses a {what}; the rotator needs a launch template")
        return {"id": lt["LaunchTemplateId"], "version": str(lt.get("Version", "$Default"))}

    def check_image(self, image_id: str, *, require_validated: bool) -> None:
        img = self.aws.image(image_id)
        if img is None:
            ctx = getattr(self.clients, "ctx", None)
            where = f" in region {ctx.region}" if ctx is not None else ""
            raise NotFoundError(f"image {image_id} not found{where}")
        if img.get("State", "available") != "available":
            raise ConfigError(f"image {image_id} is {img.get('State')}, not available")
        tags = {t["Key"]: t["Value"] for t in img.get("Tags", [])}
        status = tags.get(STATUS_TAG)
        self.loop.fingerprint = tags.get(FINGERPRINT_TAG, "")
        if require_validated and status != "validated":
            why = f"is {status}" if status else f"has no {STATUS_TAG} tag (not a registered image)"
            raise ConfigError(f"image {image_id} {why}: only validated images may be rotated in")

    def check_lock(self, tags: dict[str, str], resume: bool) -> RotationState | None:
        st = RotationState.from_tags(tags)
        if st is None:
            return None
        now = self.clock.now()
        info = {"group": self.name, "owner": st.owner, "since": st.since, "rotation_id": st.id}
        if not st.stale(now, self.policy.heartbeat_ttl_seconds):
            raise RotationFailed(f"group {self.name} is being rotated: {st.describe(now)}", info)
        if not resume:
            raise RotationFailed(
                f"group {self.name} has an unfinished {st.describe(now)}; "
                "resume it (--resume) or roll it back (rollback)",
                info,
            )
        return st

    def acquire(self, st: RotationState) -> None:
        self.loop.st = st
        self.loop.save()
        if self.policy.lock_settle_seconds:
            self.clock.sleep(self.policy.lock_settle_seconds)
        seen = RotationState.from_tags(tag_map(self.aws.group()))
        if seen is None or seen.id != st.id or seen.owner != st.owner:
            other = seen.describe(self.clock.now()) if seen else "someone cleared the lock"
            self.loop.st = None
            raise RotationFailed(f"group {self.name}: lost the lock to {other}")

    def preflight_health(self, raw: dict[str, Any]) -> None:
        bad = [
            f"{i['InstanceId']} {i['LifecycleState']}/{i.get('HealthStatus')}"
            for i in raw["Instances"]
            if i["LifecycleState"] not in ("InService", "Standby")
            or i.get("HealthStatus", "Healthy") != "Healthy"
        ]
        live = [i for i in raw["Instances"] if i["LifecycleState"] not in NOT_COUNTED]
        if bad or len(live) != raw["DesiredCapacity"]:
            raise PlanError(
                f"group {self.name} is not steady: desired {raw['DesiredCapacity']}, "
                f"{len(live)} instances; {', '.join(bad[:5]) or 'capacity mismatch'}"
            )

    def new_version(self, lt_id: str, from_version: str, image_id: str, rid: str) -> str:
        cur = self.aws.template_version(lt_id, from_version)
        data = dict(cur["LaunchTemplateData"])
        data["ImageId"] = image_id
        if data.get("MetadataOptions", {}).get("HttpTokens") != "required":
            self.loop.warn(
                f"launch template {lt_id} does not require IMDSv2 (MetadataOptions.HttpTokens != required)"
            )
        return self.aws.new_template_version(lt_id, data, f"{ROTATION_VERSION_DESCRIPTION}{rid}: {image_id}")

    def recorded_surge(self) -> int:
        """The rotation's own capacity still in the group (a run that stopped mid-batch),
        as its state records it: never desired now minus desired then, which would count
        anyone's scaling since as the rotation's."""
        assert self.st is not None
        if self.st.surge:
            self.reporter.info(
                f"{self.name}: the rotation's own extra capacity still in the group: {self.st.surge} "
                "(as recorded; scaling by anyone else since is kept)"
            )
        return self.st.surge

    # ---- running and finishing -----------------------------------------------------

    def run(self, strategy: Strategy) -> str:
        self.active = strategy
        return self.loop.run(strategy)

    def finish(self, outcome: str, *, keep_current: bool) -> None:
        """Restore what the rotation changed, record the outcome, release the lock.

        A scale-out or scale-in by someone else during the rotation is kept (policy
        `external_scaling: keep`); max size goes back unless that would be below desired."""
        st = self.st
        assert st is not None
        raw = self.aws.group()
        desired, max_size = int(raw["DesiredCapacity"]), int(raw["MaxSize"])
        want = st.orig_desired if self.policy.external_scaling == "restore" else desired
        want_max = max(st.orig_max, want)
        if want != st.orig_desired:
            self.reporter.info(
                f"{self.name}: desired capacity {want} kept (it was {st.orig_desired} at the "
                "start; the group was scaled during the rotation)"
            )
        if want_max > st.orig_max:
            self.loop.warn(
                f"max size left at {want_max}, not {st.orig_max}: the group was scaled out to "
                f"{want} during the rotation"
            )
        if want != desired:
            self.aws.set_capacity(want, want_max)
        elif want_max != max_size:
            self.aws.set_max(want_max)
        self.loop.resume_processes()
        done: dict[str, str] = {LAST_ROTATION: f"{st.id} {outcome} {iso(self.clock.now())}"[:256]}
        if not keep_current:
            done.update(
                {
                    PREVIOUS_IMAGE: st.from_image,
                    PREVIOUS_VERSION: st.from_version,
                    CURRENT_IMAGE: st.to_image,
                    CURRENT_VERSION: st.to_version,
                }
            )
        self.aws.put_tags(done)
        self.aws.remove_tags(clear_keys(tag_map(raw)) or list(st.tags()))
        self.loop.st = None

    def roll_back(self, lt_id: str, reason: str, surge: int) -> None:
        """Back to the version and image the rotation started from; `surge`: the
        rotation's surge still in the group."""
        st = self.st
        assert st is not None
        self.reporter.warn(f"{self.name}: rolling back to {st.from_image}: {reason}")
        self.loop.save(status="running", reason=reason, progress="rolling back")
        forward = self.loop.replaced
        self.aws.pin(lt_id, st.from_version)
        self.run(RollingStrategy(st.from_image, alarms=False, inherited_surge=surge))
        self.loop.rolled_back, self.loop.replaced = self.loop.replaced, forward
        self.active = None
        self.finish(f"rolled back: {reason}", keep_current=True)

    def settle_failed_rollback(self, why: str, reason: str | None = None) -> None:
        """The rollback itself gave up: leave the group as the safe stop does, with the
        reason kept so that the next `rollback` carries on."""
        problems = self.loop.safe_stop(self.active, "failed", why)
        self.active = None
        for p in problems:
            self.reporter.warn(f"{self.name}: {p}")
        if self.st is not None:
            try:
                self.loop.save(status="failed", reason=(reason or why)[:256])
            except Exception as exc:
                self.reporter.warn(f"{self.name}: saving the rotation state: {exc}")

    def stopped(self, exc: BaseException, *, mode: str) -> GoldenImageError:
        """The safe stop after Ctrl-C or an unexpected error; returns the error to raise."""
        interrupted = isinstance(exc, Stopped | KeyboardInterrupt)
        if isinstance(exc, GoldenImageError):
            what = exc.message
        elif interrupted:
            what = "interrupted"
        else:
            what = f"unexpected {type(exc).__name__}: {exc} (a bug; --debug shows where)"
        what = one_line(what, 300)
        st = self.st
        progress = (st.progress if st else "") or "before the first batch"
        if self.active is not None:
            try:
                self.active.on_stop(self.loop, exc)
            except Exception as err:  # the clean-up below matters more
                self.reporter.warn(f"{self.name}: stopping the strategy: {err}")
        problems = self.loop.safe_stop(
            self.active, "interrupted" if interrupted else "failed", "" if interrupted else what
        )
        self.active = None
        rolling_back = bool(st and st.reason)
        if problems:
            left = (
                f"clean-up incomplete ({'; '.join(problems)})"
                f"; the lock frees itself {self.policy.heartbeat_ttl_seconds:g}s after the last heartbeat"
            )
        else:
            left = "capacity, max size and scaling processes restored"
        if mode == "rollback" or rolling_back:
            nxt = f"run `invoke rollback --group {self.name}` to finish the rollback"
        else:
            nxt = (
                f"run `invoke rotate --group {self.name} --resume` to continue or "
                f"`invoke rollback --group {self.name}` to go back"
            )
        if interrupted:
            return Interrupted(
                one_line(
                    f"interrupted at a safe point ({progress}); group {self.name} keeps its "
                    f"state ({left}): resume with --resume or roll back with rollback",
                    600,
                )
            )
        rid = st.id if st else "?"
        return RotationFailed(
            one_line(f"group {self.name}: {mode} {rid} stopped at {progress}: {what}; {left}; {nxt}", 900),
            {"group": self.name, "rotation_id": rid, "status": "failed", "problems": problems},
        )

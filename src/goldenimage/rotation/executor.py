"""Rotate or roll back one auto-scaling group: the entry points and the run's life cycle.

preflight -> lock (ASG tags) -> launch-template version (full data + new ImageId), pinned
by number -> the run loop (loop.py) with the rolling strategy (observe, `decide`, act,
batch after batch) or the refresh strategy (refresh.py) -> restore capacity, record the
previous image, clear the state.

An alarm in ALARM, a health time-out or a wrong ImageId rolls the group back with the same
loop: previous launch-template version pinned, the rotation's surge handed back,
new-image instances replaced; the result says why (exit code 1).

Anything else that stops the run (Ctrl-C, an AWS error, a bug) ends in one safe stop: the
rotation's surge handed back, max size restored, the scaling processes it paused resumed,
its state saved `interrupted` or `failed` so that `--resume` or `rollback` can take over at
once; one error line names what failed and what to run next.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..errors import ConfigError, GoldenImageError, Interrupted, NotFoundError
from ..progress import Reporter
from .adapter import RotationAws, group_state
from .clock import Clock, SimClock, StopFlag, Stopped
from .loop import (
    NOT_COUNTED,
    Abort,
    RollingStrategy,
    RotationFailed,
    RunLoop,
    Strategy,
    http_fingerprint_check,
)
from .plan import Plan, PlanError, describe_plan, plan_rotation
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

__all__ = [
    "Clock",
    "Result",
    "Rotation",
    "RotationFailed",
    "SimClock",
    "StopFlag",
    "Stopped",
    "http_fingerprint_check",
    "human_rotate",
    "rollback",
    "rotate",
]

Result = dict[str, Any]
FINGERPRINT_TAG = "goldenimage:fingerprint"
STATUS_TAG = "goldenimage:status"


def _one_line(text: str, limit: int = 400) -> str:
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
        return self.aws.new_template_version(lt_id, data, f"goldenimage rotation {rid}: {image_id}")

    def surge_in_group(self) -> int:
        """The rotation's surge still in the group (a run that stopped mid-batch)."""
        assert self.st is not None
        base = self.st.base or self.st.orig_desired
        return int(self.aws.group()["DesiredCapacity"]) - base

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
        what = _one_line(what, 300)
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
                _one_line(
                    f"interrupted at a safe point ({progress}); group {self.name} keeps its "
                    f"state ({left}): resume with --resume or roll back with rollback",
                    600,
                )
            )
        rid = st.id if st else "?"
        return RotationFailed(
            _one_line(f"group {self.name}: {mode} {rid} stopped at {progress}: {what}; {left}; {nxt}", 900),
            {"group": self.name, "rotation_id": rid, "status": "failed", "problems": problems},
        )


def _result(rot: Rotation, plan: Plan | None, **kw: Any) -> Result:
    out: Result = {
        "group": rot.name,
        "warnings": rot.loop.warnings,
        "plan": plan.to_dict() if plan else None,
        "replaced": rot.loop.replaced,
        "rolled_back": rot.loop.rolled_back,
        "total": plan.total if plan else 0,
        "left_alone": dict(rot.loop.left_alone),
    }
    out.update(kw)
    return out


def _new_id(clock: Clock) -> str:
    return f"r{time.strftime('%Y%m%dT%H%M%S', time.gmtime(clock.now()))}-{uuid.uuid4().hex[:6]}"


def _empty_plan(name: str, image_id: str, desired: int, min_size: int, max_size: int) -> Plan:
    return Plan(name, image_id, desired, min_size, max_size, 0, 0, 0, max_size, (), ())


def _drive(
    rot: Rotation,
    *,
    mode: str,
    image_id: str | None,
    to_version: str | None,
    strategy: str,
    dry_run: bool,
    resume: bool,
    require_validated: bool,
) -> Result:
    """Shared by rotate and rollback: preflight, plan, lock, apply, roll back on Abort."""
    raw = rot.aws.group()
    tmpl = rot.template_of(raw)
    tags = tag_map(raw)
    existing = rot.check_lock(tags, resume)
    if existing is not None:
        if image_id and image_id != existing.to_image and not existing.reason:
            raise ConfigError(
                f"group {rot.name}: the unfinished rotation {existing.id} targets "
                f"{existing.to_image}, not {image_id}; resume without --image-id or roll it back"
            )
        image_id = existing.to_image
    if not image_id:
        raise ConfigError(f"group {rot.name}: no target image (give --image-id or --channel)")
    lt_id = tmpl["id"]
    cur = rot.aws.template_version(lt_id, tmpl["version"])
    from_version = str(cur["VersionNumber"])
    from_image = str(cur["LaunchTemplateData"].get("ImageId", ""))
    rot.check_image(image_id, require_validated=require_validated)
    if to_version is not None:
        pinned = rot.aws.template_version(lt_id, to_version)
        if pinned["LaunchTemplateData"].get("ImageId") != image_id:
            raise ConfigError(
                f"launch template {lt_id} version {to_version} runs "
                f"{pinned['LaunchTemplateData'].get('ImageId')}, not {image_id}"
            )
    ids = [i["InstanceId"] for i in raw.get("Instances", [])]
    state = group_state(raw, rot.aws.ec2_facts(ids, refresh=True) if ids else {})
    if existing is None:
        rot.preflight_health(raw)
        try:
            rot.loop.check_alarms()
        except Abort as abort:
            raise RotationFailed(f"group {rot.name}: not starting: {abort.reason}") from None
        plan = plan_rotation(state, image_id, rot.policy)
    else:  # mid-batch: the loop observes the group again anyway
        strategy = existing.strategy or strategy
        try:
            plan = plan_rotation(state, image_id, rot.policy)
        except PlanError:
            plan = _empty_plan(rot.name, image_id, state.desired, state.min_size, state.max_size)
    base = {
        "strategy": strategy,
        "mode": mode,
        "dry_run": dry_run,
        "from_image": from_image if existing is None else existing.from_image,
        "to_image": image_id,
        "from_version": from_version if existing is None else existing.from_version,
        "launch_template": lt_id,
    }
    if dry_run:
        return _result(
            rot,
            plan,
            outcome="planned",
            to_version=to_version or "(new version)",
            plan_text=describe_plan(plan),
            exit_code=0,
            **base,
        )
    if existing is None and not plan.batches and from_image == image_id:
        rot.reporter.info(f"{rot.name}: every instance already runs {image_id}")
        return _result(rot, plan, outcome="nothing to do", to_version=from_version, exit_code=0, **base)

    now = rot.clock.now()
    if existing is not None:
        st = existing
        rot.reporter.info(f"{rot.name}: taking over {st.describe(now)}")
        if st.error:
            rot.reporter.info(f"{rot.name}: the last run stopped on: {st.error}")
        st.owner, st.since, st.status, st.error = rot.owner, iso(now), "running", ""
    else:
        st = RotationState(
            id=_new_id(rot.clock),
            owner=rot.owner,
            since=iso(now),
            heartbeat=iso(now),
            mode=mode,
            strategy=strategy,
            from_image=from_image,
            from_version=from_version,
            to_image=image_id,
            to_version=to_version or "",
            orig_desired=int(raw["DesiredCapacity"]),
            orig_max=int(raw["MaxSize"]),
            base=int(raw["DesiredCapacity"]),
        )
    rot.acquire(st)
    base.update(rotation_id=st.id)
    try:
        with rot.loop.stop.installed():
            rot.loop.suspend(raw)
            surge = rot.surge_in_group() if existing is not None else 0
            if st.reason:  # an aborted rotation was being rolled back
                try:
                    rot.roll_back(lt_id, st.reason, surge)
                except (Abort, PlanError) as again:
                    why = again.reason if isinstance(again, Abort) else again.message
                    rot.settle_failed_rollback(why, reason=st.reason)
                    raise RotationFailed(
                        f"group {rot.name}: the rollback ({st.reason}) failed: {why}; "
                        f"run `invoke rollback --group {rot.name}` again once the group is steady",
                        _result(rot, plan, outcome="rollback failed", **base),
                    ) from None
                return _result(rot, plan, outcome="rolled back", reason=st.reason, exit_code=1, **base)
            if not st.to_version:
                rot.loop.save(to_version=rot.new_version(lt_id, st.from_version, image_id, st.id))
            max_during = max(
                st.orig_max, plan.max_during, st.orig_desired + rot.policy.surge(st.orig_desired)
            )
            rot.aws.pin(lt_id, st.to_version, max(max_during, int(raw["DesiredCapacity"])))
            base["to_version"] = st.to_version
            try:
                if strategy == "refresh":
                    from .refresh import RefreshStrategy

                    outcome = rot.run(RefreshStrategy(lt_id, st.to_version))
                    rot.active = None
                    if outcome != "Successful":
                        rot.aws.pin(lt_id, st.from_version)
                        rot.finish(f"refresh {outcome}", keep_current=True)
                        return _result(rot, plan, outcome=f"refresh {outcome}", exit_code=1, **base)
                else:
                    forward = RollingStrategy(
                        image_id, inherited_surge=surge, planned_batches=len(plan.batches)
                    )
                    rot.run(forward)
                    rot.active = None
                rot.finish("done", keep_current=False)
                return _result(rot, plan, outcome="done", exit_code=0, **base)
            except Abort as abort:
                surge = rot.active.surge if rot.active is not None else 0
                rot.active = None
                try:
                    rot.roll_back(lt_id, abort.reason, surge)
                except (Abort, PlanError) as again:
                    why = again.reason if isinstance(again, Abort) else again.message
                    rot.settle_failed_rollback(f"{abort.reason}; rollback: {why}")
                    raise RotationFailed(
                        f"group {rot.name}: {abort.reason}; the rollback failed too: "
                        f"{why}; state kept in the group's tags",
                        _result(rot, plan, outcome="rollback failed", **base),
                    ) from None
                return _result(rot, plan, outcome="rolled back", reason=abort.reason, exit_code=1, **base)
    except RotationFailed:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # Stopped, AWS errors, bugs: one safe stop
        if rot.st is None:
            raise
        raise rot.stopped(exc, mode=mode) from exc


def _guard(name: str, action: str, fn: Any) -> Result:
    """No rotation ends in an internal error: a bug before anything changed says so."""
    try:
        result: Result = fn()
        return result
    except (GoldenImageError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise RotationFailed(
            _one_line(
                f"group {name}: {action} stopped before changing anything: unexpected "
                f"{type(exc).__name__}: {exc} (a bug; --debug shows where)",
                600,
            )
        ) from exc


def rotate(
    clients: Any,
    policy: GroupPolicy,
    image_id: str | None,
    *,
    reporter: Reporter,
    strategy: str | None = None,
    dry_run: bool = False,
    resume: bool = False,
    clock: Clock | None = None,
    owner: str | None = None,
    require_validated: bool = True,
    stop: StopFlag | None = None,
) -> Result:
    """Replace the instances of `policy.asg` with ones born from `image_id`.

    Returns a result dict with `exit_code` 0 (done / nothing to do / planned) or 1 (rolled
    back, with `reason`). Raises ConfigError (exit 2) for bad input, RotationFailed when
    the group is locked or unsteady or the run stopped on an error (state kept for
    --resume / rollback), Interrupted on SIGINT (likewise).
    """
    rot = Rotation(clients, policy, reporter, clock=clock, owner=owner, stop=stop)
    strat = strategy or policy.strategy
    if strat not in ("rolling", "refresh"):
        raise ConfigError(f"--strategy: {strat!r} is not one of rolling, refresh")
    with reporter.phase("rotate", f"{policy.asg} -> {image_id or 'resume'} ({strat})"):
        return _guard(
            policy.asg,
            "rotate",
            lambda: _drive(
                rot,
                mode="rotate",
                image_id=image_id,
                to_version=None,
                strategy=strat,
                dry_run=dry_run,
                resume=resume,
                require_validated=require_validated,
            ),
        )


def _rollback(rot: Rotation, dry_run: bool) -> Result:
    raw = rot.aws.group()
    tags = tag_map(raw)
    st = RotationState.from_tags(tags)
    if st is None:
        prev_image, prev_version = tags.get(PREVIOUS_IMAGE), tags.get(PREVIOUS_VERSION)
        if not prev_image or not prev_version:
            raise ConfigError(f"group {rot.name}: no previous image recorded (no finished rotation to undo)")
        return _drive(
            rot,
            mode="rollback",
            image_id=prev_image,
            to_version=prev_version,
            strategy="rolling",
            dry_run=dry_run,
            resume=False,
            require_validated=False,
        )
    rot.check_lock(tags, resume=True)  # refuses a live owner
    if dry_run:
        return _result(
            rot,
            None,
            outcome="planned",
            dry_run=True,
            mode="rollback",
            to_image=st.from_image,
            to_version=st.from_version,
            exit_code=0,
        )
    st.status, st.reason, st.error = "running", st.reason or "rollback requested", ""
    st.owner = rot.owner
    rot.acquire(st)
    lt_id = rot.template_of(raw)["id"]
    try:
        with rot.loop.stop.installed():
            rot.loop.suspend(raw)
            try:
                rot.roll_back(lt_id, st.reason, rot.surge_in_group())
            except (Abort, PlanError) as again:
                why = again.reason if isinstance(again, Abort) else again.message
                rot.settle_failed_rollback(why)
                raise RotationFailed(f"rollback of {rot.name} failed: {why}") from None
    except RotationFailed:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        if rot.st is None:
            raise
        raise rot.stopped(exc, mode="rollback") from exc
    return _result(
        rot,
        None,
        outcome="rolled back",
        mode="rollback",
        rotation_id=st.id,
        to_image=st.from_image,
        to_version=st.from_version,
        exit_code=0,
    )


def rollback(
    clients: Any,
    policy: GroupPolicy,
    *,
    reporter: Reporter,
    dry_run: bool = False,
    clock: Clock | None = None,
    owner: str | None = None,
    stop: StopFlag | None = None,
) -> Result:
    """Return the group to the image it ran before the last rotation (exact AMI + version).

    An unfinished rotation whose owner is gone is rolled back to where it started.
    """
    rot = Rotation(clients, policy, reporter, clock=clock, owner=owner, stop=stop)
    with reporter.phase("rollback", policy.asg):
        return _guard(policy.asg, "rollback", lambda: _rollback(rot, dry_run))


def human_rotate(result: Result) -> list[str]:
    """Human lines for a rotate/rollback result."""
    g = result.get("group", "?")
    outcome = result.get("outcome", "?")
    lines: list[str] = []
    if outcome == "planned":
        lines.extend(result.get("plan_text") or [])
        lines.append(f"{g}: dry run, nothing changed")
    elif outcome == "nothing to do":
        lines.append(f"{g}: nothing to do: every instance runs {result.get('to_image', '?')}")
    else:
        rid = result.get("rotation_id")
        lines.append(
            f"{g}: {result.get('mode', 'rotate')} {outcome}"
            + (f" ({rid})" if rid else "")
            + f": {result.get('from_image', '?')} -> {result.get('to_image', '?')}"
            + (f", launch template version {result['to_version']}" if result.get("to_version") else "")
        )
        lines.append(f"  replaced {result.get('replaced', 0)}/{result.get('total', 0)}")
        for iid, why in sorted((result.get("left_alone") or {}).items()):
            lines.append(f"  left alone: {iid}: {why}")
    if result.get("reason"):
        lines.append(f"  reason: {result['reason']}")
    for w in result.get("warnings") or []:
        lines.append(f"  warning: {w}")
    return lines

"""Rotate or roll back one auto-scaling group: the entry points (`rotate`, `rollback`).

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

Module map: adapter.py (every AWS call), clock.py (clocks, the stop flag), plan.py (the
up-front plan for the dry run), decide.py (the pure per-step decision), loop.py (the run
loop, its strategy hooks, the rolling strategy, the safe stop), refresh.py (the Instance
Refresh strategy), lifecycle.py (preflight, lock, finish, rollback, stop), state.py (the
state in the group's tags), policy.py (the per-group policy).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..errors import ConfigError, GoldenImageError
from ..progress import Reporter
from .adapter import group_state
from .clock import Clock, SimClock, StopFlag, Stopped
from .lifecycle import Rotation, one_line
from .loop import (
    Abort,
    RollingStrategy,
    RotationFailed,
    http_fingerprint_check,
)
from .plan import Plan, PlanError, describe_plan, plan_rotation
from .policy import GroupPolicy
from .state import (
    PREVIOUS_IMAGE,
    PREVIOUS_VERSION,
    RotationState,
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
        )
    rot.acquire(st)
    base.update(rotation_id=st.id)
    try:
        with rot.loop.stop.installed():
            rot.loop.suspend(raw)
            surge = rot.recorded_surge() if existing is not None else 0
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
            one_line(
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
                rot.roll_back(lt_id, st.reason, rot.recorded_surge())
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

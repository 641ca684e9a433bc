"""The pure per-batch decision: the group as observed now + target image + policy +
where the rotation stands -> the next step. No I/O.

`plan_rotation` (plan.py) plans every batch up front for the dry run; while a rotation
runs, the group may change under it (someone scales it out or in, puts an instance into
Standby, terminates or detaches one), so the run loop observes the group before every
batch and every wait and asks `decide` what to do now:

- `wait`: the group is not settled (fewer or more instances than desired, instances on the
  target image not yet InService and healthy): observe again later;
- `abort`: an instance launched during the rotation runs another image: roll back;
- `absorb`: someone lowered desired below the rotation's extra capacity: the part of it
  their scale-in took is theirs now (`surge` says what is still the rotation's own);
- `grow`: the rotation owes the group capacity (it terminated instances before launching
  their replacements and was stopped in between): raise desired by that much;
- `retire`: a batch is in flight and the group is settled: terminate (decrementing desired)
  the batch's old instances still in the group, or other outdated ones in their place; when
  no outdated instance is left to match the surge (they left the group meanwhile), the
  surplus new ones (`extra`, launched last first) go instead: the rotator chooses them, not
  the group's scale-in;
- `launch`: start the next batch: terminate `terminate_first`, then raise desired by
  `launch - len(terminate_first)` relative to the group's desired now;
- `done`: every replaceable instance runs the target image and nothing is in flight.

Capacity is always relative: `Progress.surge` is the rotation's own share of the group's
desired capacity, so `base = desired - surge` is what the group would run without the
rotation, and whatever anybody else did to desired is kept. When someone lowers desired
below the surge, `own_share` decides what is left of it: never so much that handing it
back would take the group below one instance or below its min size. Instances launched by anyone
while the group is pinned to the new version run the target image and count as done;
instances that left the group are simply not in the observation; Standby instances are
left alone (unless the policy says terminate) and do not serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .plan import LEAVING, STANDBY, GroupState, Instance, _az_round_robin, protected_rule
from .policy import GroupPolicy

Kind = Literal["wait", "abort", "absorb", "grow", "retire", "launch", "done"]


@dataclass(frozen=True)
class Progress:
    """Where the rotation stands (kept by the run loop between observations)."""

    surge: int = 0  # the rotation's own share of the group's desired capacity now
    outs: tuple[str, ...] = ()  # old instances of the batch in flight, retired first
    seen: frozenset[str] = frozenset()  # instances present before the batch in flight
    replaced: int = 0  # old instances retired so far
    batches: int = 0  # batches started
    passed: tuple[int, ...] = ()  # checkpoint percentages already passed


@dataclass(frozen=True)
class Step:
    kind: Kind
    why: str = ""  # wait / abort: what is missing or wrong
    out: tuple[str, ...] = ()  # launch: the batch's old instances; retire: terminate now
    out_azs: tuple[str, ...] = ()
    terminate_first: tuple[str, ...] = ()  # launch: terminated before the launch
    drop: tuple[str, ...] = ()  # launch/done: outdated Standby instances to terminate
    launch: int = 0  # launch: new instances
    desired: int = 0  # launch / grow: desired capacity to set
    max_size: int = 0  # launch / grow: max size needed (>= the group's max now)
    extra: tuple[str, ...] = ()  # retire: surplus instances on the target, no old one left
    healthy_floor: int = 0  # lowest healthy in-service capacity this step allows
    checkpoint: int | None = None  # launch: checkpoint reached when this batch is done
    base: int = 0  # the group's desired capacity without the rotation
    surge: int = 0  # absorb: the rotation's own share of desired from now on
    stuck: bool = False  # wait: nothing in flight will change it (the pause grows)
    min_healthy: int = 0
    remaining: int = 0  # outdated instances still to replace (this batch included)
    left_alone: dict[str, str] = field(default_factory=dict)  # instance -> why


def _live(i: Instance) -> bool:
    return i.lifecycle not in LEAVING and i.lifecycle not in STANDBY


def _classify(
    state: GroupState, target: str, policy: GroupPolicy
) -> tuple[list[Instance], list[Instance], dict[str, str], list[str]]:
    """(replaceable live outdated, outdated Standby to drop, left alone, blocked)."""
    todo: list[Instance] = []
    drop: list[Instance] = []
    alone: dict[str, str] = {}
    blocked: list[str] = []
    for inst in sorted(state.instances, key=lambda i: i.id):
        if inst.lifecycle in LEAVING or inst.image_id == target:
            continue
        if not inst.image_id:
            continue  # not described yet: the next observation will know
        rule = protected_rule(inst, policy)
        if inst.lifecycle in STANDBY:
            if policy.standby == "terminate" and rule is not None:  # protection wins
                kind, why = rule
                if kind == "ignore":
                    alone[inst.id] = f"in standby, {why}"
                else:
                    blocked.append(why)
            elif policy.standby == "terminate" and inst.lifecycle == "Standby":
                drop.append(inst)
            elif policy.standby == "wait":
                blocked.append(f"{inst.id} is in standby")
            else:
                alone[inst.id] = "in standby: left alone, not serving (policy standby: ignore)"
            continue
        if rule is not None:
            kind, why = rule
            if kind == "ignore":
                alone[inst.id] = why
            else:
                blocked.append(why)
            continue
        todo.append(inst)
    return todo, drop, alone, blocked


def order_outdated(todo: list[Instance], first: tuple[str, ...] = ()) -> list[Instance]:
    """Replacement order: `first` ids, then instances that do not serve (they cost no
    capacity), then the serving ones round-robin over the zones with the most left."""
    head = [i for i in todo if i.id in first]
    rest = [i for i in todo if i.id not in first]
    return (
        sorted(head, key=lambda i: first.index(i.id))
        + [i for i in rest if not i.serving]
        + _az_round_robin([i for i in rest if i.serving])
    )


def _unsettled(state: GroupState, live: list[Instance], target: str, prog: Progress) -> str:
    """'' when the group has what it wants and its instances on the target serve; else
    what is missing."""
    missing = state.desired - len(live)
    new = [i for i in live if i.image_id == target or not i.image_id]
    waiting = [i for i in new if not i.serving]
    if missing > 0 or waiting:
        ready = sum(1 for i in new if i.serving and i.id not in prog.seen)
        return f"{ready}/{ready + len(waiting) + max(0, missing)} InService"
    if missing < 0:
        return f"scaling in: {len(live)} instances, desired {state.desired}"
    return ""


def own_share(desired: int, min_size: int, surge: int) -> int:
    """What is still the rotation's own of its `surge` in a group whose desired capacity
    is `desired` now: someone who lowered desired below the surge took the rest. Handing
    the result back never leaves the group with no instance (while its desired has one)
    or below its min size. Capacity owed (a negative surge) is owed whatever happens."""
    if surge <= 0:
        return surge
    keep = max(min_size, 1) if desired > 0 else 0
    return min(surge, max(0, desired - keep))


def decide(state: GroupState, target: str, policy: GroupPolicy, prog: Progress) -> Step:
    """The next step of the rotation of `state` to `target` (see the module doc)."""
    own = own_share(state.desired, state.min_size, prog.surge)
    if own != prog.surge:
        return Step(
            "absorb",
            why=(
                f"desired capacity {state.desired} (set by someone else) is below the rotation's "
                f"extra capacity {prog.surge}: {own} of it is still the rotation's to hand back"
            ),
            surge=own,
            base=state.desired - own,
            min_healthy=policy.min_healthy(max(state.desired - own, 0)),
        )
    base = state.desired - prog.surge
    min_healthy = policy.min_healthy(max(base, 0))
    live = [i for i in state.instances if _live(i)]
    todo, drop, alone, blocked = _classify(state, target, policy)
    serving = sum(1 for i in live if i.serving)

    def step(kind: Kind, **kw: Any) -> Step:
        return Step(
            kind,
            base=base,
            min_healthy=min_healthy,
            left_alone=alone,
            remaining=len(todo) + len(drop),
            **kw,
        )

    if prog.seen:
        wrong = [i for i in live if i.id not in prog.seen and i.image_id and i.image_id != target]
        if wrong:
            what = ", ".join(f"{i.id} runs {i.image_id}" for i in wrong[:3])
            return step("abort", why=f"wrong image: {what}, expected {target}")

    if prog.surge < 0:  # capacity owed: give it back before anything else
        want = state.desired - prog.surge
        return step(
            "grow",
            desired=want,
            max_size=max(state.max_size, want),
            healthy_floor=serving,
        )

    why = _unsettled(state, live, target, prog)
    if why:
        return step("wait", why=why, healthy_floor=serving)

    if prog.surge > 0:
        order = order_outdated(todo, prog.outs)
        chosen: list[Instance] = []
        left = serving
        held = 0
        for inst in order:
            if len(chosen) == prog.surge:
                break
            cost = 1 if inst.serving else 0
            if left - cost < min_healthy:
                held += 1
                continue
            chosen.append(inst)
            left -= cost
        extra: list[Instance] = []
        if not held:  # outdated ones ran out: the surge's surplus goes, newest first
            on_target = [i for i in live if i.image_id == target]
            on_target.sort(key=lambda i: (i.serving, i.id in prog.seen, i.id))
            for inst in on_target:
                if len(chosen) + len(extra) == prog.surge:
                    break
                cost = 1 if inst.serving else 0
                if left - cost < min_healthy:
                    held += 1
                    break
                extra.append(inst)
                left -= cost
        if not chosen and not extra:  # never a retire of nothing (it would spin)
            why = (
                f"no room to retire: {serving} healthy, minimum {min_healthy}"
                if held
                else f"no instance the rotation may retire for its {prog.surge} extra"
            )
            return step("wait", why=why, healthy_floor=serving, stuck=True)
        return step(
            "retire",
            out=tuple(i.id for i in chosen),
            out_azs=tuple(i.az for i in chosen),
            extra=tuple(i.id for i in extra),
            healthy_floor=left,
        )

    dropped = tuple(i.id for i in drop)
    if blocked:
        return step(
            "wait",
            why=f"{', '.join(blocked)} (policy says wait)",
            drop=dropped,
            healthy_floor=serving,
            stuck=True,
        )
    if not todo:
        return step("done", drop=dropped, healthy_floor=serving)

    order = order_outdated(todo)
    total = prog.replaced + len(order)
    size = policy.batch_count(max(base, 1))
    surge = policy.surge(max(base, 0))
    cap = min(size, len(order))
    counts = [(p, math.ceil(total * p / 100)) for p in policy.checkpoints if p not in prog.passed]
    nxt = next((c for _, c in counts if c > prog.replaced), None)
    if nxt is not None:
        cap = max(1, min(cap, nxt - prog.replaced))
    for b in range(cap, 0, -1):
        cand = order[:b]
        n_first = max(0, b - surge)
        if n_first and state.desired - n_first < state.min_size:
            continue  # AWS refuses to decrement below the min size
        first = sorted(cand, key=lambda i: (i.serving, order.index(i)))[:n_first]
        cost = sum(1 for i in first if i.serving)
        if cost == 0 or serving - cost >= min_healthy:  # a pure surge never costs
            break
    else:
        return step(
            "wait",
            why=(
                f"no room to replace anything: {serving} healthy, minimum {min_healthy}, "
                f"surge {surge}, min size {state.min_size}"
            ),
            drop=dropped,
            healthy_floor=serving,
            stuck=True,
        )
    desired = state.desired - len(first) + b
    done = prog.replaced + b
    checkpoint = None
    for p, c in counts:
        if c <= done:
            checkpoint = p
    return step(
        "launch",
        out=tuple(i.id for i in cand),
        out_azs=tuple(i.az for i in cand),
        terminate_first=tuple(i.id for i in first),
        drop=dropped,
        launch=b,
        desired=desired,
        max_size=max(state.max_size, desired),
        healthy_floor=serving - cost,
        checkpoint=checkpoint,
    )


def after_launch(prog: Progress, step: Step, seen: frozenset[str], first_done: int) -> Progress:
    """Progress once `step` (a launch) was applied: `first_done` of its terminate_first
    were terminated (decrementing desired; `prog.surge` already counts them), then desired
    was raised by `step.launch`; `seen`: the instances before the launch."""
    return replace(
        prog,
        surge=prog.surge + step.launch,
        outs=tuple(i for i in step.out if i not in step.terminate_first),
        seen=seen,
        replaced=prog.replaced + first_done,
        batches=prog.batches + 1,
    )

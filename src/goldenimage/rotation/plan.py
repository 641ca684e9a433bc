"""The pure rotation planner: group state + target image + policy -> ordered batches.

No I/O. The executor reads the group (`GroupState`), calls `plan_rotation`, prints or
applies the batches. Every batch works the same way:

1. terminate `terminate_first` (only when the batch is larger than the surge allowance;
   never costs more healthy capacity than the policy's minimum allows, never takes desired
   below the group's min size), decrementing desired;
2. raise desired to `desired_during`: `launch` new instances start from the new image;
3. when they are InService, healthy and warm, terminate the rest of `out`, decrementing
   desired back to the group's desired capacity.

Instances already on the target image are skipped; the instances of each batch are taken
round-robin from the availability zones with the most outdated instances left, so the
group stays balanced. Same input, same plan.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import OperationFailed
from .policy import GroupPolicy

LEAVING = frozenset(
    {
        "Terminating",
        "Terminating:Wait",
        "Terminating:Proceed",
        "Terminated",
        "Detaching",
        "Detached",
    }
)
STANDBY = frozenset({"Standby", "EnteringStandby"})


class PlanError(OperationFailed):
    """The group cannot be rotated as it is (unhealthy, blocked instances, no room)."""


@dataclass(frozen=True)
class Instance:
    id: str
    az: str
    image_id: str
    lifecycle: str = "InService"
    healthy: bool = True
    protected: bool = False
    version: str = ""  # launch-template version the ASG reports (informative: AMI decides)

    @property
    def serving(self) -> bool:
        """Counts as healthy in-service capacity."""
        return self.lifecycle == "InService" and self.healthy


@dataclass(frozen=True)
class GroupState:
    name: str
    desired: int
    min_size: int
    max_size: int
    instances: tuple[Instance, ...]

    @property
    def serving(self) -> int:
        return sum(1 for i in self.instances if i.serving)


@dataclass(frozen=True)
class Batch:
    index: int  # 1-based
    out: tuple[str, ...]  # instances this batch replaces, in order
    out_azs: tuple[str, ...]  # their availability zones, same order
    terminate_first: tuple[str, ...]  # subset of `out` terminated before launching
    launch: int  # new instances launched by this batch
    desired_during: int  # desired capacity while the new instances launch
    max_during: int  # max size needed while they launch
    healthy_floor: int  # lowest healthy in-service capacity during the batch
    replaced_after: int  # instances replaced once this batch is done
    checkpoint: int | None = None  # checkpoint percentage reached by this batch

    @property
    def terminate_after(self) -> tuple[str, ...]:
        return tuple(i for i in self.out if i not in self.terminate_first)


@dataclass(frozen=True)
class Plan:
    group: str
    target_image: str
    desired: int
    min_size: int
    max_size: int
    min_healthy: int
    surge: int
    batch_size: int
    max_during: int
    batches: tuple[Batch, ...]
    skipped: tuple[str, ...]  # already on the target image
    ignored: dict[str, str] = field(default_factory=dict)  # instance -> why it is left alone

    @property
    def total(self) -> int:
        return sum(len(b.out) for b in self.batches)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total"] = self.total
        for b, raw in zip(self.batches, d["batches"], strict=True):
            raw["terminate_after"] = list(b.terminate_after)
        return d


def _az_round_robin(instances: list[Instance]) -> list[Instance]:
    """Take instances one at a time from the zone with the most left (ties: zone name)."""
    by_az: dict[str, list[Instance]] = defaultdict(list)
    for i in sorted(instances, key=lambda i: (i.az, i.id)):
        by_az[i.az].append(i)
    order: list[Instance] = []
    while by_az:
        az = min(by_az, key=lambda z: (-len(by_az[z]), z))
        order.append(by_az[az].pop(0))
        if not by_az[az]:
            del by_az[az]
    return order


def protected_rule(inst: Instance, policy: GroupPolicy) -> tuple[str, str] | None:
    """What the policy does with a scale-in-protected instance: ("ignore", why it is left
    alone) or ("wait", why the rotation must wait); None: it is replaced like any other.
    The up-front plan and the per-step decision (`decide`) both apply it."""
    if not inst.protected or policy.protected not in ("ignore", "wait"):
        return None
    if policy.protected == "ignore":
        return "ignore", "protected from scale-in (policy protected: ignore)"
    return "wait", f"{inst.id} is protected from scale-in"


def _classify(
    state: GroupState, target_image: str, policy: GroupPolicy
) -> tuple[list[Instance], list[str], dict[str, str]]:
    replace: list[Instance] = []
    skipped: list[str] = []
    ignored: dict[str, str] = {}
    blocked: list[str] = []
    for inst in sorted(state.instances, key=lambda i: i.id):
        if inst.lifecycle in LEAVING:
            ignored[inst.id] = f"leaving the group ({inst.lifecycle})"
            continue
        if inst.image_id == target_image:
            skipped.append(inst.id)
            continue
        if inst.lifecycle in STANDBY:
            if policy.standby == "ignore":
                ignored[inst.id] = "in standby (policy standby: ignore)"
                continue
            if policy.standby == "wait":
                blocked.append(f"{inst.id} is in standby")
                continue
        if (rule := protected_rule(inst, policy)) is not None:
            kind, why = rule
            if kind == "ignore":
                ignored[inst.id] = why
            else:
                blocked.append(why)
            continue
        replace.append(inst)
    if blocked:
        raise PlanError(
            f"group {state.name}: {', '.join(blocked)} (policy says wait; "
            "release them or set protected/standby to ignore or replace)"
        )
    return replace, skipped, ignored


def plan_rotation(state: GroupState, target_image: str, policy: GroupPolicy) -> Plan:
    """The ordered batches that move every outdated instance of `state` to `target_image`."""
    desired = state.desired
    min_healthy = policy.min_healthy(desired)
    surge = policy.surge(desired)
    size = policy.batch_count(desired)
    replace, skipped, ignored = _classify(state, target_image, policy)
    serving = state.serving
    if replace and serving < min_healthy:
        raise PlanError(
            f"group {state.name}: {serving} healthy in-service instances, below the minimum "
            f"of {min_healthy} ({policy.min_healthy_percent}% of {desired}); fix the group first"
        )
    # Instances that do not serve cost no capacity: replace them first.
    order = [i for i in replace if not i.serving] + _az_round_robin([i for i in replace if i.serving])
    total = len(order)
    cp_counts = [(p, math.ceil(total * p / 100)) for p in policy.checkpoints]
    batches: list[Batch] = []
    done = 0
    max_during = state.max_size
    while done < total:
        remaining = order[done:]
        cap = min(size, len(remaining))
        nxt = next((c for _, c in cp_counts if c > done), None)
        if nxt is not None:
            cap = min(cap, nxt - done)
        chosen: list[Instance] | None = None
        first: list[Instance] = []
        for b in range(cap, 0, -1):
            cand = remaining[:b]
            n_first = max(0, b - surge)
            if n_first and desired - n_first < state.min_size:
                continue  # AWS refuses to decrement below the min size
            # what is terminated first: non-serving instances before serving ones
            first = sorted(cand, key=lambda i: (i.serving, order.index(i)))[:n_first]
            cost = sum(1 for i in first if i.serving)
            if serving - cost >= min_healthy:
                chosen = cand
                break
        if chosen is None:
            raise PlanError(
                f"group {state.name}: no room to replace anything: {serving} healthy, minimum "
                f"{min_healthy}, surge {surge}, min size {state.min_size}; allow a surge or lower "
                "min_healthy_percent (or the group's min size)"
            )
        b = len(chosen)
        desired_during = desired - len(first) + b
        cost = sum(1 for i in first if i.serving)
        done += b
        checkpoint = None
        for p, c in cp_counts:
            if done - b < c <= done:
                checkpoint = p
        batches.append(
            Batch(
                index=len(batches) + 1,
                out=tuple(i.id for i in chosen),
                out_azs=tuple(i.az for i in chosen),
                terminate_first=tuple(i.id for i in first),
                launch=b,
                desired_during=desired_during,
                max_during=max(state.max_size, desired_during),
                healthy_floor=serving - cost,
                replaced_after=done,
                checkpoint=checkpoint,
            )
        )
        max_during = max(max_during, desired_during)
        # new instances come up healthy before the old serving ones leave
        serving = serving - sum(1 for i in chosen if i.serving) + b
    return Plan(
        group=state.name,
        target_image=target_image,
        desired=desired,
        min_size=state.min_size,
        max_size=state.max_size,
        min_healthy=min_healthy,
        surge=surge,
        batch_size=size,
        max_during=max_during,
        batches=tuple(batches),
        skipped=tuple(skipped),
        ignored=ignored,
    )


def describe_plan(plan: Plan) -> list[str]:
    """Human lines: per batch the instances out, the instances in and the capacity during."""
    lines = [
        f"group {plan.group}: {plan.total} to replace in {len(plan.batches)} batch(es) -> "
        f"{plan.target_image}; desired {plan.desired}, min healthy {plan.min_healthy}, "
        f"surge {plan.surge}, max during {plan.max_during}"
    ]
    if plan.skipped:
        lines.append(f"  already on target: {len(plan.skipped)}")
    for iid, why in sorted(plan.ignored.items()):
        lines.append(f"  left alone: {iid}: {why}")
    n = len(plan.batches)
    for b in plan.batches:
        outs = ", ".join(f"{i} ({az})" for i, az in zip(b.out, b.out_azs, strict=True))
        first = f"; first out {len(b.terminate_first)}" if b.terminate_first else ""
        cp = f"; checkpoint {b.checkpoint}%" if b.checkpoint is not None else ""
        lines.append(
            f"  batch {b.index}/{n}: out {outs} | in {b.launch} | desired {b.desired_during}, "
            f"max {b.max_during}, healthy >= {b.healthy_floor}{first}{cp}"
        )
    if not plan.batches:
        lines.append("  nothing to do: every instance runs the target image")
    return lines

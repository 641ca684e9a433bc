"""The per-step decision: table-driven cases (tests/unit/rotation_cases/steps/*.json) and
a property: replaying `decide` on a steady toy group rotates it like `plan_rotation`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldenimage.rotation.decide import Progress, Step, after_launch, decide
from goldenimage.rotation.plan import GroupState, Instance, PlanError, plan_rotation
from goldenimage.rotation.policy import GroupPolicy

CASES = sorted((Path(__file__).parent / "rotation_cases" / "steps").glob("*.json"))


def _state(raw: dict[str, Any]) -> GroupState:
    return GroupState(
        name="web",
        desired=raw["desired"],
        min_size=raw["min_size"],
        max_size=raw["max_size"],
        instances=tuple(Instance(**i) for i in raw["instances"]),
    )


def _progress(raw: dict[str, Any]) -> Progress:
    return Progress(
        surge=raw.get("surge", 0),
        outs=tuple(raw.get("outs", ())),
        seen=frozenset(raw.get("seen", ())),
        replaced=raw.get("replaced", 0),
        batches=raw.get("batches", 0),
        passed=tuple(raw.get("passed", ())),
    )


def _got(step: Step, key: str) -> Any:
    value = getattr(step, key)
    if key == "left_alone":
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_step_case(path: Path) -> None:
    case = json.loads(path.read_text())
    step = decide(
        _state(case["group"]),
        case["target"],
        GroupPolicy(**case["policy"]),
        _progress(case["progress"]),
    )
    for key, want in case["expect"].items():
        got = _got(step, key)
        if key == "why":
            assert want in got, (path.stem, got)
        else:
            assert got == want, (path.stem, key, got, step)


# ---- property: on a group nobody touches, stepping = the up-front plan ---------------

AZS = ["us-east-1a", "us-east-1b", "us-east-1c"]


def _replay(state: GroupState, target: str, policy: GroupPolicy) -> list[tuple[str, ...]]:
    """Apply `decide` to a toy group that does exactly what it is told."""
    inst = {i.id: i for i in state.instances}
    desired = state.desired
    prog = Progress()
    batches: list[tuple[str, ...]] = []
    n = 0
    for _ in range(200):
        s = decide(replace(state, desired=desired, instances=tuple(inst.values())), target, policy, prog)
        if s.kind == "done":
            return batches
        assert s.kind in ("launch", "retire"), s
        if s.kind == "launch":
            batches.append(s.out)
            seen = frozenset(inst)
            for iid in s.terminate_first:
                del inst[iid]
            prog = replace(prog, surge=prog.surge - len(s.terminate_first))
            for _k in range(s.launch):
                n += 1
                inst[f"i-new{n:04d}"] = Instance(f"i-new{n:04d}", AZS[n % 3], target)
            desired = s.desired
            prog = after_launch(prog, s, seen, len(s.terminate_first))
        else:
            for iid in (*s.out, *s.extra):
                del inst[iid]
            desired -= len(s.out) + len(s.extra)
            prog = replace(
                prog,
                surge=prog.surge - len(s.out) - len(s.extra),
                replaced=prog.replaced + len(s.out),
                outs=(),
                seen=frozenset(),
            )
    raise AssertionError("no end")


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 30),
    batch=st.integers(1, 8),
    surge=st.integers(1, 100),
    min_healthy=st.integers(0, 100),
    old=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_stepping_a_steady_group_replaces_what_the_plan_replaces(
    n: int, batch: int, surge: int, min_healthy: int, old: list[bool]
) -> None:
    instances = tuple(
        Instance(f"i-{k:04d}", AZS[k % 3], "ami-old" if old[k] else "ami-new") for k in range(n)
    )
    state = GroupState("web", n, 0, 2 * n + 10, instances)
    policy = GroupPolicy(batch_size=batch, max_surge_percent=surge, min_healthy_percent=min_healthy)
    try:
        plan = plan_rotation(state, "ami-new", policy)
    except PlanError:
        return
    stepped = _replay(state, "ami-new", policy)
    assert stepped == [b.out for b in plan.batches]

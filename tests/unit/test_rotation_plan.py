"""The pure planner: table-driven cases (tests/unit/rotation_cases/*.json) and properties."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldenimage.rotation.plan import (
    GroupState,
    Instance,
    Plan,
    PlanError,
    describe_plan,
    plan_rotation,
)
from goldenimage.rotation.policy import GroupPolicy

CASES = sorted((Path(__file__).parent / "rotation_cases").glob("*.json"))


def _state(raw: dict[str, Any]) -> GroupState:
    return GroupState(
        name="web",
        desired=raw["desired"],
        min_size=raw["min_size"],
        max_size=raw["max_size"],
        instances=tuple(Instance(**i) for i in raw["instances"]),
    )


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_plan_case(path: Path) -> None:
    case = json.loads(path.read_text())
    state = _state(case["group"])
    policy = GroupPolicy(**case["policy"])
    if "error" in case:
        with pytest.raises(PlanError, match=case["error"]):
            plan_rotation(state, case["target"], policy)
        return
    plan = plan_rotation(state, case["target"], policy)
    exp = case["expect"]
    assert list(plan.skipped) == exp["skipped"]
    assert sorted(plan.ignored) == exp["ignored"]
    assert plan.max_during == exp["max_during"]
    got = [
        {
            "out": list(b.out),
            "terminate_first": list(b.terminate_first),
            "launch": b.launch,
            "desired_during": b.desired_during,
            "healthy_floor": b.healthy_floor,
            "checkpoint": b.checkpoint,
        }
        for b in plan.batches
    ]
    assert got == exp["batches"]
    assert describe_plan(plan)  # printable
    json.dumps(plan.to_dict())  # serialisable


def test_batches_spread_over_zones() -> None:
    inst = tuple(
        Instance(f"i-{az}{n:02d}", f"us-east-1{az}", "ami-old") for az in "abc" for n in range(4)
    )
    plan = plan_rotation(
        GroupState("web", 12, 12, 12, inst),
        "ami-new",
        GroupPolicy(batch_size="25%", max_surge_percent=25),
    )
    assert [len(b.out) for b in plan.batches] == [3, 3, 3, 3]
    for b in plan.batches:
        assert sorted(Counter(b.out_azs).values()) == [1, 1, 1]


# ---- properties -----------------------------------------------------------------------

AZS = ["us-east-1a", "us-east-1b", "us-east-1c"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[GroupState, GroupPolicy]:
    n = draw(st.integers(min_value=0, max_value=40))
    instances = []
    for k in range(n):
        instances.append(
            Instance(
                id=f"i-{k:04d}",
                az=draw(st.sampled_from(AZS)),
                image_id=draw(st.sampled_from(["ami-old", "ami-old", "ami-older", "ami-new"])),
                healthy=draw(st.booleans()) if draw(st.integers(0, 9)) == 0 else True,
                protected=draw(st.integers(0, 14)) == 0,
            )
        )
    surge = draw(st.integers(0, 100))
    min_healthy = draw(st.integers(0, 100 if surge else 99))
    batch: int | str = draw(
        st.one_of(st.integers(1, 12), st.integers(1, 100).map(lambda p: f"{p}%"))
    )
    policy = GroupPolicy(
        batch_size=batch,
        max_surge_percent=surge,
        min_healthy_percent=min_healthy,
        protected=draw(st.sampled_from(["ignore", "replace"])),
        checkpoints=draw(st.lists(st.integers(1, 100), unique=True, max_size=3).map(sorted)),
    )
    return GroupState("web", n, 0, n + draw(st.integers(0, 5)), tuple(instances)), policy


def _simulate(state: GroupState, plan: Plan) -> int:
    """Replay a plan on a toy group; return the lowest healthy in-service count seen."""
    serving = {i.id for i in state.instances if i.serving}
    lowest = len(serving)
    for b in plan.batches:
        for iid in b.terminate_first:
            serving.discard(iid)
        lowest = min(lowest, len(serving))
        serving |= {f"new-{b.index}-{k}" for k in range(b.launch)}
        for iid in b.out:
            serving.discard(iid)
        lowest = min(lowest, len(serving))
    return lowest


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_plan_properties(scenario: tuple[GroupState, GroupPolicy]) -> None:
    state, policy = scenario
    try:
        plan = plan_rotation(state, "ami-new", policy)
    except PlanError:
        # only refused when the group is below its minimum, or no room to progress
        assert state.serving < policy.min_healthy(state.desired) or policy.max_surge_percent == 0
        return
    outdated = {
        i.id
        for i in state.instances
        if i.image_id != "ami-new" and not (i.protected and policy.protected == "ignore")
    }
    replaced = [iid for b in plan.batches for iid in b.out]
    assert len(replaced) == len(set(replaced)), "an instance is replaced twice"
    assert set(replaced) == outdated, "every outdated instance is replaced exactly once"
    assert not set(replaced) & set(plan.skipped)
    floor = _simulate(state, plan)
    if outdated:
        assert floor >= plan.min_healthy
    for b in plan.batches:
        assert b.healthy_floor >= plan.min_healthy
        assert b.desired_during - state.desired <= plan.surge
        assert b.launch == len(b.out)
        assert len(b.out) <= policy.batch_count(state.desired)
    # deterministic, whatever the order the API listed the instances in
    shuffled = GroupState(
        state.name, state.desired, state.min_size, state.max_size, tuple(reversed(state.instances))
    )
    assert plan_rotation(shuffled, "ami-new", policy) == plan

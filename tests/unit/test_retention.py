"""The retention planner: table-driven cases and properties (pure, no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldenimage import retention as rt
from goldenimage.sections import Graces, ImageRetention

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
D = timedelta(days=1)


def img(n: int, *, status: str = "validated", age: float, stage: str | None = None,
        stage_age: float | None = None, name: str = "web", **kw: Any) -> rt.Image:
    return rt.Image(id=f"{name}-{n}", name=name, status=status, created=NOW - age * D, stage=stage,
                    stage_at=None if stage_age is None else NOW - stage_age * D, **kw)


def hist(*ids: str | None, statuses: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [{"image_id": i, "status": (statuses or {}).get(i or "", "validated")} for i in ids]


POLICY = {"web": ImageRetention(keep=2, min_age_days=5, deprecate_after=1, disable_after=3, delete_after=7)}


def decide(images: list[rt.Image], refs: list[rt.Reference] | None = None,
           channels: dict[str, Any] | None = None, policy: dict[str, ImageRetention] | None = None) -> dict[str, str]:
    p = rt.plan(images, refs or [], channels or {}, POLICY if policy is None else policy, NOW)
    return {d.image_id: d.reason for d in p.decisions}


# Five validated images 10..50 days old: web-1 newest. keep=2 keeps web-1 and web-2; web-3 was
# superseded when web-1 was created (10 days ago), web-5 when web-3 was (30 days ago).
FIVE = [img(n, age=10 * n) for n in range(1, 6)]

CASES: list[tuple[str, list[rt.Image], list[rt.Reference], dict[str, Any], dict[str, str]]] = [
    ("newest kept, older deprecated", FIVE, [], {}, {
        "web-1": "keep: among the newest 2 validated",
        "web-2": "keep: among the newest 2 validated",
        "web-3": "deprecate: superseded 10 days ago, 2 newer kept",
        "web-5": "deprecate: superseded 30 days ago, 2 newer kept",
    }),
    ("channel and rollback target protected", FIVE, [], {"web": {"prod": hist("web-5", "web-4"),
                                                                 "stable": hist("web-3")}}, {
        "web-4": "keep: channel prod",
        "web-5": "keep: rollback target of prod",
        "web-3": "keep: channel stable",
    }),
    ("a revoked previous entry is no rollback target; the newest earlier validated one is",
     [img(1, age=1), img(2, age=2), img(3, age=30), img(4, status="revoked", age=40, revoked_at=NOW - 10 * D)],
     [], {"web": {"prod": hist("web-3", "web-4", "web-2", statuses={"web-4": "revoked"})}}, {
        "web-4": "deprecate: revoked 10 days ago",
        "web-3": "keep: rollback target of prod",
    }),
    ("references protected with their reason", FIVE,
     [rt.Reference("web-3", "lt-0abc v3", "(asg web)"), rt.Reference("web-4", "vm", "pid 42")], {}, {
        "web-3": "keep: lt-0abc v3 (asg web)",
        "web-4": "keep: vm pid 42",
        "web-5": "deprecate: superseded 30 days ago, 2 newer kept",
    }),
    ("a reference to a copy protects the image",
     [img(1, age=1), img(2, age=2), img(3, age=30, copies=("ami-eu",))],
     [rt.Reference("ami-eu", "instance", "i-1 (eu-west-1, stopped)")], {}, {
        "web-3": "keep: instance i-1 (eu-west-1, stopped)",
    }),
    ("young images kept even out of the newest",
     [img(1, age=1), img(2, age=2), img(3, age=3)], [], {}, {
        "web-3": "keep: younger than 5 days",
    }),
    ("grace not yet over: wait, and say how long",
     [img(1, age=0.2), img(2, age=0.5), img(3, age=40)], [], {}, {
        # web-3 was pushed out of the newest 2 when web-1 was created, under a day ago
        "web-3": "keep: superseded today, 2 newer kept; deprecate after 1 day",
    }),
    ("one stage per run, each after its grace", [
        img(1, age=1), img(2, age=2),
        img(3, age=60, stage="deprecated", stage_age=2),
        img(4, age=61, stage="deprecated", stage_age=4),
        img(5, age=62, stage="disabled", stage_age=6),
        img(6, age=63, stage="disabled", stage_age=8),
    ], [], {}, {
        "web-3": "keep: deprecated 2 days ago, 2 newer kept; disable after 3 days",
        "web-4": "disable: deprecated 4 days ago, 2 newer kept",
        "web-5": "keep: disabled 6 days ago, 2 newer kept; delete after 7 days",
        "web-6": "delete: disabled 8 days ago, 2 newer kept",
    }),
    ("quarantined, revoked and building have their own graces", [
        img(1, age=1), img(2, age=2),
        img(3, status="quarantined", age=0.2),
        img(4, status="revoked", age=3, revoked_at=NOW - 0.5 * D),
        img(5, status="building", age=0.5),
        img(6, status="building", age=2),
    ], [], {}, {
        "web-3": "deprecate: quarantined today",
        "web-4": "deprecate: revoked today",
        "web-5": "keep: building since created today; deprecate after 1 day",
        "web-6": "deprecate: building since created 2 days ago",
    }),
    ("a protected image in a stage is kept and flagged", [
        img(1, age=1), img(2, age=2), img(3, age=50, stage="disabled", stage_age=30)],
     [rt.Reference("web-3", "vm", "pid 7")], {}, {
        "web-3": "keep: vm pid 7 (it is disabled: `invoke gc --restore web-3`)",
    }),
    ("no policy, no collection",
     [img(1, age=100, name="db"), img(2, age=200, name="db")], [], {}, {
        "db-2": "keep: no retention policy for db",
    }),
]


@pytest.mark.parametrize(("images", "refs", "channels", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decisions(images: list[rt.Image], refs: list[rt.Reference], channels: dict[str, Any],
                   expected: dict[str, str]) -> None:
    got = decide(images, refs, channels)
    assert {k: got[k] for k in expected} == expected


def test_keep_zero_and_reclaim() -> None:
    policy = {"web": ImageRetention(keep=0, min_age_days=0, deprecate_after=0)}
    p = rt.plan([img(1, age=3, stage="disabled", stage_age=20, size=100), img(2, age=1)], [], {}, policy, NOW)
    assert [d.action for d in p.decisions] == ["delete", "deprecate"]
    assert p.reclaim() == 100
    doc = p.as_dict()
    assert doc["changes"] == 2 and doc["decisions"][0]["reclaim_bytes"] == 100


def test_leftovers_by_age() -> None:
    p = rt.plan([], [], {}, {}, NOW, [rt.Leftover("web-x", "failed bake logs", NOW - 20 * D, 5),
                                      rt.Leftover("web-y", "failed bake logs", NOW - 2 * D, 5)], 14)
    assert [(d.image_id, d.action) for d in p.leftovers] == [("web-x", "delete"), ("web-y", "keep")]
    assert p.leftovers[0].reason == "delete: failed bake logs from 20 days ago, kept 14 days"


H = timedelta(hours=1)


def aws_left(ident: str, kind: str, hours: float, **kw: Any) -> rt.Leftover:
    return rt.Leftover(ident, kind, NOW - hours * H, what=f"{kind} {ident}", hours=True, **kw)


AWS_LEFTOVER_CASES: list[tuple[str, list[rt.Leftover], list[tuple[str, str]]]] = [
    ("old goes, young stays: its run may still be going", [
        aws_left("i-old", "validation instance", 9), aws_left("i-young", "validation instance", 2)], [
        ("i-old", "delete: validation instance i-old, 9 h old"),
        ("i-young", "keep: validation instance i-young, 2 h old; it may still be in use: removed after 6 h")]),
    ("in use whatever its age", [aws_left("lt-1 v2", "rotation launch-template version", 500, in_use="used by asg web")], [
        ("lt-1 v2", "keep: rotation launch-template version lt-1 v2, 20 days old; used by asg web")]),
    ("a key pair goes with the old instance using it, after it", [
        aws_left("k-1", "validation key pair", 9, users=("i-old",), order=1),
        aws_left("i-old", "validation instance", 9)], [
        ("i-old", "delete: validation instance i-old, 9 h old"),
        ("k-1", "delete: validation key pair k-1, 9 h old")]),
    ("a group used by a young instance, or by one that is not ours, stays", [
        aws_left("sg-1", "validation security group", 9, users=("i-young",), order=1),
        aws_left("sg-2", "build security group", 9, users=("i-someone",), order=1),
        aws_left("i-young", "validation instance", 1)], [
        ("i-young", "keep: validation instance i-young, 1 h old; it may still be in use: removed after 6 h"),
        ("sg-1", "keep: validation security group sg-1, 9 h old; used by i-young"),
        ("sg-2", "keep: build security group sg-2, 9 h old; used by i-someone")]),
]


@pytest.mark.parametrize(("title", "lefts", "expected"), AWS_LEFTOVER_CASES, ids=[c[0] for c in AWS_LEFTOVER_CASES])
def test_aws_leftovers_by_hours_and_use(title: str, lefts: list[rt.Leftover], expected: list[tuple[str, str]]) -> None:
    p = rt.plan([], [], {}, {}, NOW, lefts, leftover_hours=6)
    assert [(d.image_id, d.reason) for d in p.leftovers] == expected
    assert all(d.action == d.reason.split(":")[0] for d in p.leftovers)


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 48), st.booleans(), st.booleans()), max_size=12),
       st.integers(0, 24))
def test_no_leftover_in_use_or_younger_than_the_grace_is_ever_deleted(
        facts: list[tuple[int, float, bool, bool]], grace: int) -> None:
    lefts = [aws_left(f"x-{n}", "validation instance", age, in_use="in use" if used else "",
                      users=(f"x-{(n + 1) % len(facts)}",) if user else ()) for n, (_, age, used, user) in enumerate(facts)]
    p = rt.plan([], [], {}, {}, NOW, lefts, leftover_hours=grace)
    by = {lo.id: lo for lo in lefts}
    deleted = {d.image_id for d in p.leftovers if d.action == "delete"}
    for i in deleted:
        lo = by[i]
        assert not lo.in_use and NOW - lo.created >= grace * H
        assert all(u in deleted for u in lo.users)  # what it used goes with it, never alone
    assert p == rt.plan([], [], {}, {}, NOW, list(reversed(lefts)), leftover_hours=grace)  # same inputs, same plan


def test_naive_now_refused() -> None:
    with pytest.raises(ValueError):
        rt.plan([], [], {}, {}, datetime(2026, 1, 1))


# -- properties ------------------------------------------------------------------------------
STATUSES = ["validated", "validated", "validated", "quarantined", "revoked", "building"]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[rt.Image], list[rt.Reference], dict[str, Any], dict[str, ImageRetention]]:
    n = draw(st.integers(0, 12))
    images = []
    for i in range(n):
        stage = draw(st.sampled_from([None, None, "deprecated", "disabled"]))
        age = draw(st.integers(0, 90))
        images.append(rt.Image(
            id=f"i{i}", name=draw(st.sampled_from(["web", "db"])), status=draw(st.sampled_from(STATUSES)),
            created=NOW - age * D - i * timedelta(minutes=1), stage=stage,
            stage_at=None if stage is None else NOW - draw(st.integers(0, age)) * D,
            revoked_at=NOW - draw(st.integers(0, age)) * D, size=draw(st.integers(0, 10))))
    ids = [i.id for i in images] or ["none"]
    refs = [rt.Reference(draw(st.sampled_from(ids)), "vm", f"pid {k}") for k in range(draw(st.integers(0, 3)))]
    channels: dict[str, Any] = {}
    for name in ("web", "db"):
        for c in draw(st.lists(st.sampled_from(["prod", "stable"]), unique=True)):
            channels.setdefault(name, {})[c] = hist(*draw(st.lists(st.sampled_from([*ids, None]), max_size=4)))
    grace = st.integers(0, 10)

    def graces() -> Graces:
        return Graces(deprecate_after=draw(grace), disable_after=draw(grace), delete_after=draw(grace))

    policy = {name: ImageRetention(keep=draw(st.integers(0, 4)), min_age_days=draw(grace),
                                   deprecate_after=draw(grace), disable_after=draw(grace),
                                   delete_after=draw(grace), quarantined=graces(), revoked=graces(),
                                   building=graces())
              for name in draw(st.lists(st.sampled_from(["web", "db"]), unique=True))}
    return images, refs, channels, policy


def channel_pointed(channels: dict[str, Any]) -> set[str]:
    """Where each channel points, and where it pointed before (its entries are validated)."""
    out = set()
    for per in channels.values():
        for h in per.values():
            out |= {e["image_id"] for e in h[-2:] if e["image_id"]}
    return out


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_referenced_and_channel_images_are_never_touched(world: Any) -> None:
    images, refs, channels, policy = world
    p = rt.plan(images, refs, channels, policy, NOW)
    untouchable = {r.image_id for r in refs} | channel_pointed(channels)
    assert len(p.decisions) == len(images)
    for d in p.decisions:
        assert d.action in rt.ACTIONS and d.reason.startswith(d.action + ":")
        if d.image_id in untouchable:
            assert d.action == "keep"


@settings(max_examples=200, deadline=None)
@given(worlds(), st.randoms(use_true_random=False))
def test_same_inputs_same_plan_in_any_order(world: Any, rnd: Any) -> None:
    images, refs, channels, policy = world
    first = rt.plan(images, refs, channels, policy, NOW)
    shuffled_i, shuffled_r = list(images), list(refs)
    rnd.shuffle(shuffled_i)
    rnd.shuffle(shuffled_r)
    assert rt.plan(shuffled_i, shuffled_r, channels, policy, NOW) == first


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_never_straight_to_delete(world: Any) -> None:
    images, refs, channels, policy = world
    stage = {i.id: i.stage for i in images}
    for d in rt.plan(images, refs, channels, policy, NOW).decisions:
        expected = {None: "deprecate", "deprecated": "disable", "disabled": "delete"}[stage[d.image_id]]
        assert d.action in ("keep", expected)


def _days_ago(reason: str) -> int:
    """How long ago a "keep: superseded ..." reason says the image was superseded, in days."""
    said = reason.removeprefix("keep: superseded ").split(",")[0]
    return 0 if said == "today" else int(said.split()[0])


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_applying_then_planning_again_moves_only_zero_grace_stages(world: Any) -> None:
    """Idempotence as defined in `retention`: after applying a plan, a second plan at the same
    instant deletes nothing that is gone, keeps every kept image with the same reason, and
    advances an image one more stage only where that stage's grace is zero."""
    images, refs, channels, policy = world
    first = rt.plan(images, refs, channels, policy, NOW)
    after = rt.applied(images, first)
    second = rt.plan(after, refs, channels, policy, NOW)
    deleted = {d.image_id for d in first.decisions if d.action == "delete"}
    assert {d.image_id for d in second.decisions} == {i.id for i in images} - deleted
    before = {d.image_id: d for d in first.decisions}
    staged = {i.id: i for i in after}
    for d in second.decisions:
        if before[d.image_id].action == "keep":
            if d.reason != before[d.image_id].reason:  # a newer image deleted: a later "superseded" anchor
                assert deleted and d.reason.startswith("keep: superseded") and d.action == "keep", (d, before[d.image_id])
                assert _days_ago(d.reason) <= _days_ago(before[d.image_id].reason)
                d = replace(d, reason=before[d.image_id].reason)
            assert d == before[d.image_id]
        elif d.action != "keep":
            i = staged[d.image_id]
            g = policy[i.name].graces(i.status)
            assert (g.disable_after if i.stage == "deprecated" else g.delete_after) == 0


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_with_graces_of_a_day_or_more_a_second_run_changes_nothing(world: Any) -> None:
    images, refs, channels, policy = world
    g1 = Graces(deprecate_after=1, disable_after=1, delete_after=1)
    policy = {n: p.model_copy(update={"disable_after": max(1, p.disable_after), "delete_after": max(1, p.delete_after),
                                      "quarantined": g1, "revoked": g1, "building": g1})
              for n, p in policy.items()}
    first = rt.plan(images, refs, channels, policy, NOW)
    second = rt.plan(rt.applied(images, first), refs, channels, policy, NOW)
    assert not second.changes()


def test_a_deleted_newer_image_moves_an_older_ones_superseded_anchor_later_never_sooner() -> None:
    """The shrunk example hypothesis found: y (disabled, zero grace) is deleted; z, older,
    had been superseded by x's arrival and is now superseded by n3's: a later anchor."""
    policy = {"web": ImageRetention(keep=2, min_age_days=0, deprecate_after=2, disable_after=0, delete_after=0)}
    day = timedelta(days=1)

    def image(i: str, created: datetime, stage: str | None = None) -> rt.Image:
        return rt.Image(id=i, name="web", status="validated", created=created, stage=stage,
                        stage_at=NOW if stage else None)

    images = [image("n1", NOW - timedelta(minutes=3)), image("n2", NOW - timedelta(minutes=4)),
              image("n3", NOW - timedelta(minutes=6)), image("x", NOW - day),
              image("y", NOW - day - timedelta(minutes=1), "disabled"), image("z", NOW - day - timedelta(minutes=2))]
    first = rt.plan(images, [], {}, policy, NOW)
    by_id = {d.image_id: d for d in first.decisions}
    assert by_id["y"].action == "delete" and by_id["z"].reason.startswith("keep: superseded 1 day ago")
    second = {d.image_id: d for d in rt.plan(rt.applied(images, first), [], {}, policy, NOW).decisions}
    assert second["z"].action == "keep" and second["z"].reason.startswith("keep: superseded today")

"""Image families, the pure part: the graph of image names and the schedule of `bake --all`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldenimage import ancestry

FAMILY = {"base": None, "web": "base", "cache": "base", "api": "web", "other": None}


def test_lineage_order_and_descendants() -> None:
    assert ancestry.lineage(FAMILY, "api") == ["base", "web", "api"]
    assert ancestry.order(FAMILY) == ["base", "other", "cache", "web", "api"]
    assert ancestry.order(FAMILY, ["api"]) == ["base", "web", "api"]  # its ancestors come along
    assert ancestry.order(FAMILY, ["cache", "other"]) == ["base", "other", "cache"]
    assert ancestry.descendants(FAMILY, "base") == ["cache", "web", "api"]
    assert ancestry.descendants(FAMILY, "api") == []
    assert ancestry.tree(FAMILY) == [(0, "base"), (1, "cache"), (1, "web"), (2, "api"), (0, "other")]


@pytest.mark.parametrize(("parents", "cycle"), [
    ({"a": "a"}, ["a", "a"]),
    ({"a": "b", "b": "a"}, ["a", "b", "a"]),
    ({"x": None, "a": "b", "b": "c", "c": "a"}, ["a", "b", "c", "a"]),
    (FAMILY, []),
])
def test_find_cycle(parents: dict[str, str | None], cycle: list[str]) -> None:
    assert ancestry.find_cycle(parents) == cycle


def test_a_failed_image_blocks_its_descendants_only() -> None:
    s = ancestry.Schedule.of(FAMILY)
    assert s.ready() == ["base", "other"]
    s.start("base")
    s.start("other")
    assert s.ready() == [] and s.waiting() == ["cache", "web", "api"]
    s.finish("other", "other-1")
    s.finish("base", "base-1")
    assert s.ready() == ["cache", "web"]
    s.start("web")
    assert s.fail("web") == ["api"]
    assert s.blocked == {"api": "web"} and s.ready() == ["cache"]
    s.start("cache")
    s.finish("cache", "cache-1")
    assert s.finished() and s.done == {"other": "other-1", "base": "base-1", "cache": "cache-1"}


def test_a_parent_outside_the_selection_is_not_waited_for() -> None:
    s = ancestry.Schedule({"base": None, "web": "base"}, ["web"])
    assert s.ready() == ["web"]


@st.composite
def forests(draw: st.DrawFn) -> dict[str, str | None]:
    n = draw(st.integers(1, 9))
    names = [f"i{k}" for k in range(n)]
    return {name: (draw(st.sampled_from([None, *names[:k]])) if k else None) for k, name in enumerate(names)}


@settings(max_examples=150, deadline=None)
@given(forests(), st.data())
def test_schedule_properties(parents: dict[str, str | None], data: st.DataObject) -> None:
    """Parents always finish before a child starts; exactly the descendants of failed images are
    blocked; everything else is settled; at most `jobs` run at once."""
    jobs = data.draw(st.integers(1, 3))
    s = ancestry.Schedule.of(parents)
    assert s.names == ancestry.order(parents)
    for name in s.names:
        parent = parents[name]
        assert parent is None or s.names.index(parent) < s.names.index(name)
    failed: set[str] = set()
    while not s.finished():
        for name in s.ready()[: jobs - len(s.running)]:
            parent = parents[name]
            assert parent is None or parent in s.done
            s.start(name)
        assert 0 < len(s.running) <= jobs
        name = data.draw(st.sampled_from(sorted(s.running)))
        if data.draw(st.booleans()):
            s.fail(name)
            failed.add(name)
        else:
            s.finish(name, f"{name}-id")
    expect_blocked = {d for f in failed for d in ancestry.descendants(parents, f)} - failed
    assert set(s.blocked) == expect_blocked
    assert set(s.done) | s.failed | set(s.blocked) == set(parents)


def rec(image_id: str, name: str, created: str, parent: str | None = None, status: str = "validated",
        channel: str | None = None) -> dict[str, object]:
    return {"id": image_id, "name": name, "created": created, "status": status,
            "parent": {"id": parent, "name": "base", "channel": channel} if parent else None}


def test_outdated_when_the_parent_has_a_newer_validated_image() -> None:
    records = [rec("base-1", "base", "1"), rec("base-2", "base", "2"), rec("web-1", "web", "1", "base-1"),
               rec("web-2", "web", "3", "base-2"), rec("base-3", "base", "4", status="quarantined")]
    out = ancestry.outdated(records, {})
    assert list(out) == ["web-1"] and "base is now base-2" in out["web-1"]


def test_outdated_follows_the_parent_channel() -> None:
    records = [rec("base-1", "base", "1"), rec("base-2", "base", "2"),
               rec("web-1", "web", "1", "base-1", channel="stable")]
    assert ancestry.outdated(records, {"base": {"stable": "base-1"}}) == {}
    assert "base/stable is now base-2" in ancestry.outdated(records, {"base": {"stable": "base-2"}})["web-1"]


def test_built_on_follows_every_generation() -> None:
    records = [rec("base-1", "base", "1"), rec("web-1", "web", "1", "base-1"),
               {"id": "api-1", "name": "api", "created": "1", "status": "validated",
                "parent": {"id": "web-1", "name": "web"}},
               rec("web-2", "web", "2", "base-2")]
    assert ancestry.built_on(records, "base-1") == ["web-1", "api-1"]
    assert ancestry.built_on(records, "web-2") == []

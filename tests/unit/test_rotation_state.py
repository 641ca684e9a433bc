from __future__ import annotations

from goldenimage.rotation.executor import human_rotate
from goldenimage.rotation.state import ROT, RotationState, iso, parse_iso


def _st(**kw: object) -> RotationState:
    base: dict[str, object] = dict(
        id="r1",
        owner="alice@ops:42",
        since=iso(1_800_000_000),
        heartbeat=iso(1_800_000_000),
        from_image="ami-old",
        to_image="ami-new",
        orig_desired=12,
        orig_max=12,
    )
    base.update(kw)
    return RotationState(**base)  # type: ignore[arg-type]


def test_tags_round_trip() -> None:
    st = _st(progress="3/12 replaced, batch 2/4")
    tags = st.tags()
    assert tags[ROT + "orig-desired"] == "12" and tags[ROT + "from-image"] == "ami-old"
    assert RotationState.from_tags(tags) == st
    assert RotationState.from_tags({"other": "x"}) is None
    assert all(len(v) <= 256 for v in tags.values())


def test_staleness() -> None:
    st = _st()
    t0 = parse_iso(st.heartbeat)
    assert not st.stale(t0 + 10, ttl=300)
    assert st.stale(t0 + 301, ttl=300)
    assert _st(status="interrupted").stale(t0, ttl=300)
    assert "by alice@ops:42 since 2027-01-15T08:00:00Z" in st.describe(t0 + 5)


def test_human_lines() -> None:
    lines = human_rotate(
        {
            "group": "web",
            "outcome": "rolled back",
            "mode": "rotate",
            "rotation_id": "r1",
            "from_image": "ami-old",
            "to_image": "ami-new",
            "to_version": "2",
            "replaced": 6,
            "total": 12,
            "reason": "alarm web-5xx in ALARM",
            "warnings": ["launch template lt-1 does not require IMDSv2"],
        }
    )
    assert lines[0] == "web: rotate rolled back (r1): ami-old -> ami-new, launch template version 2"
    assert "  reason: alarm web-5xx in ALARM" in lines
    dry = human_rotate({"group": "web", "outcome": "planned", "plan_text": ["  batch 1/1: x"]})
    assert dry == ["  batch 1/1: x", "web: dry run, nothing changed"]

"""Channels and revocation on the local store: table-driven promote/revoke/history cases."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from goldenimage import channels as ch
from goldenimage.errors import ConfigError, NotFoundError
from goldenimage.store import LocalStore
from tests.unit.fp_helpers import register

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "store")
    for i in ("web-1", "web-2", "web-3", "web-4"):
        register(s, i)
    register(s, "web-q", status="quarantined")
    register(s, "db-1", name="db")
    return s


Op = tuple[str, ...]  # ("promote", id, channel) | ("revoke", id, reason)


@dataclass
class Case:
    id: str
    ops: list[Op]
    channels: dict[str, str | None]  # channel of image "web" -> current id after the ops
    history: dict[str, list[tuple[str | None, str | None, str]]] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)  # subset of the last op's result


def apply(store: LocalStore, ops: list[Op]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for n, op in enumerate(ops):
        now = T0 + timedelta(minutes=n)
        if op[0] == "promote":
            result = store.promote(op[1], op[2], "alice", now)
        else:
            result = store.revoke(op[1], op[2], "bob", now)
    return result


CASES = [
    Case(
        "first promote",
        [("promote", "web-1", "stable")],
        {"stable": "web-1"},
        {"stable": [(None, "web-1", "promote")]},
        {"changed": True, "previous": None, "image_id": "web-1", "at": "2026-11-26T09:00:00Z"},
    ),
    Case(
        "second promote keeps history",
        [("promote", "web-1", "stable"), ("promote", "web-2", "stable")],
        {"stable": "web-2"},
        {"stable": [(None, "web-1", "promote"), ("web-1", "web-2", "promote")]},
        {"previous": "web-1", "image_id": "web-2"},
    ),
    Case(
        "promote the current image again is a no-op",
        [("promote", "web-1", "stable"), ("promote", "web-1", "stable")],
        {"stable": "web-1"},
        {"stable": [(None, "web-1", "promote")]},
        {"changed": False},
    ),
    Case(
        "channels are independent",
        [("promote", "web-1", "stable"), ("promote", "web-2", "canary")],
        {"stable": "web-1", "canary": "web-2"},
    ),
    Case(
        "revoke the current image falls back to the previous one",
        [("promote", "web-1", "stable"), ("promote", "web-2", "stable"), ("revoke", "web-2", "CVE-2026-1")],
        {"stable": "web-1"},
        {"stable": [(None, "web-1", "promote"), ("web-1", "web-2", "promote"), ("web-2", "web-1", "revoke")]},
        {
            "channels_moved": {"stable": "web-1"},
            "channels_left": [],
            "reason": "CVE-2026-1",
            "changed": True,
        },
    ),
    Case(
        "fallback skips entries revoked earlier",
        [
            ("promote", "web-1", "stable"),
            ("promote", "web-2", "stable"),
            ("promote", "web-3", "stable"),
            ("revoke", "web-2", "bad"),
            ("revoke", "web-3", "worse"),
        ],
        {"stable": "web-1"},
        last={"channels_moved": {"stable": "web-1"}},
    ),
    Case(
        "no valid earlier entry: the channel points at nothing",
        [("promote", "web-1", "stable"), ("revoke", "web-1", "bad")],
        {"stable": None},
        {"stable": [(None, "web-1", "promote"), ("web-1", None, "revoke")]},
        {"channels_moved": {}, "channels_left": ["stable"]},
    ),
    Case(
        "revoking an image a channel left does not move it",
        [("promote", "web-1", "stable"), ("promote", "web-2", "stable"), ("revoke", "web-1", "old")],
        {"stable": "web-2"},
        {"stable": [(None, "web-1", "promote"), ("web-1", "web-2", "promote")]},
        {"channels_moved": {}, "channels_left": []},
    ),
    Case(
        "every channel on the image moves",
        [
            ("promote", "web-1", "stable"),
            ("promote", "web-3", "canary"),
            ("promote", "web-2", "stable"),
            ("promote", "web-2", "canary"),
            ("revoke", "web-2", "bad"),
        ],
        {"stable": "web-1", "canary": "web-3"},
        last={"channels_moved": {"canary": "web-3", "stable": "web-1"}, "channels_left": []},
    ),
    Case(
        "revoking twice is a no-op that keeps the first reason",
        [("revoke", "web-1", "first"), ("revoke", "web-1", "second")],
        {},
        last={"changed": False, "reason": "first"},
    ),
    Case(
        "fallback target is the newest earlier valid entry, not the oldest",
        [
            ("promote", "web-1", "stable"),
            ("promote", "web-3", "stable"),
            ("promote", "web-4", "stable"),
            ("revoke", "web-4", "bad"),
        ],
        {"stable": "web-3"},
    ),
    Case(
        "promote after a fallback appends to the same history",
        [
            ("promote", "web-1", "stable"),
            ("promote", "web-2", "stable"),
            ("revoke", "web-2", "bad"),
            ("promote", "web-3", "stable"),
        ],
        {"stable": "web-3"},
        {
            "stable": [
                (None, "web-1", "promote"),
                ("web-1", "web-2", "promote"),
                ("web-2", "web-1", "revoke"),
                ("web-1", "web-3", "promote"),
            ]
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_channel_moves(store: LocalStore, case: Case) -> None:
    last = apply(store, case.ops)
    assert {c: cur for c, cur in store.channel_map("web").get("web", {}).items()} == case.channels
    for channel, expected in case.history.items():
        got = [(e["from"], e["image_id"], e["action"]) for e in store.history("web", channel)]
        assert got == expected
        for e in store.history("web", channel):
            assert e["user"] in ("alice", "bob") and e["at"].endswith("Z")
    for key, value in case.last.items():
        assert last[key] == value, key
    # ImageRecord.channels agrees with the histories
    for rec in store.list("web", quarantined=False):
        assert list(rec.channels) == sorted(c for c, cur in case.channels.items() if cur == rec.id)


def test_revoke_records_reason_user_and_time(store: LocalStore) -> None:
    store.revoke("web-1", "  CVE-2026-1234:\n openssl  ", "bob", T0)
    rec = store.get("web-1")
    assert rec.status == "revoked"
    assert rec.extra == {
        "revoked_reason": "CVE-2026-1234: openssl",
        "revoked_by": "bob",
        "revoked_at": "2026-11-26T09:00:00Z",
    }
    assert store.find_by_fingerprint("web", "f" * 64) is not None  # web-2.. still valid
    assert store.find_by_fingerprint("web", "f" * 64).id != "web-1"  # type: ignore[union-attr]


def test_previous_is_the_exact_rollback_target(store: LocalStore) -> None:
    assert store.previous("web", "stable") is None
    apply(store, [("promote", "web-1", "stable")])
    assert store.previous("web", "stable") is None
    apply(store, [("promote", "web-1", "stable"), ("promote", "web-3", "stable")])
    prev = store.previous("web", "stable")
    assert prev is not None and prev["image_id"] == "web-1"


def test_history_status_and_rollback_target(store: LocalStore) -> None:
    apply(
        store,
        [("promote", "web-1", "stable"), ("promote", "web-2", "stable"), ("promote", "web-3", "stable")],
    )
    assert store.rollback_target("web", "stable") == "web-2"
    store.revoke("web-2", "bad", "bob", T0)  # not current: no move
    assert [e["status"] for e in store.history("web", "stable")] == ["validated", "revoked", "validated"]
    assert store.rollback_target("web", "stable") == "web-1"  # skips the revoked one
    assert store.previous("web", "stable")["image_id"] == "web-2"  # type: ignore[index]
    assert store.rollback_target("web", "canary") is None


def test_user_and_time_default_to_now_and_this_user(store: LocalStore) -> None:
    r = store.promote("web-1", "stable")
    assert r["user"] and r["at"].endswith("Z")
    assert store.history("web", "stable")[0]["user"] == r["user"]


def test_channels_belong_to_the_image_name(store: LocalStore) -> None:
    store.promote("db-1", "stable", "alice", T0)
    store.promote("web-1", "stable", "alice", T0)
    assert store.channel_map() == {"db": {"stable": "db-1"}, "web": {"stable": "web-1"}}
    assert store.get("db-1").channels == ("stable",)


# -- bad input: exit 2, one line naming the id or value ----------------------------------
@pytest.mark.parametrize(
    ("op", "error", "pattern"),
    [
        (("promote", "web-404", "stable"), NotFoundError, r"unknown image id 'web-404'"),
        (("promote", "web-q", "stable"), ConfigError, r"image web-q is quarantined"),
        (("revoke", "web-404", "x"), NotFoundError, r"unknown image id 'web-404'"),
        (("revoke", "web-q", "x"), ConfigError, r"image web-q is quarantined"),
        (("revoke", "web-1", "  \n "), ConfigError, r"needs a reason"),
    ],
)
def test_bad_input(store: LocalStore, op: Op, error: type[Exception], pattern: str) -> None:
    before = store.catalog_path.read_text()
    with pytest.raises(error, match=pattern) as exc:
        apply(store, [op])
    assert isinstance(exc.value, ConfigError) and exc.value.exit_code == 2
    assert "\n" not in str(exc.value)
    assert store.catalog_path.read_text() == before  # nothing written


def test_promote_revoked_image_is_refused(store: LocalStore) -> None:
    store.revoke("web-2", "CVE-2026-9", "bob", T0)
    with pytest.raises(ConfigError, match=r"^image web-2 is revoked \(CVE-2026-9\)") as exc:
        store.promote("web-2", "stable", "alice", T0)
    assert exc.value.exit_code == 2
    assert store.history("web", "stable") == []


@pytest.mark.parametrize(
    "name", ["", "Stable", "1stable", "-x", "a" * 33, "a_b", "a b", "stable\n", "ünï", "a.b"]
)
def test_bad_channel_name(store: LocalStore, name: str) -> None:
    with pytest.raises(ConfigError, match="bad channel name") as exc:
        store.promote("web-1", name, "alice", T0)
    assert exc.value.exit_code == 2
    assert "\n" not in str(exc.value).replace(repr(name), "")


@pytest.mark.parametrize("name", ["a", "a" * 32, "canary-2", "prod-eu-1"])
def test_good_channel_names(store: LocalStore, name: str) -> None:
    assert store.promote("web-1", name, "alice", T0)["changed"] is True


def test_naive_time_is_a_bug() -> None:
    with pytest.raises(ValueError):
        ch.timestamp(datetime(2026, 1, 1))


def test_concurrent_promotions_keep_a_consistent_history(store: LocalStore) -> None:
    """Each move is a read-modify-write under the store lock: none is lost."""

    def worker(image_id: str) -> None:
        for i in range(15):
            store.promote(image_id, "stable", image_id, T0 + timedelta(seconds=i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in ("web-1", "web-2", "web-3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hist = store.history("web", "stable")
    for a, b in itertools.pairwise(hist):
        assert b["from"] == a["image_id"] != b["image_id"]
    assert hist[0]["from"] is None

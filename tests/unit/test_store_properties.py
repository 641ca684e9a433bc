"""The shared catalog's promise, as an invariant over random interleavings: several machines
(stores with their own directories) on one shared backend register, promote and revoke,
and any of those writes may find that another machine wrote first (its whole operation runs
between this one's read and its compare-and-swap). After every step:

- every move a promote or revoke said it made is in the channel's history, in the order they
  were acknowledged, and no other move is;
- a channel's history is one sequence: each move starts where the last one ended;
- no channel points at a revoked image; a revoked image is never promoted again;
- every machine reads the same channels and histories.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from goldenimage.errors import ConfigError
from goldenimage.fsutil import sha256_file
from goldenimage.models import ImageRecord
from goldenimage.state import Backend, DirectoryBackend, Versioned
from goldenimage.store import LocalStore

CHANNELS = ["stable", "canary"]
MACHINES = 3
T0 = datetime(2026, 12, 2, tzinfo=UTC)


class Interleaved:
    """A backend whose next record write first lets queued operations of other machines run
    to the end: this machine's read-modify-write is then stale, as when two machines write
    at once, and its compare-and-swap must notice."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.before_put: list[Callable[[], None]] = []
        self.name = getattr(inner, "name", "shared")

    def get(self, key: str) -> Versioned | None:
        return self.inner.get(key)

    def put(self, key: str, data: bytes, *, expect: str | None = None) -> str:
        while self.before_put:
            self.before_put.pop(0)()
        return self.inner.put(key, data, expect=expect)

    def __getattr__(self, attr: str) -> Any:  # blobs, delete, list: as they are
        return getattr(self.inner, attr)


class Catalog(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="catalog-props-"))
        shared = DirectoryBackend(self.tmp / "shared")
        self.backends = [Interleaved(shared) for _ in range(MACHINES)]
        self.stores = [LocalStore(self.tmp / f"m{i}", b) for i, b in enumerate(self.backends)]  # type: ignore[arg-type]
        self.images: list[str] = []
        self.revoked: set[str] = set()
        self.acked: dict[str, list[tuple[str, str | None]]] = {c: [] for c in CHANNELS}  # (mover, to)
        self.clock = itertools.count(1)

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def now(self) -> datetime:
        return T0 + timedelta(seconds=next(self.clock))

    # -- operations (each may run inside another machine's write) ---------------------------
    def register(self, m: int) -> None:
        store, n = self.stores[m], len(self.images)
        rec = ImageRecord(id=f"web-{n}", name="web", env="local", fingerprint=f"{n:064x}",
                          created=f"2026-12-02T10:{n // 60:02d}:{n % 60:02d}Z", status="validated",
                          artifact="disk.qcow2")
        self.images.append(rec.id)
        with store.workspace() as ws:
            img = ws / "image"
            img.mkdir()
            (img / "disk.qcow2").write_bytes(f"bytes of {rec.id}".encode())
            store.put(rec, {"id": rec.id, "name": "web", "env": "local", "fingerprint": rec.fingerprint,
                            "created": rec.created, "artifact": rec.artifact,
                            "artifact_sha256": sha256_file(img / "disk.qcow2")}, img)

    def promote_op(self, m: int, image_id: str, channel: str) -> None:
        user = f"m{m}"
        try:
            res = self.stores[m].promote(image_id, channel, user=user, now=self.now())
        except ConfigError as exc:
            assert image_id in self.revoked, f"promote of {image_id} refused: {exc.message}"
            return
        assert image_id not in self.revoked, f"revoked {image_id} was promoted"
        if res["changed"]:
            self.acked[channel].append((user, image_id))

    def revoke_op(self, m: int, image_id: str) -> None:
        user = f"m{m}"
        res = self.stores[m].revoke(image_id, "bad", user=user, now=self.now())
        if not res["changed"]:
            assert image_id in self.revoked
            return
        self.revoked.add(image_id)
        for channel in CHANNELS:  # a fallback is a move too (to an earlier image, or to nothing)
            if channel in res["channels_moved"]:
                self.acked[channel].append((user, res["channels_moved"][channel]))
            elif channel in res["channels_left"]:
                self.acked[channel].append((user, None))

    def interject(self, m: int, other: int, what: str, image: int, channel: str) -> None:
        """Before machine `m`'s next write, machine `other` does `what` from start to end."""
        if other == m:
            return
        image_id = self.images[image % len(self.images)]
        op: Callable[[], None] = {
            "promote": lambda: self.promote_op(other, image_id, channel),
            "revoke": lambda: self.revoke_op(other, image_id),
            "register": lambda: self.register(other),
        }[what]
        self.backends[m].before_put.append(op)

    # -- rules ------------------------------------------------------------------------------
    @initialize()
    def three_images(self) -> None:
        for _ in range(3):
            self.register(0)

    @rule(m=st.integers(0, MACHINES - 1))
    def new_image(self, m: int) -> None:
        self.register(m)

    @rule(m=st.integers(0, MACHINES - 1), image=st.integers(0, 50), channel=st.sampled_from(CHANNELS),
          race=st.none() | st.tuples(st.integers(0, MACHINES - 1), st.sampled_from(["promote", "revoke", "register"]),
                                     st.integers(0, 50), st.sampled_from(CHANNELS)))
    def promote(self, m: int, image: int, channel: str, race: tuple[int, str, int, str] | None) -> None:
        if race:
            self.interject(m, *race)
        self.promote_op(m, self.images[image % len(self.images)], channel)
        self.backends[m].before_put.clear()  # a no-op writes nothing: its race is not run

    @precondition(lambda self: len(self.revoked) < len(self.images) - 1)
    @rule(m=st.integers(0, MACHINES - 1), image=st.integers(0, 50),
          race=st.none() | st.tuples(st.integers(0, MACHINES - 1), st.sampled_from(["promote", "register"]),
                                     st.integers(0, 50), st.sampled_from(CHANNELS)))
    def revoke(self, m: int, image: int, race: tuple[int, str, int, str] | None) -> None:
        if race:
            self.interject(m, *race)
        self.revoke_op(m, self.images[image % len(self.images)])
        self.backends[m].before_put.clear()

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def every_acknowledged_move_and_only_those_in_order(self) -> None:
        for channel in CHANNELS:
            hist = self.stores[0].history("web", channel) if self.acked[channel] else []
            assert [(h["user"], h["image_id"]) for h in hist] == self.acked[channel]

    @invariant()
    def one_sequence_of_moves(self) -> None:
        for channel in CHANNELS:
            hist = self.stores[1].history("web", channel) if self.acked[channel] else []
            for before, after in itertools.pairwise(hist):
                assert after["from"] == before["image_id"]

    @invariant()
    def no_channel_on_a_revoked_image(self) -> None:
        for image_id in self.stores[2].channel_map("web").get("web", {}).values():
            assert image_id is None or image_id not in self.revoked

    @invariant()
    def every_machine_reads_the_same(self) -> None:
        seen = [(s.channel_map(), s.histories()) for s in self.stores]
        assert all(x == seen[0] for x in seen)


def test_the_shared_catalog_loses_no_move_whatever_the_interleaving() -> None:
    run_state_machine_as_test(Catalog, settings=settings(
        max_examples=40, stateful_step_count=12, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))

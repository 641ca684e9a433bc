"""No bake trusts changed bytes, whatever is done to the store's files in between.

A hypothesis state machine registers images of one fingerprint and does to their qcow2 what
people and tools do: rewrite it with other bytes of the same size and put its mtime back,
touch it, rewrite it with the same bytes, rename a copy over it, cut or grow it. After every
step the bake's lookup (`LocalStore.find_intact`) is asked, and the invariant is checked: the
image it offers holds exactly the bytes its manifest records; an intact image is never marked
corrupt; a changed one that the lookup passed is marked corrupt.

The catalog's stat proof is recorded for files of any age here (PROOF_SETTLED_NS = 0), and
each step that writes waits past the kernel's coarse ctime tick first (what the 2 s settle
time stands for outside this test).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from goldenimage import store as store_module
from goldenimage.fsutil import sha256_file
from goldenimage.models import ImageRecord
from goldenimage.store import LocalStore

FP = "f" * 64
TICK = 0.02  # seconds: past one coarse ctime tick (4 ms at HZ=250, 10 ms at HZ=100)


class SkipLookup(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._old = store_module.PROOF_SETTLED_NS
        store_module.PROOF_SETTLED_NS = 0
        self.tmp = tempfile.TemporaryDirectory()
        self.store = LocalStore(Path(self.tmp.name) / "store")
        self.recorded: dict[str, str] = {}  # image id -> the sha256 its manifest records
        self.n = 0
        self.caught: set[str] = set()  # images the lookup marked corrupt

    def teardown(self) -> None:
        store_module.PROOF_SETTLED_NS = self._old
        self.tmp.cleanup()

    def disk(self, image_id: str) -> Path:
        return self.store.image_dir(image_id) / "disk.qcow2"

    def ids(self) -> list[str]:
        return sorted(self.recorded)

    @rule(size=st.integers(min_value=1, max_value=4096))
    def register(self, size: int) -> None:
        self.n += 1
        image_id = f"web-{self.n}"
        with self.store.workspace() as ws:
            files = ws / "image"
            files.mkdir()
            (files / "disk.qcow2").write_bytes(os.urandom(size))
            created = f"2026-12-01T08:{self.n // 60:02d}:{self.n % 60:02d}Z"
            rec = ImageRecord(id=image_id, name="web", env="local", fingerprint=FP, created=created,
                              status="validated", artifact="disk.qcow2")
            digest = sha256_file(files / "disk.qcow2")
            self.store.put(rec, {"id": image_id, "name": "web", "env": "local", "fingerprint": FP,
                                 "created": created, "artifact": "disk.qcow2", "artifact_sha256": digest}, files)
        self.recorded[image_id] = digest

    @precondition(lambda self: self.recorded)
    @rule(data=st.data(), where=st.integers(min_value=0))
    def other_bytes_same_size_mtime_back(self, data: st.DataObject, where: int) -> None:
        disk = self.disk(data.draw(st.sampled_from(self.ids())))
        time.sleep(TICK)
        before = disk.stat()
        buf = bytearray(disk.read_bytes())
        buf[where % len(buf)] ^= 0xFF
        disk.write_bytes(bytes(buf))
        os.utime(disk, ns=(before.st_atime_ns, before.st_mtime_ns))

    @precondition(lambda self: self.recorded)
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        time.sleep(TICK)
        os.utime(self.disk(data.draw(st.sampled_from(self.ids()))))

    @precondition(lambda self: self.recorded)
    @rule(data=st.data())
    def same_bytes_rewritten(self, data: st.DataObject) -> None:
        disk = self.disk(data.draw(st.sampled_from(self.ids())))
        time.sleep(TICK)
        disk.write_bytes(disk.read_bytes())

    @precondition(lambda self: self.recorded)
    @rule(data=st.data(), change=st.booleans())
    def copy_renamed_over(self, data: st.DataObject, change: bool) -> None:
        disk = self.disk(data.draw(st.sampled_from(self.ids())))
        time.sleep(TICK)
        before = disk.stat()
        body = disk.read_bytes()
        copy = disk.with_name("copy.tmp")
        copy.write_bytes(bytes([body[0] ^ 1]) + body[1:] if change else body)
        os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(copy, disk)

    @precondition(lambda self: self.recorded)
    @rule(data=st.data())
    def resized(self, data: st.DataObject) -> None:
        disk = self.disk(data.draw(st.sampled_from(self.ids())))
        time.sleep(TICK)
        size = disk.stat().st_size
        with disk.open("r+b") as fh:
            fh.truncate(size - 1 if size > 1 else size + 1)  # never empty: the other rules change a byte

    @invariant()
    def a_bake_skips_only_to_the_recorded_bytes(self) -> None:
        hit, refused = self.store.find_intact("web", FP)
        intact = {i for i in self.recorded if sha256_file(self.disk(i)) == self.recorded[i]}
        usable = intact - self.caught  # corrupt stays corrupt, even if the bytes come back

        def number(image_id: str) -> int:
            return int(image_id.split("-")[1])

        if hit is not None:
            assert hit.id in intact, f"{hit.id} offered with changed bytes"
            assert hit.id == max(usable, key=number)  # the newest intact one
        else:
            assert not usable
        for image_id in self.recorded:
            status = self.store.get(image_id).status
            if image_id in usable:
                assert status == "validated", f"{image_id} is intact but {status}"
            elif image_id not in self.caught and (hit is None or number(image_id) > number(hit.id)):
                assert status == "corrupt", f"{image_id} changed, passed over, but {status}"
                assert any(r.startswith(f"image {image_id}: ") for r in refused)
            if status == "corrupt":
                self.caught.add(image_id)


TestSkipLookup = SkipLookup.TestCase
TestSkipLookup.settings = settings(max_examples=25, stateful_step_count=12, deadline=None)

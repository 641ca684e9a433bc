"""The bake's skip path: the plan comes first, and a skip trusts only unchanged bytes.

`bake.run` with the local target whose slow parts (tools, base, Packer, the VM) are stand-ins:
its lookup, its store and the bake pipeline are the real ones. A skip validates no template
and builds nothing; an image whose artifact changed (even with size and mtime put back) is
never skipped to: it is marked corrupt and baked anew, with the reason in the result.
"""

from __future__ import annotations

import io
import itertools
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from goldenimage import bake, build, timing
from goldenimage import store as store_module
from goldenimage.adapters.packer import Packer
from goldenimage.build import Tools
from goldenimage.fsutil import sha256_file
from goldenimage.models import ImageRecord
from goldenimage.progress import Reporter
from goldenimage.settings import load_environment
from goldenimage.store import LocalStore
from goldenimage.targets import Base, Checked, Job
from goldenimage.targets.local import LocalTarget
from tests.unit.fp_helpers import make_project

TASKS = [{"task": "Install nginx", "role": "web", "host": "h", "status": "changed", "seconds": 36.0},
         {"task": "Update apt", "role": "base", "host": "h", "status": "ok", "seconds": 12.5},
         {"task": "Gathering Facts", "role": "", "host": "h", "status": "ok", "seconds": 1.5}]
DISK = b"qcow2 bytes " * 4096


class StandIn(LocalTarget):
    """The local target with its lookup and store, and stand-ins for what boots or runs Packer."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: list[str] = []

    def detect_tools(self) -> Tools:
        return Tools(Packer("packer", (1, 6, 6)), "2.19.0", "7.2.0")

    def base_is_at_hand(self, parent: ImageRecord | None) -> bool:
        return True

    def resolve_base(self, reporter: Reporter, parent: ImageRecord | None = None) -> Base:
        return Base("sha256:" + "b" * 64, {})

    def check_ready(self, name: str, tools: Tools, reporter: Reporter) -> None:
        self.calls.append("check_ready")  # nothing to reach for a local bake

    def check_build(self, name: str, tools: Tools, reporter: Reporter) -> None:
        self.calls.append("check_build")  # `packer validate` of the templates

    def build(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        self.calls.append("build")
        (job.ws / "image").mkdir()
        (job.ws / "image" / "disk.qcow2").write_bytes(DISK)
        job.artifacts["timings"] = timing.summary(TASKS, [])
        return {}

    def validate(self, job: Job, reporter: Reporter) -> Checked:
        return Checked(True, [], {})

    def register(self, job: Job, checked: Checked, reporter: Reporter) -> dict[str, Any]:
        img, files = job.image, job.ws / "image"
        rec = ImageRecord(id=img.id, name=img.name, env=self.env.name, fingerprint=img.fingerprint,
                          created=img.build_time, status="validated", artifact="disk.qcow2")
        self.store.put(rec, {"id": img.id, "name": img.name, "env": self.env.name, "fingerprint": img.fingerprint,
                             "created": img.build_time, "artifact": "disk.qcow2",
                             "artifact_sha256": sha256_file(files / "disk.qcow2")}, files)
        job.finished = True
        return {"image_id": rec.id, "status": rec.status, "artifact": str(self.store.image_dir(rec.id) / "disk.qcow2")}


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(tmp_path / "home"))
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    ticks = itertools.count()
    monkeypatch.setattr(build, "now_utc", lambda: start + timedelta(seconds=next(ticks)))  # one id per bake
    return StandIn(load_environment("local", make_project(tmp_path / "proj")))


def bake_web(target: StandIn) -> tuple[dict[str, Any], str]:
    out = io.StringIO()
    result = bake.run(target, "web", False, Reporter(out))
    return result, out.getvalue()


def tamper(disk: Path) -> None:
    """Other bytes of the same size, with the file's mtime put back (what `cp -p` or a careful
    hand leaves): only ctime, which nothing but the system clock sets back, tells."""
    st = disk.stat()
    data = bytearray(disk.read_bytes())
    data[100:104] = b"EVIL"
    with disk.open("r+b") as fh:
        fh.write(data)
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert disk.stat().st_size == st.st_size and disk.stat().st_mtime_ns == st.st_mtime_ns


def test_an_up_to_date_bake_validates_no_template_and_builds_nothing(target: StandIn) -> None:
    first, _ = bake_web(target)
    assert target.calls == ["check_ready", "check_build", "build"] and first["skipped"] is False
    assert first["reason"].startswith("no validated web image has fingerprint")
    target.calls.clear()
    again, _ = bake_web(target)
    assert again["skipped"] is True and again["image_id"] == first["image_id"]
    assert again["reason"] == f"up to date: {first['image_id']}"
    assert target.calls == ["check_ready"]  # the plan came first: no `packer validate`, no build


@pytest.mark.parametrize("settled", [True, False], ids=["cheap-proof-recorded", "fresh-file-hashed"])
def test_a_bake_never_skips_to_changed_bytes(target: StandIn, settled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if settled:  # the artifact counts as long unchanged: registration records its proof
        monkeypatch.setattr(store_module, "PROOF_SETTLED_NS", 0)
    first, _ = bake_web(target)
    store = target.store
    image_id = first["image_id"]
    assert (store._proof(image_id) is not None) is settled  # this machine's proof, beside its cache
    if settled:
        time.sleep(0.05)  # past the kernel's coarse ctime tick of the write that made the file
    disk = store.image_dir(image_id) / "disk.qcow2"
    good = sha256_file(disk)
    tamper(disk)
    target.calls.clear()

    result, log = bake_web(target)
    assert result["skipped"] is False and result["image_id"] != image_id
    assert target.calls == ["check_ready", "check_build", "build"]  # baked anew
    assert store.get(image_id).status == "corrupt"
    assert store.get(image_id).extra["corrupt"]["expected"] == good
    [why] = result["refused"]
    assert image_id in why and good in why and sha256_file(disk) in why and "marked corrupt" in why
    assert why in result["reason"] and result["reason"].startswith("no usable validated web image")
    assert f"warning: not skipping to it: {why}" in log
    lines = bake.human_bake(result)
    assert f"  not skipped to: {why}" in lines
    # the new image is the one a bake skips to now
    assert bake_web(target)[0]["image_id"] == result["image_id"]


def test_an_older_intact_image_with_the_fingerprint_is_skipped_to(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "PROOF_SETTLED_NS", 0)
    store = LocalStore(tmp_path / "store")
    for i in (1, 2):
        put(store, f"web-{i}", created=f"2026-12-01T08:00:0{i}Z")
    time.sleep(0.05)
    tamper(store.image_dir("web-2") / "disk.qcow2")
    hit, refused = store.find_intact("web", "f" * 64)
    assert hit is not None and hit.id == "web-1"
    assert len(refused) == 1 and refused[0].startswith("image web-2: ")
    assert [r.status for r in store.list("web")] == ["validated", "corrupt"]


def put(store: LocalStore, image_id: str, created: str = "2026-12-01T08:00:00Z") -> Path:
    with store.workspace() as ws:
        files = ws / "image"
        files.mkdir()
        (files / "disk.qcow2").write_bytes(DISK)
        rec = ImageRecord(id=image_id, name="web", env="local", fingerprint="f" * 64, created=created,
                          status="validated", artifact="disk.qcow2")
        store.put(rec, {"id": image_id, "name": "web", "env": "local", "fingerprint": "f" * 64,
                        "created": created, "artifact": "disk.qcow2",
                        "artifact_sha256": sha256_file(files / "disk.qcow2")}, files)
    return store.image_dir(image_id) / "disk.qcow2"


def test_the_cheap_proof_spares_the_hash_until_the_file_is_touched(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """While size, mtime, ctime, inode and device are those recorded, `verified` reads
    nothing; a touch (same bytes, new ctime) costs one full hash, which renews the proof."""
    monkeypatch.setattr(store_module, "PROOF_SETTLED_NS", 0)
    store = LocalStore(tmp_path / "store")
    disk = put(store, "web-1")
    hashed: list[Path] = []

    def counting(path: Path) -> str:
        hashed.append(path)
        return sha256_file(path)

    monkeypatch.setattr(store_module, "sha256_file", counting)
    assert store.verified("web-1") == disk and hashed == []
    time.sleep(0.05)
    os.utime(disk)  # touched, not changed
    assert store.verified("web-1") == disk and hashed == [disk]
    assert store.verified("web-1") == disk and hashed == [disk]  # the renewed proof holds
    # a copy renamed over it (a new inode) is hashed again, whatever its times
    st = disk.stat()
    copy = disk.with_name("copy")
    copy.write_bytes(disk.read_bytes())
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, disk)
    assert store.verified("web-1") == disk and hashed == [disk, disk]


def test_a_file_changed_moments_ago_gets_no_proof(tmp_path: Path) -> None:
    """ctime comes from a coarse clock: a file changed within PROOF_SETTLED_NS could be
    changed again in the same tick, so it gets no proof and is hashed in full next time."""
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"x")
    assert store_module.artifact_proof(disk) is None
    later = time.time_ns() + store_module.PROOF_SETTLED_NS
    proof = store_module.artifact_proof(disk, now_ns=later)
    assert proof is not None and store_module.same_file(proof, disk)
    assert store_module.artifact_proof(tmp_path / "missing", now_ns=later) is None


def test_the_summary_counts_the_tasks_it_ranks(target: StandIn) -> None:
    result, _ = bake_web(target)
    lines = bake.human_bake(result)
    assert "  slowest tasks (of 3, 50s in Ansible):" in lines
    assert any("Install nginx" in ln for ln in lines)

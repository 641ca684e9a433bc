"""`invoke gc` on the local store: references (channels, rollback targets, VMs, backing
files), quarantined images and failed logs, staged apply, skip when used meanwhile."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from goldenimage import cli, gc
from goldenimage.adapters import usage
from goldenimage.errors import ConfigError
from goldenimage.models import ImageRecord
from goldenimage.progress import Reporter
from goldenimage.store import LocalStore
from tests.unit.fp_helpers import make_project

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
D = timedelta(days=1)
POLICY = """extra:
  retention:
    failed_logs_days: 10
    images:
      web: {keep: 1, min_age_days: 2, deprecate_after: 0, disable_after: 1, delete_after: 1,
            quarantined: {deprecate_after: 0, disable_after: 0, delete_after: 0}}
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_project(tmp_path / "proj")
    settings = root / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + POLICY)
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GOLDENIMAGE_BASE_CACHE", str(tmp_path / "base"))
    return root


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "home" / "store")


def put(store: LocalStore, n: int, age: float, status: str = "validated", name: str = "web") -> str:
    image_id = f"{name}-{n}"
    files = store.root / "work" / image_id
    files.mkdir(parents=True)
    (files / "disk.qcow2").write_bytes(b"q" * 8192)
    created = (NOW - age * D).strftime("%Y-%m-%dT%H:%M:%SZ")
    rec = ImageRecord(id=image_id, name=name, env="local", fingerprint="f" * 64, created=created,
                      status=status, artifact="disk.qcow2")
    store.put(rec, {"id": image_id, "name": name, "env": "local", "fingerprint": "f" * 64,
                    "created": created, "artifact": "disk.qcow2"}, files)
    return image_id


def run_gc(root: Path, apply: bool = False, now: datetime = NOW) -> dict[str, Any]:
    return gc.gc("local", apply, Reporter(io.StringIO()), root=root, now=now)


def actions(result: dict[str, Any]) -> dict[str, str]:
    return {d["image_id"]: d["reason"] for d in [*result["decisions"], *result["leftovers"]]}


def qcow2_backed_by(path: Path, backing: str) -> None:
    """A minimal qcow2 header naming `backing` (what qemu-img create -b writes)."""
    name = backing.encode()
    header = b"QFI\xfb" + struct.pack(">IQI", 3, 104, len(name))
    path.write_bytes(header.ljust(104, b"\0") + name)


def world(store: LocalStore) -> None:
    """web-1 newest; web-2 on channel stable; web-3 its rollback target; web-4, web-5 old;
    web-9 quarantined; failed logs old and new."""
    for n in range(1, 6):
        put(store, n, age=10 * n)
    put(store, 9, age=0.5, status="quarantined")
    store.promote("web-3", "stable", user="t", now=NOW - 20 * D)
    store.promote("web-2", "stable", user="t", now=NOW - 10 * D)
    for image_id, age in (("web-old", 20), ("web-new", 2)):
        d = store.failed_dir / image_id
        d.mkdir(parents=True)
        (d / "build.log").write_text("log")
        ts = (NOW - age * D).timestamp()
        os.utime(d, (ts, ts))


def test_plan_protects_channels_and_rollback_targets(root: Path, store: LocalStore) -> None:
    world(store)
    r = run_gc(root)
    got = actions(r)
    assert got["web-1"] == "keep: among the newest 1 validated"
    assert got["web-2"] == "keep: channel stable"
    assert got["web-3"] == "keep: rollback target of stable"
    assert got["web-4"] == "deprecate: superseded 30 days ago, 1 newer kept"  # when web-3 came
    assert got["web-9"] == "deprecate: quarantined today"
    assert got["web-old"].startswith("delete: failed bake logs from 20 days ago")
    assert got["web-new"].startswith("keep: failed bake logs from 2 days ago")
    assert r["apply"] is False and r["store"] == str(store.root)
    assert (store.images_dir / "web-4").is_dir()  # a dry run changes nothing
    assert "retention" not in json.loads(store.catalog_path.read_text())


def test_apply_moves_one_stage_per_run_then_deletes(root: Path, store: LocalStore) -> None:
    world(store)
    first = run_gc(root, apply=True)
    assert {a["outcome"] for a in first["applied"]} == {"done"}
    assert not (store.failed_dir / "web-old").exists() and (store.failed_dir / "web-new").exists()
    assert store.get("web-4").extra["stage"] == "deprecated"
    assert store.get("web-9").extra["stage"] == "deprecated"
    # the same instant again: only zero-grace stages move (the quarantined image's)
    again = run_gc(root, apply=True)
    assert [(a["image_id"], a["action"]) for a in again["applied"]] == [("web-9", "disable")]
    later = run_gc(root, apply=True, now=NOW + 1.5 * D)
    assert {(a["image_id"], a["action"]) for a in later["applied"]} == {
        ("web-4", "disable"), ("web-5", "disable"), ("web-9", "delete")}
    assert not (store.quarantine_dir / "web-9").exists()
    with pytest.raises(ConfigError, match="disabled by gc"):
        store.promote("web-4", "canary", user="t")
    last = run_gc(root, apply=True, now=NOW + 3 * D)
    assert {(a["image_id"], a["action"]) for a in last["applied"]} == {("web-4", "delete"), ("web-5", "delete")}
    assert last["reclaimed_bytes"] > 0
    assert not (store.images_dir / "web-4").exists()
    assert {r.id for r in store.list()} == {"web-1", "web-2", "web-3"}
    assert "web-4" not in json.loads(store.catalog_path.read_text())["images"]
    assert not any(store.tmp_dir.iterdir()) if store.tmp_dir.is_dir() else True
    # the channels and their history are untouched
    assert store.channel_map("web") == {"web": {"stable": "web-2"}}
    assert not run_gc(root, apply=True, now=NOW + 3 * D)["applied"]


def test_restore_makes_a_disabled_image_usable_again(root: Path, store: LocalStore) -> None:
    world(store)
    run_gc(root, apply=True)
    run_gc(root, apply=True, now=NOW + 1.5 * D)
    assert store.find_by_fingerprint("web", "f" * 64) is not None  # web-1, never disabled
    assert store.restore("web-4") == {"stage": "disabled", "at": "2026-12-01T21:00:00Z"}
    assert store.promote("web-4", "canary", user="t")["changed"]


def test_running_vm_and_backing_file_protect(root: Path, store: LocalStore, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    world(store)
    disk4 = store.images_dir / "web-4" / "disk.qcow2"
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cmdline").write_bytes(b"/usr/bin/qemu-system-x86_64\0-drive\0file=" + str(disk4).encode() + b"\0")
    (proc / "77").mkdir()
    (proc / "77" / "cmdline").write_bytes(b"cat\0" + str(store.images_dir / "web-5" / "disk.qcow2").encode())
    real = usage.vm_references
    monkeypatch.setattr(usage, "vm_references", lambda disks, proc_=proc: real(disks, proc_))
    overlay = store.tmp_dir / "job" / "overlay.qcow2"
    overlay.parent.mkdir(parents=True)
    qcow2_backed_by(overlay, "../../images/web-5/disk.qcow2")
    got = actions(run_gc(root))
    assert got["web-4"] == "keep: vm qemu pid 4242"
    assert got["web-5"] == f"keep: backing file of {overlay}"


def test_an_image_used_since_the_plan_is_skipped(root: Path, store: LocalStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    world(store)
    run_gc(root, apply=True)
    run_gc(root, apply=True, now=NOW + 1.5 * D)
    from goldenimage.targets import local

    real = local.LocalTarget.gc_world

    def plan_then_promote(self: local.LocalTarget) -> Any:
        w = real(self)
        self.store.restore("web-4")
        self.store.promote("web-4", "canary", user="t")  # someone promotes it meanwhile
        self.store.set_stage("web-4", "disabled", NOW)
        return w

    monkeypatch.setattr(local.LocalTarget, "gc_world", plan_then_promote)
    r = run_gc(root, apply=True, now=NOW + 3 * D)
    by = {a["image_id"]: a for a in r["applied"]}
    assert by["web-4"]["outcome"] == "skipped" and "channel canary" in by["web-4"]["detail"]
    assert by["web-5"]["outcome"] == "done"
    assert (store.images_dir / "web-4").is_dir()
    assert r["exit_code"] == 1


def test_a_failure_on_one_image_does_not_stop_the_others(root: Path, store: LocalStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    world(store)
    run_gc(root, apply=True)
    run_gc(root, apply=True, now=NOW + 1.5 * D)
    real = LocalStore.remove

    def broken(self: LocalStore, image_id: str, still_used: Any) -> str | None:
        if image_id == "web-4":
            raise PermissionError(13, "Permission denied", str(self.images_dir / image_id))
        return real(self, image_id, still_used)

    monkeypatch.setattr(LocalStore, "remove", broken)
    r = run_gc(root, apply=True, now=NOW + 3 * D)
    by = {a["image_id"]: a for a in r["applied"]}
    assert by["web-4"]["outcome"] == "failed" and "Permission denied" in by["web-4"]["detail"]
    assert by["web-5"]["outcome"] == "done"
    assert r["exit_code"] == 1
    lines = gc.human_gc({**r})
    assert any(ln.startswith("failed: delete web-4") for ln in lines)
    assert lines[-1].startswith("applied 2 of 3 changes")  # web-5 and the quarantined web-9 went


def test_human_table_and_json(root: Path, store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    world(store)
    lines = gc.human_gc(run_gc(root))
    assert lines[0].split()[:5] == ["ACTION", "ID", "STAGE", "RECLAIMS", "REASON"]
    assert any(ln.startswith("keep ") and "channel stable" in ln for ln in lines)
    assert "dry run" in lines[-1]
    with pytest.raises(SystemExit) as exc:
        cli.run(lambda rep: gc.gc("local", False, rep, root=root, now=NOW), json_out=True)
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and {d["action"] for d in doc["decisions"]} >= {"keep", "deprecate"}


@pytest.mark.parametrize(("policy", "field"), [
    ("      web: {keep: -1}\n", "extra.retention.images.web.keep"),
    ("      nope: {keep: 1}\n", "extra.retention.images.nope: unknown image 'nope'"),
    ("      web: {disable_after: -2}\n", "extra.retention.images.web.disable_after"),
])
def test_bad_policy_is_exit_2_with_one_line(root: Path, policy: str, field: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    settings = root / "inventories" / "local" / "goldenimage.yml"
    text = settings.read_text()
    settings.write_text(text[:text.index("    images:\n")] + "    images:\n" + policy)
    with pytest.raises(SystemExit) as exc:
        cli.run(lambda rep: gc.gc("local", False, rep, root=root, now=NOW))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: inventories/local/goldenimage.yml: field " + field)


def test_qcow2_backing_file_with_qemu_img(tmp_path: Path) -> None:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img not installed")
    base = tmp_path / "images" / "web-1" / "disk.qcow2"
    base.parent.mkdir(parents=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    over = tmp_path / "work" / "over.qcow2"
    over.parent.mkdir()
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(over)], check=True)
    assert usage.qcow2_backing_file(over) == base
    assert usage.qcow2_backing_file(base) is None
    refs = usage.backing_references({"web-1": base}, [tmp_path])
    assert [(r.image_id, r.where) for r in refs] == [("web-1", str(over))]


def test_restore_through_the_command(root: Path, store: LocalStore) -> None:
    world(store)
    run_gc(root, apply=True)
    r = gc.gc("local", False, Reporter(io.StringIO()), root=root, now=NOW, restore="web-4")
    assert r["changed"] and r["stage"]["stage"] == "deprecated"
    assert gc.human_gc(r) == ["restored web-4: no longer deprecated (since 2026-11-30T09:00:00Z)"]
    again = gc.gc("local", False, Reporter(io.StringIO()), root=root, now=NOW, restore="web-4")
    assert gc.human_gc(again) == ["web-4 was in no retention stage: nothing to do"]
    with pytest.raises(ConfigError, match="go separately"):
        gc.gc("local", True, Reporter(io.StringIO()), root=root, now=NOW, restore="web-4")


def test_images_lists_the_stage(root: Path, store: LocalStore) -> None:
    from goldenimage import commands

    world(store)
    run_gc(root, apply=True)
    lines = commands.human_images(commands.images("local", None, None, Reporter(io.StringIO()), root=root))
    row = next(ln for ln in lines if ln.startswith("web-4 "))
    assert row.endswith("(deprecated by gc since 2026-11-30T09:00:00Z)")
    assert not next(ln for ln in lines if ln.startswith("web-1 ")).endswith(")")


def test_a_vm_booted_through_an_overlay_anywhere_protects(tmp_path: Path, store: LocalStore) -> None:
    """QEMU names only its overlay (outside the store); the overlay's backing chain (two
    levels here) leads to the image's disk."""
    world(store)
    disk = store.images_dir / "web-4" / "disk.qcow2"
    mid = tmp_path / "vms" / "mid.qcow2"
    top = tmp_path / "vms" / "top.qcow2"
    mid.parent.mkdir()
    qcow2_backed_by(mid, str(disk))
    qcow2_backed_by(top, "mid.qcow2")
    proc = tmp_path / "proc"
    (proc / "99").mkdir(parents=True)
    (proc / "99" / "cmdline").write_bytes(
        b"qemu-system-x86_64\0-drive\0file=" + str(top).encode() + b",if=virtio,format=qcow2\0-m\0512\0")
    refs = usage.vm_references({"web-4": disk, "web-5": store.images_dir / "web-5" / "disk.qcow2"}, proc)
    assert [(r.image_id, r.reason()) for r in refs] == [("web-4", "vm qemu pid 99")]


def test_a_real_process_in_proc_protects(tmp_path: Path, store: LocalStore) -> None:
    """Through the real /proc: a process whose program is named qemu-* and whose arguments
    name the image's disk (a Python sleeping under that name stands in for QEMU)."""
    import sys
    import time

    world(store)
    disk = store.images_dir / "web-4" / "disk.qcow2"
    fake = tmp_path / "qemu-system-test"
    fake.symlink_to(os.path.realpath(sys.executable))
    child = subprocess.Popen([str(fake), "-c", "import time; time.sleep(30)", f"file={disk},if=virtio"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if any(pid == child.pid for pid, _ in usage.qemu_processes()):
                break
            time.sleep(0.05)
        refs = usage.vm_references({"web-4": disk, "web-5": store.images_dir / "web-5" / "disk.qcow2"})
        assert [(r.image_id, r.where) for r in refs] == [("web-4", f"qemu pid {child.pid}")]
    finally:
        child.kill()
        child.wait()
    assert not usage.vm_references({"web-4": disk})


def test_a_parent_with_a_registered_child_is_kept(root: Path, store: LocalStore) -> None:
    world(store)
    files = store.root / "work" / "other-1"
    files.mkdir(parents=True)
    (files / "disk.qcow2").write_bytes(b"child")
    parent = {"id": "web-4", "name": "web", "fingerprint": "f" * 64, "channel": None}
    store.put(ImageRecord(id="other-1", name="other", env="local", fingerprint="e" * 64, created="2026-11-29T00:00:00Z",
                          status="validated", artifact="disk.qcow2", extra={"parent": parent}),
              {"id": "other-1", "name": "other", "parent": parent}, files)
    got = actions(run_gc(root))
    assert got["web-4"] == "keep: parent of other-1"
    assert got["web-5"].startswith("deprecate:")  # no child: collected as before
    assert run_gc(root, apply=True)["changes"] and store.get("web-4").extra.get("stage") is None


def _search(root: Path, *places: str) -> None:
    settings = root / "inventories" / "local" / "goldenimage.yml"
    listed = ", ".join(json.dumps(p) for p in places)
    settings.write_text(settings.read_text().replace("    failed_logs_days: 10\n",
                                                     f"    failed_logs_days: 10\n    local_search: [{listed}]\n"))


def test_an_overlay_kept_in_a_searched_place_protects_through_its_whole_chain(
        root: Path, store: LocalStore, tmp_path: Path) -> None:
    """A stopped VM's overlay outside the store (a libvirt pool, say) keeps the image it backs
    onto, also through an overlay on an overlay; on main only the store and base cache were
    searched and web-4/web-5 were deprecated."""
    world(store)
    pool = tmp_path / "pool"
    pool.mkdir()
    qcow2_backed_by(pool / "vm.qcow2", str(store.images_dir / "web-4" / "disk.qcow2"))
    qcow2_backed_by(pool / "mid.qcow2", str(store.images_dir / "web-5" / "disk.qcow2"))
    qcow2_backed_by(pool / "top.qcow2", "mid.qcow2")
    _search(root, "store", "base-cache", str(pool))
    got = actions(run_gc(root))
    assert got["web-4"] == f"keep: backing file of {pool / 'vm.qcow2'}"
    assert got["web-5"] == f"keep: backing file of {pool / 'mid.qcow2'}"
    pool_only = tmp_path / "pool2"
    pool_only.mkdir()
    (pool / "mid.qcow2").rename(pool_only / "mid.qcow2")  # top.qcow2's chain now breaks: web-5 goes
    assert actions(run_gc(root))["web-5"].startswith("deprecate:")


def test_a_libvirt_domain_definition_protects_the_disk_it_names(root: Path, store: LocalStore,
                                                                tmp_path: Path) -> None:
    """A VM defined in libvirt (running or not) whose disk is an overlay of web-4 keeps it."""
    world(store)
    pool, defs = tmp_path / "images", tmp_path / "qemu"
    pool.mkdir()
    defs.mkdir()
    qcow2_backed_by(pool / "db.qcow2", str(store.images_dir / "web-4" / "disk.qcow2"))
    (defs / "db.xml").write_text(
        "<domain type='kvm'><name>db</name><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file='{pool / 'db.qcow2'}'/></disk></devices></domain>")
    _search(root, "store", str(defs))
    assert actions(run_gc(root))["web-4"] == f"keep: vm definition {defs / 'db.xml'} (disk {pool / 'db.qcow2'})"


def test_the_default_search_places(root: Path) -> None:
    from goldenimage.settings import load_environment
    from goldenimage.targets.local import LocalTarget

    places = LocalTarget(load_environment("local", root)).gc_search()
    assert list(places) == ["store", "base-cache", "/var/lib/libvirt/images", "/etc/libvirt/qemu", "running"]


@pytest.mark.parametrize(("text", "field"), [
    ("    shared_may_go: [web, nope]\n", "extra.retention.shared_may_go[1]: unknown image 'nope' (known: "),
    ("    local_search: [store, pools/vm]\n", "extra.retention.local_search[1]: 'pools/vm' is neither"),
])
def test_a_bad_shared_or_search_setting_is_exit_2_with_one_line(
        root: Path, text: str, field: str, capsys: pytest.CaptureFixture[str]) -> None:
    settings = root / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text().replace("    failed_logs_days: 10\n", "    failed_logs_days: 10\n" + text))
    with pytest.raises(SystemExit) as exc:
        cli.run(lambda rep: gc.gc("local", False, rep, root=root, now=NOW))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: inventories/local/goldenimage.yml: field " + field), err


def test_a_second_gc_apply_exits_at_once_naming_the_holder(root: Path, store: LocalStore,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """While one `gc --apply` holds the environment's lock, a second one changes nothing and
    says in one line who holds it (exit 1); on main both ran."""
    from goldenimage.locks import FileLock

    world(store)
    first = FileLock(store.root / "locks" / "gc-local.lock", "gc --apply")
    assert first.try_acquire() is None
    try:
        with pytest.raises(SystemExit) as exc:
            cli.run(lambda rep: gc.gc("local", True, rep, root=root, now=NOW, lock_wait=0))
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 1
        assert len(err) == 1 and "gc --apply in local is already running" in err[0], err
        assert f"pid {os.getpid()} (gc --apply) since " in err[0]
        assert store.get("web-4").extra.get("stage") is None  # nothing was done
    finally:
        first.release()
    r = run_gc(root, apply=True)
    assert {a["outcome"] for a in r["applied"]} == {"done"}


def test_an_image_removed_by_someone_else_is_already_gone_not_a_failure(
        root: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Removed after the gathering, before its step: `gone`, exit 0 (on main: failed, exit 1)."""
    from goldenimage.targets.local import LocalTarget

    world(store)
    real = LocalTarget.gc_world

    def gathered_then_removed(self: LocalTarget) -> Any:
        w = real(self)
        store.remove("web-4", lambda: None)
        return w

    monkeypatch.setattr(LocalTarget, "gc_world", gathered_then_removed)
    r = run_gc(root, apply=True)
    outcome = {a["image_id"]: a["outcome"] for a in r["applied"]}
    assert outcome["web-4"] == "gone"
    assert r.get("exit_code", 0) == 0
    assert "already gone: deprecate web-4" in "\n".join(gc.human_gc(r))

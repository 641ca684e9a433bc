"""`invoke gc` as a user runs it: the table, --json, --apply, exit codes (local target)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from goldenimage.models import ImageRecord
from goldenimage.store import LocalStore
from tests.conftest import ROOT, run_invoke


def project(tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    dest.mkdir()
    for name in ("tasks.py", "inventories", "packer", "playbooks"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)  # type: ignore[operator]
    return dest


def put(store: LocalStore, image_id: str, created: str) -> None:
    files = store.root / "work" / image_id
    files.mkdir(parents=True)
    (files / "disk.qcow2").write_bytes(b"q" * 65536)
    rec = ImageRecord(id=image_id, name="web", env="local", fingerprint="f" * 64, created=created,
                      status="validated", artifact="disk.qcow2")
    store.put(rec, {"id": image_id, "name": "web", "env": "local", "created": created}, files)


def test_gc_task_plans_applies_and_restores(tmp_path: Path) -> None:
    root, home = project(tmp_path), tmp_path / "home"
    store = LocalStore(home / "store")
    for n in range(1, 6):  # web-1 newest, all old enough
        put(store, f"web-{n}", f"2026-0{10 - n}-01T00:00:00Z")
    store.promote("web-5", "stable", user="t")

    res = run_invoke("gc", root=root, home=home)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["ACTION", "ID"]
    assert any("web-5" in ln and "keep: channel stable" in ln for ln in lines)
    assert any(ln.startswith("deprecate") and "web-4" in ln for ln in lines)
    assert "dry run" in lines[-1]

    doc = json.loads(run_invoke("gc", "--json", root=root, home=home).stdout)
    assert doc["ok"] and doc["apply"] is False
    assert {d["image_id"]: d["action"] for d in doc["decisions"]} == {
        "web-1": "keep", "web-2": "keep", "web-3": "keep", "web-4": "deprecate", "web-5": "keep"}

    res = run_invoke("gc", "--apply", "--json", root=root, home=home)
    assert res.returncode == 0, res.stderr
    assert [(a["image_id"], a["outcome"]) for a in json.loads(res.stdout)["applied"]] == [("web-4", "done")]
    assert store.get("web-4").extra["stage"] == "deprecated"

    res = run_invoke("gc", "--restore", "web-4", root=root, home=home)
    assert res.returncode == 0 and res.stdout.startswith("restored web-4: no longer deprecated")
    assert "stage" not in store.get("web-4").extra

    res = run_invoke("gc", "--restore", "web-9", root=root, home=home)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: unknown image id 'web-9'")


def test_gc_task_bad_policy_is_exit_2(tmp_path: Path) -> None:
    root = project(tmp_path)
    settings = root / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text().replace("keep: 3", "keep: -3"))
    res = run_invoke("gc", root=root, home=tmp_path / "home")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: inventories/local/goldenimage.yml: field extra.retention.images.base.keep: "
        "Input should be greater than or equal to 0"]


def test_gc_task_negative_leftover_hours_is_exit_2(tmp_path: Path) -> None:
    root = project(tmp_path)
    settings = root / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text().replace("  retention:\n", "  retention:\n    leftover_hours: -1\n", 1))
    res = run_invoke("gc", root=root, home=tmp_path / "home")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: inventories/local/goldenimage.yml: field extra.retention.leftover_hours: "
        "Input should be greater than or equal to 0"]

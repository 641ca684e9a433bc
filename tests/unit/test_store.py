from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goldenimage.adapters.proc import processes_mentioning
from goldenimage.errors import ConfigError, NotFoundError
from goldenimage.store import ImageRecord, LocalStore


def record(i: int, fp: str = "f" * 64, status: str = "validated", name: str = "web") -> ImageRecord:
    return ImageRecord(id=f"{name}-{i}", name=name, env="local", fingerprint=fp,
                       created=f"2026-11-26T10:00:0{i}Z", status=status, artifact="disk.qcow2")


def put(store: LocalStore, rec: ImageRecord) -> None:
    with store.workspace() as ws:
        img = ws / "image"
        img.mkdir()
        (img / "disk.qcow2").write_bytes(b"qcow")
        store.put(rec, {"id": rec.id, "name": rec.name, "env": rec.env, "fingerprint": rec.fingerprint,
                        "created": rec.created, "artifact": rec.artifact}, img)


def test_put_get_list_find(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put(store, record(1, "a" * 64))
    put(store, record(2, "b" * 64))
    put(store, record(3, "a" * 64))
    assert [r.id for r in store.list("web")] == ["web-1", "web-2", "web-3"]
    assert store.find_by_fingerprint("web", "a" * 64).id == "web-3"  # type: ignore[union-attr]
    assert store.find_by_fingerprint("web", "c" * 64) is None
    assert store.find_by_fingerprint("db", "a" * 64) is None
    assert store.manifest("web-2")["fingerprint"] == "b" * 64
    assert (store.image_dir("web-1") / "disk.qcow2").read_bytes() == b"qcow"
    assert not list(store.tmp_dir.iterdir())  # workspaces are gone


def test_quarantined_images_are_kept_but_not_in_the_catalog(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put(store, record(1, status="quarantined"))
    catalog = json.loads(store.catalog_path.read_text()) if store.catalog_path.exists() else {}
    assert catalog.get("images", {}) == {}
    assert store.get("web-1").status == "quarantined"
    assert store.find_by_fingerprint("web", "f" * 64) is None
    assert [r.status for r in store.list()] == ["quarantined"]


def test_unknown_id_and_duplicate_id(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(NotFoundError, match="unknown image id 'web-9'"):
        store.get("web-9")
    put(store, record(1))
    with pytest.raises(ConfigError, match="already exists"):
        put(store, record(1))


def test_failed_bake_leaves_no_workspace(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(RuntimeError), store.workspace() as ws:
        (ws / "junk").write_text("x")
        raise RuntimeError("boom")
    assert not list(store.tmp_dir.iterdir())
    assert not store.catalog_path.exists()


def test_workspace_of_a_killed_process_is_swept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    # a real process creates a workspace and is SIGKILLed inside it
    code = (
        "import os, sys, signal; sys.path.insert(0, sys.argv[2]);"
        "from pathlib import Path; from goldenimage.store import LocalStore;"
        "s = LocalStore(Path(sys.argv[1]));"
        "cm = s.workspace(); ws = cm.__enter__(); (ws / 'half').write_text('x');"
        "import subprocess; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', str(ws)],"
        " start_new_session=True);"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    subprocess.run([sys.executable, "-c", code, str(tmp_path), src], check=False)
    [ws] = list(store.tmp_dir.iterdir())
    assert processes_mentioning(str(ws)), "the stand-in VM outlived its bake"
    swept = store.sweep_stale()
    assert swept == [ws]
    assert not list(store.tmp_dir.iterdir())
    deadline = time.monotonic() + 10
    while processes_mentioning(str(ws)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_mentioning(str(ws)), "the sweep stops what still ran on the workspace"


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    marker = str(tmp_path / "child-marker")
    code = (
        "import os, sys, signal; sys.path.insert(0, sys.argv[2]);"
        "from pathlib import Path; from goldenimage.adapters import proc;"
        "child = 'import sys, time; open(sys.argv[1] + \\'.started\\', \\'w\\'); time.sleep(300)';"
        "cm = proc.background([sys.executable, '-c', child, sys.argv[1]], log=Path(sys.argv[1] + '.log'));"
        "cm.__enter__();"
        "import time\nwhile not os.path.exists(sys.argv[1] + '.started'): time.sleep(0.05)\n"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    subprocess.run([sys.executable, "-c", code, marker, src], check=False)
    deadline = time.monotonic() + 10
    while processes_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Path(marker + ".started").exists(), "the child ran"
    assert not processes_mentioning(marker), "and died with its parent"


def test_live_workspace_is_not_swept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with store.workspace() as ws:
        assert store.sweep_stale() == []
        assert ws.exists()
    assert os.listdir(store.tmp_dir) == []


def test_corrupt_catalog_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.catalog_path.write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt catalog"):
        store.list()

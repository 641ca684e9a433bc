"""Two bakes of one image at once: the second waits for the first, then finds it up to date.

Real processes, no VM: the base is a user-supplied file (verified by checksum), and the
image the first "bake" registers is put in the store by the test while it holds the bake
lock, exactly as a finishing bake would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goldenimage.fsutil import file_lock
from goldenimage.store import LocalStore
from tests.conftest import put_validated, use_file_base

pytestmark = pytest.mark.integration


def test_second_bake_waits_then_reports_up_to_date(project: Path, tmp_path: Path) -> None:
    use_file_base(project, "local", tmp_path)
    home = tmp_path / "home"
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(project), "GOLDENIMAGE_HOME": str(home)}
    fp = json.loads(subprocess.run([sys.executable, "-m", "invoke", "fingerprint", "--json"], cwd=project,
                                   env=env, capture_output=True, text=True, check=True).stdout)
    fingerprint = {r["image"]: r["fingerprint"] for r in fp["images"]}["base"]  # base has no parent
    store = LocalStore(home / "store")

    with file_lock(store.root / "locks" / "base.lock"):  # a bake of base is running
        log = tmp_path / "second.log"
        with log.open("w") as fh:
            second = subprocess.Popen([sys.executable, "-m", "invoke", "bake", "--image", "base", "--json"],
                                      cwd=project, env=env,
                                      stdout=subprocess.PIPE, stderr=fh, text=True)
        deadline = time.monotonic() + 60
        while "waiting for it to finish" not in log.read_text():
            assert second.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # the running bake finishes: it registers its validated image, then lets go of the lock
        put_validated(store.root, "base-first", fingerprint, name="base")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, log.read_text()
    doc = json.loads(out)
    assert doc["skipped"] is True and doc["image_id"] == "base-first"
    assert json.loads(store.catalog_path.read_text())["images"].keys() == {"base-first"}
    assert not list(store.tmp_dir.iterdir())

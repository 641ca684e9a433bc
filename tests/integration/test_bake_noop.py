"""`invoke bake` on the skip path, through the real command line, with no VM.

The base is a user-supplied file (verified by checksum) and `packer` on PATH is a shim that
logs its arguments and hands `version` and `validate` to the real Packer; its `build`
fails at once, so a bake that does not skip stops right there, before any VM boots.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from goldenimage.fsutil import sha256_file
from goldenimage.store import LocalStore
from tests.conftest import put_validated, run_invoke, use_file_base

pytestmark = pytest.mark.integration


def packer_shim(tmp_path: Path) -> tuple[dict[str, str], Path]:
    real = shutil.which("packer")
    assert real is not None, "packer is not installed"
    bindir, log = tmp_path / "shim", tmp_path / "packer-calls.log"
    bindir.mkdir()
    shim = bindir / "packer"
    shim.write_text(f'#!/bin/sh\necho "$1" >> {log}\n'
                    'if [ "$1" = build ]; then echo "Error: stopped by the test before any VM" >&2; exit 1; fi\n'
                    f'exec {real} "$@"\n')
    shim.chmod(0o755)
    log.touch()
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, log


def base_fingerprint(project: Path, home: Path, env: dict[str, str]) -> str:
    res = run_invoke("fingerprint", "--image", "base", "--json", root=project, home=home, env=env)
    assert res.returncode == 0, res.stderr
    return str({r["image"]: r["fingerprint"] for r in json.loads(res.stdout)["images"]}["base"])


def test_an_up_to_date_bake_validates_no_template_and_says_so_once(project: Path, tmp_path: Path) -> None:
    use_file_base(project, "local", tmp_path)
    home = tmp_path / "home"
    env, calls = packer_shim(tmp_path)
    put_validated(home / "store", "base-first", base_fingerprint(project, home, env), name="base")
    calls.write_text("")

    res = run_invoke("bake", "--image", "base", root=project, home=home, env=env)
    assert res.returncode == 0, res.stderr
    said = (res.stdout + res.stderr).count("up to date: base-first")
    assert said == 1, res.stdout + res.stderr
    assert res.stdout.startswith("up to date: base-first (fingerprint ")
    # the plan first: no `packer validate` for a skip; not even `packer version`, which the
    # fingerprint above asked of this binary and the host remembers (adapters.hostcache)
    assert calls.read_text().split() == []


def test_a_bake_does_not_skip_to_an_image_whose_bytes_changed(project: Path, tmp_path: Path) -> None:
    use_file_base(project, "local", tmp_path)
    home = tmp_path / "home"
    env, calls = packer_shim(tmp_path)
    disk = put_validated(home / "store", "base-first", base_fingerprint(project, home, env), name="base",
                         artifact_sha256=True)
    good = sha256_file(disk)
    st = disk.stat()
    disk.write_bytes(b"QCOW2")  # the same size; the mtime put back
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))

    res = run_invoke("bake", "--image", "base", "--json", root=project, home=home, env=env)
    assert res.returncode == 1, res.stderr  # it was not skipped to: the (stand-in) build ran and failed
    warning = next(ln for ln in res.stderr.splitlines() if ln.startswith("warning: not skipping to it: "))
    assert "image base-first:" in warning and good in warning and sha256_file(disk) in warning
    assert "marked corrupt" in warning
    assert "no usable validated base image has fingerprint" in res.stderr
    assert "stopped by the test before any VM" in json.loads(res.stdout)["error"]
    assert "build" in calls.read_text().split()
    store = LocalStore(home / "store")
    assert store.get("base-first").status == "corrupt"
    assert store.get("base-first").extra["corrupt"] == {**store.get("base-first").extra["corrupt"],
                                                        "expected": good, "actual": sha256_file(disk)}

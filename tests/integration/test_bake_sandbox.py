"""`invoke bake --env sandbox` against a running sandbox: an up-to-date local image is
registered there as an AMI once, and an image whose AMI was revoked is never reused.

Real processes and a real moto server (started with `invoke sandbox.up`); no VM: the base
is a user-supplied file, and the validated local image is put in the store by the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from goldenimage.store import LocalStore
from tests.conftest import allow_unsigned, copy_project, put_validated, use_file_base, wait_for_output

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    project = copy_project(tmp_path / "project")
    use_file_base(project, "sandbox", tmp_path)
    env = {**os.environ, "GOLDENIMAGE_ROOT": str(project), "GOLDENIMAGE_HOME": str(tmp_path / "home")}
    up = invoke(project, env, "sandbox.up")
    assert up.returncode == 0, up.stderr
    try:
        yield project, env
    finally:
        invoke(project, env, "sandbox.down")


def invoke(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def sandbox_store(project: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    """The sandbox environment's store as its commands see it: the catalog in the bucket the
    sandbox serves (the shipped settings' `state:`), the files under the home."""
    from goldenimage.settings import load_environment
    from goldenimage.targets import target_for

    monkeypatch.setenv("GOLDENIMAGE_HOME", env["GOLDENIMAGE_HOME"])
    store: LocalStore = target_for(load_environment("sandbox", project)).store  # type: ignore[attr-defined]
    assert store.shared is not None and "goldenimage-state" in store.where
    return store


def test_local_image_registered_once_and_never_reused_after_revocation(
    sandbox_env: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, env = sandbox_env
    allow_unsigned(project, "sandbox")
    fp = json.loads(invoke(project, env, "fingerprint", "--env", "sandbox", "--json").stdout)
    fingerprint = {r["image"]: r["fingerprint"] for r in fp["images"]}["base"]  # base has no parent
    store = sandbox_store(project, env, monkeypatch)
    put_validated(store, "base-local-1", fingerprint, env="sandbox", name="base")  # a finished bake

    first = invoke(project, env, "bake", "--env", "sandbox", "--image", "base", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["skipped"] is True and doc["registered"]["new"] is True
    ami = doc["registered"]["image_id"]
    again = json.loads(invoke(project, env, "bake", "--env", "sandbox", "--image", "base", "--json").stdout)
    assert again["registered"] == {"image_id": ami, "new": False}

    revoked = invoke(project, env, "revoke", "--env", "sandbox", "--image-id", ami, "--reason", "CVE")
    assert revoked.returncode == 0, revoked.stderr

    log = tmp_path / "third.log"
    with log.open("w") as fh:
        third = subprocess.Popen([sys.executable, "-m", "invoke", "bake", "--env", "sandbox", "--image", "base", "--json"],
                                 cwd=project, env=env, stdout=subprocess.PIPE, stderr=fh, text=True)
    try:
        wait_for_output(log, third, "==> build", timeout=120, poll=0.2)
        third.send_signal(signal.SIGINT)  # it is building anew: that is all this test needs
        out, _ = third.communicate(timeout=180)
    finally:
        if third.poll() is None:
            third.kill()
    text = log.read_text()
    assert "base-local-1 is revoked in sandbox" in text and "up to date" not in text
    assert third.returncode == 1 and json.loads(out)["ok"] is False
    assert [r.id for r in store.list("base")] == ["base-local-1"]


def test_a_sandbox_child_takes_its_parent_as_the_sandbox_has_it(
    sandbox_env: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channels and statuses are the sandbox's (SSM, AMI tags), not the local store's, even
    though the child is built on the local qcow2 the parent's AMI stands for."""
    from goldenimage.bake import resolve_parent
    from goldenimage.errors import GoldenImageError
    from goldenimage.progress import Reporter
    from goldenimage.settings import load_environment
    from goldenimage.targets import target_for

    project, env = sandbox_env
    allow_unsigned(project, "sandbox")
    store = sandbox_store(project, env, monkeypatch)
    for i in (1, 2):
        put_validated(store, f"base-local-{i}", str(i) * 64, env="sandbox", name="base")
    target = target_for(load_environment("sandbox", project))
    ami = {i: target._register_remote(store.get(f"base-local-{i}"), Reporter(quiet=True))["image_id"]  # type: ignore[attr-defined]
           for i in (1, 2)}
    remote = target.registry()
    remote.promote(ami[1], "stable")
    store.promote("base-local-2", "stable")  # the local store's channel says otherwise

    # `parent: base`: the newest image validated in the sandbox
    assert resolve_parent(target, "web", {}).id == "base-local-2"
    remote.revoke(ami[2], "CVE-2026-0001")
    assert store.get("base-local-2").status == "validated"  # still, locally
    assert resolve_parent(target, "web", {}).id == "base-local-1"

    # `parent: {image: base, channel: stable}`: the sandbox's channel
    settings = project / "inventories/sandbox/goldenimage.yml"
    settings.write_text(settings.read_text().replace("    parent: base\n",
                                                     "    parent: {image: base, channel: stable}\n", 1))
    target = target_for(load_environment("sandbox", project))
    assert resolve_parent(target, "web", {}).id == "base-local-1"
    fp = invoke(project, env, "fingerprint", "--env", "sandbox", "--image", "web", "--explain", "--json")
    assert fp.returncode == 0, fp.stderr
    assert "base-local-1" in fp.stdout and "base-local-2" not in fp.stdout

    remote.revoke(ami[1], "CVE-2026-0002")  # stable now points at nothing usable
    with pytest.raises(GoldenImageError) as err:
        resolve_parent(target, "web", {})
    assert "images.web.parent" in str(err.value) and "base" in str(err.value)

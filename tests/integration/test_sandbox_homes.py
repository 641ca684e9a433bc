"""Two homes on one sandbox, as two machines on one AWS account and one state bucket: the
shipped `sandbox` environment keeps its registry in a bucket its own moto server serves
(`state:` without an endpoint), and with a fixed `extra.sandbox.port` a second home's
`invoke sandbox.up` attaches to the server the first one started.

Real processes, separate GOLDENIMAGE_HOMEs, a real moto server; no VM: the validated image
is put in the shared store by the test, as a finished bake on the first home leaves it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.conftest import allow_unsigned, copy_project, put_validated, run_invoke, use_file_base
from tests.integration.test_bake_sandbox import sandbox_store

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_second_home_attaches_and_shares_the_sandboxs_registry(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_project(tmp_path / "project")
    use_file_base(project, "sandbox", tmp_path)
    allow_unsigned(project, "sandbox")  # home a's image is registered without a bake
    settings = project / "inventories" / "sandbox" / "goldenimage.yml"
    port = free_port()
    settings.write_text(settings.read_text().replace("    port: 0 ", f"    port: {port} ", 1))
    assert f"port: {port}" in settings.read_text()
    a, b = tmp_path / "home-a", tmp_path / "home-b"

    up_a = run_invoke("sandbox.up", "--json", root=project, home=a, timeout=300)
    assert up_a.returncode == 0, up_a.stderr
    try:
        started = json.loads(up_a.stdout)
        assert started["started_now"] is True and started["seed"]["state_bucket"] == "goldenimage-state"
        up_b = run_invoke("sandbox.up", root=project, home=b, timeout=120)
        assert up_b.returncode == 0, up_b.stderr
        assert "attached to the one another home started" in up_b.stderr + up_b.stdout
        status_b = json.loads(run_invoke("sandbox.status", "--json", root=project, home=b).stdout)
        assert status_b["running"] is True and status_b["endpoint"] == started["endpoint"]
        assert status_b["pid"] == started["pid"]

        # home a finished a bake of base: home b finds it in the shared registry and registers
        # it as an AMI; home a, asked again, finds that AMI rather than registering a second
        fp = json.loads(run_invoke("fingerprint", "--env", "sandbox", "--image", "base", "--json",
                                   root=project, home=a).stdout)
        fingerprint = {r["image"]: r["fingerprint"] for r in fp["images"]}["base"]
        store = sandbox_store(project, {"GOLDENIMAGE_HOME": str(a)}, monkeypatch)
        put_validated(store, "base-home-a-1", fingerprint, env="sandbox", name="base", artifact_sha256=True)
        assert not (b / "store" / "catalog.json").exists()
        bake_b = run_invoke("bake", "--env", "sandbox", "--image", "base", "--json", root=project, home=b)
        assert bake_b.returncode == 0, bake_b.stderr
        doc = json.loads(bake_b.stdout)
        assert doc["skipped"] is True and doc["image_id"] == "base-home-a-1", doc
        assert doc["registered"]["new"] is True
        bake_a = json.loads(run_invoke("bake", "--env", "sandbox", "--image", "base", "--json",
                                       root=project, home=a).stdout)
        assert bake_a["registered"] == {"image_id": doc["registered"]["image_id"], "new": False}

        # b lets go of the sandbox; it runs on for a, which started it
        down_b = run_invoke("sandbox.down", "--json", root=project, home=b)
        assert down_b.returncode == 0 and json.loads(down_b.stdout)["detached"] is True, down_b.stderr
        assert json.loads(run_invoke("sandbox.status", "--json", root=project, home=a).stdout)["running"] is True
    finally:
        down_a = run_invoke("sandbox.down", "--json", root=project, home=a)
    assert json.loads(down_a.stdout)["stopped"] is True
    # the server is gone: b's state went with its detach, so b says so in one line
    again = run_invoke("bake", "--env", "sandbox", "--image", "base", root=project, home=b)
    lines = [ln for ln in again.stderr.splitlines() if ln.strip()]
    assert again.returncode == 2 and lines[-1].startswith("error: sandbox for env 'sandbox' is not running"), \
        again.stderr
    assert "Traceback" not in again.stderr

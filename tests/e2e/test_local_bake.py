"""The main job, end to end, for real: Packer + QEMU (TCG) + Ansible + testinfra.

Marked slow: each test boots VMs. They share one base-disk cache (built once, ~1-2 min)
and run in file order: an interrupted bake first, then the full bake that must succeed
after it, then the failure paths on small playbooks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_project, run_invoke, wait_for_output

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, base_cache: Path) -> dict[str, Path]:
    return {"base": base_cache, "home": tmp_path_factory.mktemp("home")}


def env_for(shared: dict[str, Path], home: Path | None = None) -> dict[str, str]:
    return {"GOLDENIMAGE_BASE_CACHE": str(shared["base"]), "GOLDENIMAGE_HOME": str(home or shared["home"])}


def qemu_processes(marker: str) -> list[str]:
    """Command lines of the QEMU processes whose arguments mention `marker` (a private dir)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(a.decode(errors="replace") for a in args)
        if args and b"qemu-system" in args[0] and marker in text:
            found.append(text)
    return found


def store_is_empty(home: Path) -> bool:
    store = home / "store"
    catalog = json.loads((store / "catalog.json").read_text()) if (store / "catalog.json").exists() else {}
    tmp = list((store / ".tmp").iterdir()) if (store / ".tmp").exists() else []
    images = list((store / "images").iterdir()) if (store / "images").exists() else []
    return not catalog.get("images") and not tmp and not images


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_bake_leaves_nothing(shared: dict[str, Path], sig: int) -> None:
    home = shared["home"]
    e = {**os.environ, "GOLDENIMAGE_ROOT": str(ROOT), **env_for(shared)}
    log = home / "interrupted.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "bake"], cwd=ROOT, env=e,
                                stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL)
    try:
        wait_for_output(log, proc, "Waiting for SSH", "TASK [", timeout=1200, poll=1)
        time.sleep(5)
        assert qemu_processes(str(home)), "the build VM should be running now"
        proc.send_signal(sig)
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    catalog = home / "store" / "catalog.json"
    if sig == signal.SIGKILL:
        # no chance to clean up: nothing is registered, and the next bake (the next test)
        # sweeps the dead bake's workspace and whatever still runs on it
        assert rc == -signal.SIGKILL
        assert not catalog.exists() or not json.loads(catalog.read_text()).get("images")
        return
    assert rc == 1, text
    assert "error: interrupted" in text
    assert "Traceback" not in text
    assert not qemu_processes(str(home)), "no VM may survive an interrupted bake"
    assert store_is_empty(home)


def test_bake_web_end_to_end(shared: dict[str, Path]) -> None:
    res = run_invoke("bake", "--json", env=env_for(shared))
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["status"] == "validated" and doc["skipped"] is False
    assert set(doc["durations"]) >= {"base", "fingerprint", "build", "validate", "register"}
    image_dir = Path(doc["artifact"]).parent
    assert Path(doc["artifact"]).stat().st_size > 50 * 2**20
    manifest = json.loads((image_dir / "manifest.json").read_text())
    assert manifest["fingerprint"] == doc["fingerprint"]
    assert manifest["validation"]["status"] == "validated" and manifest["validation"]["failed"] == 0
    assert manifest["validation"]["passed"] >= 10
    assert {p["name"] for p in manifest["packages"]} >= {"nginx", "openssh-server", "systemd"}
    assert manifest["tools"]["packer"] and manifest["tools"]["ansible-core"] and manifest["tools"]["qemu"]
    assert manifest["base"]["identity"].startswith("sha256:")
    assert manifest["git"]["commit"] is None or len(manifest["git"]["commit"]) == 40
    assert manifest["packer_manifest"]["builder_type"] == "qemu"
    assert (image_dir / "junit.xml").is_file()
    # web is validated by the common checks and its own, and by nothing else
    suites = {case.get("classname") for case in ET.parse(image_dir / "junit.xml").getroot().iter("testcase")}
    assert suites == {"tests.image.common.test_common", "tests.image.web.test_web"}, suites  # --rootdir
    assert (image_dir / "sbom.cdx.json").is_file()
    # where the build's time went, kept with the image and shown at the end of the bake
    timings = manifest["timings"]
    assert {"Provisioning with Ansible...", "Converting hard drive..."} <= {s["step"] for s in timings["packer_steps"]}
    tasks = {(t["role"], t["task"]) for t in timings["ansible_tasks"]}
    assert {("web", "Install nginx"), ("hygiene", "Remove the build user's authorized keys")} <= tasks
    assert len(timings["slowest_tasks"]) == 10 and doc["slowest_tasks"] == timings["slowest_tasks"]
    assert (image_dir / "timings.json").is_file()
    # nothing is left of the interrupted and killed bakes before this one
    assert not qemu_processes(str(shared["home"]))
    assert not list((shared["home"] / "store" / ".tmp").iterdir())

    listed = json.loads(run_invoke("images", "--json", env=env_for(shared)).stdout)
    assert [i["id"] for i in listed["images"]] == [doc["image_id"]]
    assert listed["images"][0]["status"] == "validated"
    shown = run_invoke("images", "--image-id", doc["image_id"], env=env_for(shared))
    assert shown.returncode == 0 and "slowest tasks (of " in shown.stdout, shown.stdout

    again = run_invoke("bake", "--json", env=env_for(shared))
    assert again.returncode == 0, again.stderr
    redo = json.loads(again.stdout)
    assert redo["skipped"] is True and redo["image_id"] == doc["image_id"]
    assert "up to date" in again.stderr


def _small_project(tmp_path: Path, playbook: str) -> Path:
    project = copy_project(tmp_path / "project")
    (project / "playbooks" / "web.yml").write_text(playbook)
    return project


def test_failing_ansible_task_names_task_and_host(shared: dict[str, Path], tmp_path: Path) -> None:
    project = _small_project(tmp_path, (
        "- name: Broken image\n  hosts: all\n  become: true\n  tasks:\n"
        "    - name: Fail on purpose\n      ansible.builtin.command: /bin/false\n"
    ))
    home = tmp_path / "home"
    res = run_invoke("bake", root=project, env=env_for(shared, home))
    assert res.returncode == 1, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr
    assert "ansible task [Fail on purpose] failed on host default" in errors[0]
    assert store_is_empty(home)
    assert not qemu_processes(str(home))


def test_failing_image_test_quarantines(shared: dict[str, Path], tmp_path: Path) -> None:
    # an image without the web role: it boots, but the image suite must fail (no nginx)
    project = _small_project(tmp_path, (
        "- name: Image without nginx\n  hosts: all\n  become: true\n  roles:\n    - hygiene\n"
    ))
    home = tmp_path / "home"
    res = run_invoke("bake", "--json", root=project, env=env_for(shared, home))
    assert res.returncode == 1, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "failed validation" in errors[0] and "quarantined" in errors[0]
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["status"] == "quarantined"
    assert any("nginx" in f for f in doc["failures"]), doc["failures"]
    # kept in quarantine with its failing checks, never in the catalog
    assert store_is_empty(home)
    qdir = home / "store" / "quarantine" / doc["image_id"]
    manifest = json.loads((qdir / "manifest.json").read_text())
    assert manifest["status"] == "quarantined" and manifest["validation"]["failures"]
    assert (qdir / "junit.xml").is_file()
    listed = json.loads(run_invoke("images", "--json", root=project, env=env_for(shared, home)).stdout)
    assert [i["status"] for i in listed["images"]] == ["quarantined"]

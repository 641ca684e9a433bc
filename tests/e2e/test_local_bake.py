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
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from goldenimage.fsutil import sha256_file
from tests.conftest import ROOT, copy_project, run_invoke, wait_for_output
from tests.debarchive import build_deb, served, write_repo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, base_cache: Path) -> dict[str, Path]:
    return {"base": base_cache, "home": tmp_path_factory.mktemp("home")}


@dataclass
class ProbeRepo:
    """An apt repository the tests serve over HTTP on loopback, seen by the build VM at
    QEMU's user-network host address: suite `e2e-security` holds goldenimage-probe, a real
    .deb, in the version last published."""

    root: Path
    port: int

    @property
    def guest_url(self) -> str:
        return f"http://10.0.2.2:{self.port}"

    def publish(self, version: str) -> None:
        deb = build_deb(self.root / "build", PROBE, version, {"/usr/share/goldenimage-probe/version": f"{version}\n"})
        write_repo(self.root / "repo", "e2e-security", [deb])

    def role(self, project: Path) -> None:
        """Role `probe` in `project`: adds the repository, reads its index only, installs the
        package (what a role adding a vendor's apt repository does)."""
        tasks = project / "roles" / "probe" / "tasks"
        tasks.mkdir(parents=True)
        listed = "/etc/apt/sources.list.d/goldenimage-e2e.list"
        (tasks / "main.yml").write_text(
            "---\n"
            "- name: Add the tests' apt repository\n"
            "  ansible.builtin.copy:\n"
            f"    dest: {listed}\n"
            f'    content: "deb [trusted=yes] {self.guest_url} e2e-security main\\n"\n'
            '    mode: "0644"\n'
            "- name: Read that repository's index\n"
            f"  ansible.builtin.command: >-  # noqa: command-instead-of-module (one list, not the whole update)\n"
            f"    apt-get update -o Dir::Etc::sourcelist={listed} -o Dir::Etc::sourceparts=-\n"
            "    -o APT::Get::List-Cleanup=0\n"
            "  changed_when: true\n"
            f"- name: Install {PROBE}\n"
            "  ansible.builtin.apt:\n"
            f"    name: {PROBE}\n")


PROBE = "goldenimage-probe"


@pytest.fixture(scope="module")
def probe_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeRepo]:
    root = tmp_path_factory.mktemp("probe-repo")
    (root / "repo").mkdir()
    with served(root / "repo") as url:
        repo = ProbeRepo(root, int(url.rsplit(":", 1)[1]))
        repo.publish("1.0")
        yield repo


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
    # web is validated by the common checks, its parent's and its own, and by nothing else
    suites = {case.get("classname") for case in ET.parse(image_dir / "junit.xml").getroot().iter("testcase")}
    assert suites == {"tests.image.common.test_common", "tests.image.base.test_base",
                      "tests.image.web.test_web"}, suites  # --rootdir
    # baked on its parent, base, which was baked first (its own image, from the base disk)
    [parent] = doc["parents"]
    assert parent["image"] == "base" and parent["skipped"] is False
    assert {k: manifest["parent"][k] for k in ("id", "name", "channel")} == {
        "id": parent["image_id"], "name": "base", "channel": None}
    assert manifest["base"]["source"] == f"image:{parent['image_id']}"
    assert "parent:image" in manifest["fingerprint_inputs"]
    base_manifest = json.loads((image_dir.parent / parent["image_id"] / "manifest.json").read_text())
    assert base_manifest["base"]["source"].startswith("mmdebstrap:") and "parent" not in base_manifest
    assert manifest["parent"]["fingerprint"] == base_manifest["fingerprint"]
    assert manifest["base"]["identity"] == f"sha256:{base_manifest['artifact_sha256']}"
    # base, which images are built on, keeps its package index for their builds; web keeps none
    kept = base_manifest["apt_state"]
    index = image_dir.parent / parent["image_id"] / kept["file"]
    assert sha256_file(index) == kept["sha256"] and index.stat().st_size == kept["bytes"]
    with tarfile.open(index) as tar:
        names = tar.getnames()
    assert any(n.startswith("var/lib/apt/lists/") and n.endswith("_Packages") for n in names), names
    assert "var/cache/apt/srcpkgcache.bin" in names and "apt_state" not in manifest
    assert f"package index of {parent['image_id']}" in res.stderr  # web's build started from it
    assert (image_dir / "sbom.cdx.json").is_file()
    # the compliance audit ran in the validation boot: its report kept, its verdict recorded
    # and signed, its top findings shown
    audit = manifest["compliance"]
    assert audit["scanner"] == "lynis" and audit["version"] and audit["ok"] is True, audit
    assert audit["groups"] == ["ssh", "authentication", "shells"] and audit["min_score"] == 60
    assert 0 < audit["score"] <= 100 and audit["tests_executed"] >= 20 and audit["seconds"] > 0
    report = (image_dir / audit["report"]).read_text()
    assert sha256_file(image_dir / audit["report"]) == audit["report_sha256"]
    assert f"hardening_index={audit['score']}" in report and "SSH-7408" in report
    assert (image_dir / "lynis.log").is_file() and manifest["timings"]["compliance_seconds"] == audit["seconds"]
    assert f"compliance: lynis {audit['version']} hardening index {audit['score']}" in res.stderr
    checked = json.loads(run_invoke("verify", "--image-id", doc["image_id"], "--json", env=env_for(shared)).stdout)
    assert any(c["what"] == "compliance" and c["ok"] for c in checked["checks"]), checked
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
    assert [(i["name"], i["id"], i["status"]) for i in listed["images"]] == [
        ("base", parent["image_id"], "validated"), ("web", doc["image_id"], "validated")]
    shown = run_invoke("images", "--image-id", doc["image_id"], env=env_for(shared))
    assert shown.returncode == 0 and "slowest tasks (of " in shown.stdout, shown.stdout

    again = run_invoke("bake", "--json", env=env_for(shared))
    assert again.returncode == 0, again.stderr
    redo = json.loads(again.stdout)
    assert redo["skipped"] is True and redo["image_id"] == doc["image_id"]
    assert redo["parents"] == [{"image": "base", "image_id": parent["image_id"], "skipped": True}]
    assert "up to date" in again.stderr


def test_nightly_bakes_the_missing_leaf_on_base_and_promotes_it(shared: dict[str, Path]) -> None:
    """After web (and base) above, a real `invoke nightly`: cache has no image yet, so the job
    bakes the family (base and web are up to date and skipped; cache is baked on base),
    promotes cache to the nightly channel, runs gc and writes its report."""
    res = run_invoke("nightly", "--json", env=env_for(shared))
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    drift = {i["image"]: i["reasons"] for i in doc["drift"]["images"]}
    assert drift["cache"] == ["no validated image yet"], drift
    rows = {r["image"]: r for r in doc["bake"]["images"]}
    assert [r["image"] for r in doc["bake"]["images"]] == ["base", "cache", "web"]
    archive_moved = doc["drift"]["bases"] or any(i["drifted"] for i in doc["drift"]["images"])
    if not archive_moved:  # (unless the archive published newer versions of the images' packages meanwhile)
        assert drift["base"] == drift["web"] == []
        assert rows["base"]["state"] == "skipped" and rows["web"]["state"] == "skipped"
    assert rows["cache"]["state"] == "built" and rows["cache"]["status"] == "validated"
    assert rows["cache"]["result"]["parent"]["id"] == rows["base"]["image_id"]
    promoted = {p["image"]: p for p in doc["promotions"]}
    assert promoted["cache"]["image_id"] == rows["cache"]["image_id"] and promoted["cache"]["channel"] == "nightly"
    assert {s["step"]: s["outcome"] for s in doc["steps"]}["gc"] == "done"
    assert Path(doc["report"]["json"]).is_file() and "cache" in Path(doc["report"]["markdown"]).read_text()

    cache_dir = Path(rows["cache"]["result"]["artifact"]).parent
    suites = {case.get("classname") for case in ET.parse(cache_dir / "junit.xml").getroot().iter("testcase")}
    assert suites == {"tests.image.common.test_common", "tests.image.base.test_base",
                      "tests.image.cache.test_cache"}, suites
    assert {p["name"] for p in json.loads((cache_dir / "manifest.json").read_text())["packages"]} >= {"memcached"}
    tree = run_invoke("images", "--tree", env=env_for(shared))
    assert tree.returncode == 0 and "  cache (on base)" in tree.stdout and "[nightly]" in tree.stdout, tree.stdout
    assert "outdated" not in tree.stdout, tree.stdout


def test_bake_all_in_parallel_workers_skips_what_is_up_to_date(shared: dict[str, Path]) -> None:
    res = run_invoke("bake", "--all", "--jobs", "2", "--json", env=env_for(shared))
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert [(r["image"], r["state"]) for r in doc["images"]] == [
        ("base", "skipped"), ("cache", "skipped"), ("web", "skipped")] and doc["jobs"] == 2
    assert "[cache] " in res.stderr and "[web] " in res.stderr and "images: building" in res.stderr


def _fingerprints(project: Path, shared: dict[str, Path]) -> dict[str, str | None]:
    res = run_invoke("fingerprint", "--json", root=project, env=env_for(shared))
    assert res.returncode == 0, res.stderr[-2000:]
    return {r["image"]: r["up_to_date"] for r in json.loads(res.stdout)["images"]}


def test_what_a_change_rebuilds(shared: dict[str, Path], tmp_path: Path) -> None:
    """Against the family baked above: a leaf role's change makes only that leaf out of date;
    a change to the base role makes all three out of date (what `bake --all` then rebuilds)."""
    assert all(_fingerprints(ROOT, shared).values())
    leaf = copy_project(tmp_path / "leaf")
    (leaf / "roles/cache/defaults/main.yml").write_text(
        (leaf / "roles/cache/defaults/main.yml").read_text().replace("cache_memory_mb: 64", "cache_memory_mb: 96"))
    changed = _fingerprints(leaf, shared)
    assert changed["cache"] is None and changed["base"] and changed["web"], changed
    root = copy_project(tmp_path / "root")
    (root / "roles/base/defaults/main.yml").write_text(
        (root / "roles/base/defaults/main.yml").read_text().replace("base_journald_system_max_use: 200M",
                                                                      "base_journald_system_max_use: 300M"))
    assert _fingerprints(root, shared) == {"base": None, "cache": None, "web": None}
    explained = run_invoke("fingerprint", "--image", "web", "--against",
                           _image_id(env_for(shared), "web"), root=root, env=env_for(shared))
    assert "parent changed" in explained.stdout, explained.stdout


def test_nightly_with_nothing_changed_bakes_nothing(shared: dict[str, Path]) -> None:
    """`invoke nightly` on the family baked above, for real: every image's own packages against
    the Debian archive's indexes of its suites, every image's inputs against its newest image,
    gc, report."""
    res = run_invoke("nightly", "--json", env=env_for(shared))
    doc = json.loads(res.stdout)
    steps = {s["step"]: s["outcome"] for s in doc["steps"]}
    assert Path(doc["report"]["json"]).is_file() and Path(doc["report"]["markdown"]).is_file()
    checked = {i["image"]: (i["packages_checked"], len(i["indexes"])) for i in doc["drift"]["images"]}
    assert all(n > 100 and idx > 0 for n, idx in checked.values()), checked  # every image's own packages
    if doc["drift"]["drift"]:  # the archive published newer versions of the images' packages meanwhile: a rebuild
        assert all(i["reasons"] for i in doc["drift"]["images"] if i["drifted"]), doc["drift"]
        assert res.returncode == 0 and steps["bake"] == "done", doc["steps"]
        return
    assert res.returncode == 0, res.stderr[-3000:]
    assert {i["image"]: i["reasons"] for i in doc["drift"]["images"]} == {"base": [], "cache": [], "web": []}
    assert steps["bake"] == "skipped" and steps["promote"] == "skipped" and steps["gc"] == "done"
    assert "no drift" in Path(doc["report"]["markdown"]).read_text().lower()


def test_a_fresh_runner_on_shared_state_skips_the_baked_family(shared: dict[str, Path], tmp_path: Path,
                                                                moto_endpoint: str) -> None:
    """Moving in, for real: the family baked above pushed into a bucket on the moto server's
    S3 (images, channels and the base disk they were baked on); a fresh runner (empty home,
    empty base cache) bakes nothing -- every image is up to date by the bucket's records, the
    base's identity comes from its shared record, no disk is downloaded -- and its nightly
    plan rebuilds nothing the archive did not change."""
    import boto3

    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="team-state")
    project = copy_project(tmp_path / "project")
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + f"state: {{bucket: team-state, endpoint_url: '{moto_endpoint}'}}\n"
                        # the runner verifies the parents the family's machine signed: it trusts that key
                        f"trust: {{trusted_keys: ['{shared['home'] / 'keys' / 'local.ed25519.pub'}']}}\n")
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    push = run_invoke("store.push", "--json", root=project, env={**env_for(shared), **creds})
    assert push.returncode == 0, push.stderr[-3000:]
    pushed = json.loads(push.stdout)
    assert {i.split("-")[0] for i in pushed["images"]} >= {"base", "web", "cache"} and len(pushed["bases"]) == 1
    runner = tmp_path / "runner"
    env = {"GOLDENIMAGE_HOME": str(runner), "GOLDENIMAGE_BASE_CACHE": str(runner / "base"), **creds}
    res = run_invoke("bake", "--all", "--json", root=project, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [(r["image"], r["state"]) for r in json.loads(res.stdout)["images"]] == [
        ("base", "skipped"), ("cache", "skipped"), ("web", "skipped")]
    assert not [p for p in runner.rglob("*.qcow2")], "a skip downloaded a disk"
    plan = run_invoke("nightly", "--plan", "--json", root=project, env=env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    doc = json.loads(plan.stdout)
    assert all(i["drifted"] or not i["rebuild"] for i in doc["images"]), doc["images"]


def test_the_registry_site_of_the_baked_family(shared: dict[str, Path], tmp_path: Path) -> None:
    """`invoke site` from the real registry the tests above filled (three images, a channel,
    two nightly reports), opened in headless Chromium: every page reachable, the family drawn,
    the real bake's waterfall and validation on the image page; nightly wrote the site too."""
    from tests.browser import artifacts_dir, chromium, crawl

    nightly_site = shared["home"] / "store" / "site" / "local" / "index.html"
    assert nightly_site.is_file(), "invoke nightly regenerates the site after each run"
    res = run_invoke("site", "--json", "--out", str(tmp_path / "site"), env=env_for(shared))
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    assert doc["nightly_runs"] >= 2 and doc["images"] >= 3
    web = _image_id(env_for(shared), "web")
    with chromium() as driver:
        pages = crawl(driver, tmp_path / "site" / "index.html")
        assert len(pages) == doc["pages"], sorted(pages)
        driver.get((tmp_path / "site" / "index.html").as_uri())
        drawn = " ".join(t.text for t in driver.find_elements("css selector", "svg text"))
        assert all(name in drawn for name in ("base", "web", "cache")), drawn
        page = next(p for u, p in pages.items() if u.endswith(f"/{web}.html"))["text"]
        assert "ansible: web : " in page and "Packer steps" in page, page[-3000:]
        assert "0 failed" in page and "packages installed (SBOM)" in page
        driver.get((tmp_path / "site" / "image" / f"{web}.html").as_uri())
        assert driver.save_screenshot(str(artifacts_dir() / "site-web-image.png"))


CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def runner_env(runner: Path) -> dict[str, str]:
    """A machine that has nothing but the bucket: its own empty home and base cache."""
    return {"GOLDENIMAGE_HOME": str(runner), "GOLDENIMAGE_BASE_CACHE": str(runner / "base"), **CREDS}


def test_a_new_image_with_a_vendored_role_that_reads_facts(shared: dict[str, Path], tmp_path: Path,
                                                           probe_repo: ProbeRepo, moto_server: str) -> None:
    """`invoke image.new` on the base baked above, plus a role installed from a local tarball
    through requirements.yml that includes OS-specific variables from facts (the pattern of
    popular Galaxy roles), and a role that installs a package from an apt repository it adds
    (the tests' own, on loopback): one real bake, checked by its suite, on another machine
    than the family's. The family's store is pushed into a bucket of the moto server's S3; a
    fresh runner (empty home and base cache) builds the child on the validated base it
    downloads from the bucket (digest checked), and registers it there, where a third machine
    sees it. The nightly test below republishes that package, on the same runner."""
    import boto3

    from tests.vendored import vendor

    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="osinfo-state")
    project = copy_project(tmp_path / "project")
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + f"state: {{bucket: osinfo-state, endpoint_url: '{moto_server}'}}\n")
    vendor(project, collection_version=None)  # a role only: base's inputs stay those of the family's base
    probe_repo.role(project)
    push = run_invoke("store.push", "--json", root=project, env={**env_for(shared), **CREDS})
    assert push.returncode == 0, push.stderr[-3000:]
    runner = tmp_path / "runner"
    # two machines, two keys: each trusts the other's attestations only because the settings
    # list both public keys (without them the runner refuses the base the family home signed)
    keys = run_invoke("keys.init", "--json", root=project, env=runner_env(runner))
    assert keys.returncode == 0, keys.stderr
    pubs = [shared["home"] / "keys" / "local.ed25519.pub", Path(json.loads(keys.stdout)["public_key_file"])]
    assert all(p.is_file() for p in pubs), pubs
    settings.write_text(settings.read_text() + f"trust: {{trusted_keys: {json.dumps([str(p) for p in pubs])}}}\n")
    made = run_invoke("image.new", "--image", "osinfo", root=project, env=runner_env(runner))
    assert made.returncode == 0, made.stderr
    play = project / "playbooks/osinfo.yml"
    play.write_text(play.read_text().replace("    - role: osinfo\n",
                                             "    - role: osvars\n    - role: probe\n    - role: osinfo\n"))
    suite = project / "tests/image/osinfo/test_osinfo.py"
    suite.write_text(suite.read_text() + (
        "\n\ndef test_the_vendored_role_chose_the_debian_variables(host: Any) -> None:\n"
        "    assert host.file('/etc/osvars.conf').content_string == 'family=Debian packager=apt\\n'\n"
        "\n\ndef test_the_probe_package_is_installed(host: Any) -> None:\n"
        f"    assert host.package('{PROBE}').is_installed\n"))
    res = run_invoke("bake", "--image", "osinfo", "--json", root=project, env=runner_env(runner))
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["status"] == "validated" and doc["parents"][0]["skipped"], doc.get("parents")
    parent = doc["parents"][0]["image_id"]
    assert f"parent {parent}: attestation verified" in res.stderr  # signed on the family's machine
    downloaded = runner / "store" / "images" / parent / "disk.qcow2"
    assert downloaded.is_file(), sorted(str(p) for p in runner.rglob("*.qcow2"))
    family_copy = shared["home"] / "store" / "images" / parent / "disk.qcow2"
    assert sha256_file(downloaded) == sha256_file(family_copy)
    seen = run_invoke("images", "--image", "osinfo", "--json", root=project, env=runner_env(tmp_path / "third"))
    assert [i["id"] for i in json.loads(seen.stdout)["images"]] == [doc["image_id"]], seen.stdout + seen.stderr
    manifest = json.loads((Path(doc["artifact"]).parent / "manifest.json").read_text())
    assert [(r["name"], bool(r["files_sha256"])) for r in manifest["requirements"]] == [("osvars", True)]
    assert "requirement:role:osvars" in manifest["fingerprint_inputs"]
    gathered = [t["seconds"] for t in manifest["timings"]["ansible_tasks"] if t["task"] == "Gathering Facts"]
    print(f"gather_subset min under this accelerator: {gathered} s")  # the figure the README quotes
    assert gathered, manifest["timings"]["ansible_tasks"][:3]
    assert {"name": PROBE, "version": "1.0", "arch": "all", "source": PROBE} in manifest["packages"]
    assert {"uri": probe_repo.guest_url, "suite": "e2e-security", "component": "main"} in manifest["apt_sources"]
    shared["osinfo"], shared["osinfo_runner"] = project, runner


def test_nightly_rebuilds_the_image_whose_role_package_got_a_security_fix(shared: dict[str, Path],
                                                                         probe_repo: ProbeRepo) -> None:
    """The repository above publishes goldenimage-probe 1.1 in its security suite, a package
    osinfo's role installed and the base does not hold. `nightly --plan` names the image, the
    package, both versions and the security suite, and bakes nothing; `nightly --image osinfo`
    (the form the shipped workflow runs) rebuilds osinfo on its base, and the validated new
    image's SBOM and the report's package differences hold 1.1. On the runner of the test
    above, whose registry is the bucket."""
    if "osinfo" not in shared:
        pytest.skip("needs the osinfo image of the test above")
    project, env = shared["osinfo"], runner_env(shared["osinfo_runner"])
    before = _image_id(env, "osinfo", project)
    probe_repo.publish("1.1")
    plan = run_invoke("nightly", "--plan", "--image", "osinfo", "--json", root=project, env=env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    planned = {i["image"]: i for i in json.loads(plan.stdout)["images"]}
    reason = f"osinfo: {PROBE} 1.0 installed, 1.1 in e2e-security (security fix)"
    assert planned["osinfo"]["rebuild"] and planned["osinfo"]["drifted"], planned["osinfo"]
    assert reason in planned["osinfo"]["reasons"], planned["osinfo"]["reasons"]
    assert f"{probe_repo.guest_url} e2e-security/main" in planned["osinfo"]["indexes"]
    assert _image_id(env, "osinfo", project) == before, "a plan baked"

    res = run_invoke("nightly", "--image", "osinfo", "--json", root=project, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    drifted = {i["image"]: i for i in doc["drift"]["images"]}
    assert reason in drifted["osinfo"]["reasons"], drifted["osinfo"]
    after = _image_id(env, "osinfo", project)
    assert after != before
    rebuilt = next(i for i in doc["images"] if i["image"] == "osinfo")
    assert rebuilt["image_id"] == after and rebuilt["validation"]["status"] == "validated", rebuilt
    assert [c["kind"] for c in rebuilt["packages"]["changes"] if c["name"] == PROBE] == ["upgraded"], rebuilt["packages"]
    if not drifted["base"]["drift"]:  # (the Debian archive itself may have moved base meanwhile)
        assert [i["image"] for i in doc["images"] if i["state"] == "built"] == ["osinfo"], doc["images"]
    listed = json.loads(run_invoke("images", "--image-id", after, "--json", root=project, env=env).stdout)
    assert {"name": PROBE, "version": "1.1", "arch": "all", "source": PROBE} in listed["manifest"]["packages"]
    assert reason in Path(doc["report"]["markdown"]).read_text()


def _image_id(env: dict[str, str], name: str, root: Path = ROOT) -> str:
    listed = json.loads(run_invoke("images", "--json", "--image", name, root=root, env=env).stdout)
    return str(listed["images"][-1]["id"])


def _small_project(tmp_path: Path, playbook: str) -> Path:
    """A copy whose web image runs `playbook` on the base disk itself (no parent to bake)."""
    project = copy_project(tmp_path / "project")
    (project / "playbooks" / "web.yml").write_text(playbook)
    settings = project / "inventories/local/goldenimage.yml"
    text = settings.read_text()
    assert "    parent: base          #" in text
    settings.write_text(text.replace("    parent: base          #", "    #", 1))
    return project


def test_failing_ansible_task_names_task_and_host(shared: dict[str, Path], tmp_path: Path) -> None:
    project = _small_project(tmp_path, (
        "- name: Broken image\n  hosts: all\n  become: true\n  tasks:\n"
        "    - name: Fail on purpose\n      ansible.builtin.command: /bin/false\n      changed_when: false\n"
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
    # an image without the web role: it boots, but the image suite must fail (no nginx), and
    # it cannot meet a hardening index of 100 (the compliance gate fails it as well)
    project = _small_project(tmp_path, (
        "- name: Image without nginx\n  hosts: all\n  become: true\n  roles:\n    - hygiene\n"
    ))
    settings = project / "inventories/local/goldenimage.yml"
    text = settings.read_text()
    assert "    compliance: *compliance\n" in text  # web's: the first image with the alias
    settings.write_text(text.replace(
        "    compliance: *compliance\n", "    compliance: {groups: [ssh], min_score: 100, must_pass: [SSH-7402]}\n", 1))
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
    audit = manifest["compliance"]
    assert audit["ok"] is False and audit["groups"] == ["ssh"] and isinstance(audit["score"], int)
    assert audit["failures"] == [f"compliance: lynis hardening index {audit['score']} is under the minimum 100"]
    assert audit["failures"][0] in doc["failures"] and audit["failures"][0] in res.stderr
    assert sha256_file(qdir / audit["report"]) == audit["report_sha256"]  # the report is kept
    listed = json.loads(run_invoke("images", "--json", root=project, env=env_for(shared, home)).stdout)
    assert [i["status"] for i in listed["images"]] == ["quarantined"]

"""`invoke nightly` with real parts: the drift check against an apt archive served over HTTP
from a directory; a second run as a real second process while the first holds the lock; and
the sandbox (moto server) for promotion, a dev-group rotation and gc -- with a stand-in for
the bake step only (it registers an AMI instead of baking one)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage import drift, nightly, sandbox
from goldenimage.adapters import archive
from goldenimage.aws.context import clients_for, registry_for
from goldenimage.errors import OperationFailed
from goldenimage.models import ImageRecord
from goldenimage.progress import Reporter
from goldenimage.settings import Environment, load_environment
from tests.conftest import copy_project, run_invoke
from tests.debarchive import BASE_PACKAGES, served, write_suite
from tests.integration.conftest import MotoAws, sign_registered

pytestmark = pytest.mark.integration

OLD_DATE = "Sat, 28 Nov 2026 08:00:00 UTC"
NEW_DATE = "Mon, 30 Nov 2026 08:00:00 UTC"


def record(url: str) -> dict[str, Any]:
    sources = [drift.Source(url, "bookworm"), drift.Source(url, "bookworm-security")]
    return {"sources": [s.as_dict() for s in sources], "arch": "amd64",
            "releases": [r.as_dict() for r in archive.releases(sources)],
            "installed": [drift.Installed(*p).as_dict() for p in BASE_PACKAGES]}


def test_drift_against_an_archive_served_over_http(tmp_path: Path) -> None:
    write_suite(tmp_path, "bookworm", BASE_PACKAGES, OLD_DATE, inrelease=True, compress="xz")
    write_suite(tmp_path, "bookworm-security", BASE_PACKAGES[:2], OLD_DATE, compress="gz")
    with served(tmp_path) as url:
        rec = record(url)
        same = archive.check(rec)
        assert not same.verdict.drift and not same.indexes_read  # Release files only

        # the security suite publishes openssl 3.0.15: newer than the recorded 3.0.14
        newer = [("openssl", "3.0.15-1~deb12u1", "amd64", "openssl"), BASE_PACKAGES[1]]
        write_suite(tmp_path, "bookworm-security", newer, NEW_DATE)
        moved = archive.check(rec)
        assert moved.verdict.drift and moved.indexes_read
        assert moved.verdict.reason == "archive bookworm-security has newer openssl 3.0.15-1~deb12u1 > 3.0.14-1~deb12u2"
        assert moved.verdict.changed_releases == ["bookworm-security"]
        assert ("openssl", "3.0.15-1~deb12u1") in moved.security

        # an older version in a newer index is no drift
        write_suite(tmp_path, "bookworm-security", [("openssl", "3.0.13-1~deb12u1", "amd64", "openssl")], NEW_DATE)
        assert not archive.check(rec).verdict.drift

        with pytest.raises(OperationFailed, match="has neither InRelease nor Release"):
            archive.check({**rec, "sources": [{"uri": url, "suite": "trixie"}]})


def test_a_second_run_exits_with_a_clear_lock_error(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "project")
    home = tmp_path / "home"
    holder = subprocess.Popen(  # the first run: a real process holding the environment's lock
        [sys.executable, "-c",
         "import sys, time; from goldenimage import nightly\n"
         "with nightly.run_lock('local'):\n    print('held', flush=True); time.sleep(60)\n"],
        env={"GOLDENIMAGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd() / "src")},
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        res = run_invoke("nightly", "--env", "local", root=root, home=home, timeout=120)
        assert time.monotonic() - started < 60  # it did not wait for the lock
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [f"error: another `invoke nightly --env local` is running (it holds "
                     f"{home.resolve()}/store/locks/nightly-local.lock); this run did nothing"]
    assert not (home / "store" / "reports").exists()


@pytest.fixture
def running(sandbox_project: Path) -> Any:
    settings = sandbox_project / "inventories" / "sandbox" / "goldenimage.yml"
    doc = yaml.safe_load(settings.read_text())
    doc["extra"]["retention"] = {"images": {"web": {"keep": 1, "min_age_days": 0, "deprecate_after": 0,
                                                    "disable_after": 7, "delete_after": 14}}}
    settings.write_text(yaml.safe_dump(doc))
    up = sandbox.sandbox_up("sandbox", Reporter(quiet=True))
    try:
        yield up
    finally:
        sandbox.sandbox_down("sandbox", Reporter(quiet=True))


def _ami(image_id: str, created: str) -> str:
    rec = ImageRecord(id=image_id, name="web", env="sandbox", fingerprint="sha256:" + image_id[-1] * 64,
                      created=created, status="validated", artifact=f"images/{image_id}/disk.qcow2")
    return sign_registered(registry_for("sandbox").put(rec, {"git_commit": "0123abc"}).id)


def test_sandbox_nightly_promotes_rotates_the_dev_group_and_collects(
    running: dict[str, Any], sandbox_project: Path, tmp_path: Path
) -> None:
    base = running["seed"]["images"]["web"]
    unused = _ami("web-20261127-0100-aaaa", "2026-11-27T01:00:00Z")  # pushed out by the new one: deprecated
    baked: list[str] = []

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        baked.append(_ami("web-20261130-0200-bbbb", "2026-11-30T02:00:00Z"))
        return {"env": env.name, "ok": True, "images": [
            {"image": "web", "state": "built", "image_id": baked[0], "status": "validated",
             "fingerprint": None, "previous_id": None, "error": None}]}

    settings = sandbox_project / "inventories" / "sandbox" / "goldenimage.yml"
    doc = yaml.safe_load(settings.read_text())
    doc["extra"]["nightly"]["gc"] = "apply"
    doc["images"] = {"web": {k: v for k, v in doc["images"]["web"].items() if k != "parent"}}  # web alone
    settings.write_text(yaml.safe_dump(doc))

    out = nightly.nightly("sandbox", Reporter(quiet=True), bake_images=bake, report_dir=str(tmp_path / "r"))
    assert out["exit_code"] == 0, out["steps"]
    assert {s["step"]: s["outcome"] for s in out["steps"]} == {
        "drift": "done", "bake": "done", "promote": "done", "rotate": "done", "gc": "done", "report": "done"}
    # the seeded image has no recorded inputs: that is the drift
    prev = out["drift"]["images"][0]["previous_id"]
    assert prev in (base, unused)
    assert out["drift"]["images"][0]["reasons"] == [f"previous image {prev} has no recorded inputs to compare"]
    assert out["promotions"][0]["image_id"] == baked[0] and out["promotions"][0]["channel"] == "nightly"
    assert registry_for("sandbox").channels("web")["nightly"] == baked[0]
    rot = out["rotation"][0]
    assert rot["group"] == "web" and rot["outcome"] == "done", rot
    clients = clients_for(load_environment("sandbox"))
    reservations = clients.ec2.describe_instances(Filters=[
        {"Name": "tag:aws:autoscaling:groupName", "Values": ["web"]},
        {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
    assert {i["ImageId"] for r in reservations for i in r["Instances"]} == {baked[0]}
    gc = out["gc"]
    assert gc["mode"] == "apply"
    assert {c["image_id"]: (c["action"], c.get("outcome")) for c in gc["changes"]} == {unused: ("deprecate", "done")}
    assert base not in {c["image_id"] for c in gc["changes"]}  # a channel (stable) points at it
    saved = json.loads(Path(out["report"]["json"]).read_text())
    assert saved["rotation"][0]["outcome"] == "done"
    md = Path(out["report"]["markdown"]).read_text()
    assert "| web | done |" in md and f"deprecate {unused} → done" in md


def test_aws_a_base_ami_filter_resolving_to_a_newer_ami_is_drift(moto_aws: MotoAws, tmp_path: Path) -> None:
    """target aws against the moto server: the previous image was built from the AMI the
    filter resolved to then; the vendor publishes a newer one -> drift naming both."""
    from goldenimage import commands
    from goldenimage import fingerprint as fp

    def settings(doc: dict[str, Any]) -> None:
        doc["extra"]["aws"]["base_ami"]["owners"] = ["123456789012"]  # moto's account
        doc["extra"]["nightly"] = {"gc": "off"}
        doc["images"] = {"web": {k: v for k, v in doc["images"]["web"].items() if k != "parent"}}  # on the base AMI

    moto_aws.settings(settings)
    root, vendor_ami = moto_aws.root, moto_aws.ami
    old = vendor_ami("debian-12-amd64-20261101-1")
    env = load_environment("aws", root)
    inputs = fp.collect(root, env, "web", commands.bake_extra(env, "web", Reporter(quiet=True)))
    assert fp.as_manifest(inputs)["base:image"] and any(i.detail == f"ami:us-east-1:{old}" for i in inputs)
    rec = ImageRecord(id="web-20261101-0100-cccc", name="web", env="aws", fingerprint=fp.compute(inputs),
                      created="2026-11-01T01:00:00Z", status="validated", artifact="")
    built = registry_for("aws").put(rec, {"base_ami": old, "fingerprint_inputs": fp.as_manifest(inputs),
                                          "ami_id": vendor_ami("goldenimage-web-1")})

    def skipped(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        return {"env": env.name, "ok": True, "images": [
            {"image": "web", "state": "skipped", "image_id": built.id, "status": "validated", "fingerprint": None,
             "previous_id": built.id, "error": None}]}

    same = nightly.nightly("aws", Reporter(quiet=True), bake_images=skipped, root=root)
    assert same["exit_code"] == 0 and not same["drift"]["drift"], same["drift"]
    assert same["drift"]["bases"] == []  # an AMI base has no archive record: its id is the input

    time.sleep(1.1)  # a later CreationDate (seconds)
    new = vendor_ami("debian-12-amd64-20261201-1")
    moved = nightly.nightly("aws", Reporter(quiet=True), bake_images=skipped, root=root)
    assert moved["drift"]["images"][0]["reasons"] == [f"base AMI filter now resolves to {new} (was {old})"]
    assert moved["exit_code"] == 0 and moved["summary"] == "drift found, but every image was already up to date"


def test_a_truncated_body_a_reset_and_a_503_are_retried_and_the_answer_is_the_good_one(tmp_path: Path) -> None:
    write_suite(tmp_path, "bookworm-security", BASE_PACKAGES, OLD_DATE, compress="gz")
    path = "/dists/bookworm-security/main/binary-amd64/Packages.gz"
    faults = {path: ["truncated", "reset", "503"]}
    slept: list[float] = []
    with served(tmp_path, faults) as url:
        data = archive.fetch(url + path, sleep=slept.append)
    assert data == (tmp_path / path.lstrip("/")).read_bytes() and faults[path] == []
    assert slept == [0.5, 1.0, 2.0]  # bounded, exponential


def test_an_archive_that_keeps_failing_is_one_error_naming_the_url(tmp_path: Path) -> None:
    write_suite(tmp_path, "bookworm-security", BASE_PACKAGES, OLD_DATE, compress="gz")
    path = "/dists/bookworm-security/main/binary-amd64/Packages.gz"
    with served(tmp_path, {path: ["always-503"]}) as url:
        with pytest.raises(OperationFailed) as err:
            archive.fetch(url + path, sleep=lambda s: None)
        assert err.value.message == f"archive: GET {url}{path}: HTTP 503 Service Unavailable (after 4 attempts)"
    with served(tmp_path, {path: ["truncated"] * 4}) as url2, pytest.raises(
            OperationFailed, match=r"truncated body: \d+ bytes read, \d+ more expected \(after 4"):
        archive.fetch(url2 + path, sleep=lambda s: None)


def _packages(n: int, nginx: str) -> list[dict[str, str]]:
    import hashlib  # names and versions as varied as a real list's: it does not compress to nothing

    def h(i: int, k: str) -> str:
        return hashlib.sha256(f"{k}{i}".encode()).hexdigest()

    pkgs = [{"name": f"lib{h(i, 'n')[:10]}", "version": f"{int(h(i, 'v')[:4], 16)}.{h(i, 'w')[:6]}-1+deb12u1",
             "arch": "amd64", "source": f"src{h(i // 3, 's')[:8]}"} for i in range(n)]
    return [*pkgs, {"name": "nginx", "version": nginx, "arch": "amd64", "source": "nginx"}]


def test_an_amis_sbom_is_kept_in_ssm_parts_and_the_report_lists_package_differences(
    running: dict[str, Any], sandbox_project: Path, tmp_path: Path
) -> None:
    settings = sandbox_project / "inventories" / "sandbox" / "goldenimage.yml"
    doc = yaml.safe_load(settings.read_text())
    doc["extra"]["nightly"]["gc"] = "off"
    doc["extra"]["nightly"]["rotate"] = []
    doc["images"] = {"web": {k: v for k, v in doc["images"]["web"].items() if k != "parent"}}
    settings.write_text(yaml.safe_dump(doc))
    reg = registry_for("sandbox")
    sources = [{"uri": "http://deb.debian.org/debian", "suite": "bookworm", "component": "main"}]

    def put(image_id: str, created: str, nginx: str) -> str:
        rec = ImageRecord(id=image_id, name="web", env="sandbox", fingerprint="sha256:" + image_id[-1] * 64,
                          created=created, status="validated", artifact=f"images/{image_id}/disk.qcow2")
        return reg.put(rec, {"packages": _packages(400, nginx), "apt_sources": sources}).id

    old = put("web-20261202-2300-aaaa", "2099-12-02T23:00:00Z", "1.22.1-9")
    manifest = reg.manifest(old)
    assert len(manifest["packages"]) == 401 and manifest["apt_sources"] == sources
    meta = manifest["sbom_parameters"]
    assert meta["parts"] >= 2 and meta["packages"] == 401
    clients = clients_for(load_environment("sandbox"))
    parts = [clients.ssm.get_parameter(Name=reg.sbom_parameter("web", old, n))["Parameter"]["Value"]
             for n in range(meta["parts"])]
    assert all(len(p) <= 4096 for p in parts)
    raw = json.loads(clients.ssm.get_parameter(Name=reg.manifest_parameter("web", old))["Parameter"]["Value"])
    assert "packages" not in raw and "_dropped" not in raw

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        new = put("web-20261202-2330-bbbb", "2099-12-02T23:30:00Z", "1.22.1-9+deb12u2")
        return {"env": env.name, "ok": True, "images": [
            {"image": "web", "state": "built", "image_id": new, "status": "validated",
             "fingerprint": None, "previous_id": None, "error": None}]}

    out = nightly.nightly("sandbox", Reporter(quiet=True), bake_images=bake, report_dir=str(tmp_path / "r"),
                          fetch=lambda url: (_ for _ in ()).throw(archive.Missing(url)))
    (img,) = out["images"]
    assert img["previous_id"] == old
    assert [(c["name"], c["kind"], c["old"], c["new"], c["source"]) for c in img["packages"]["changes"]] == [
        ("nginx", "upgraded", "1.22.1-9", "1.22.1-9+deb12u2", "nginx")]

    # a part that is not what the manifest names: the SBOM is not trusted
    clients.ssm.put_parameter(Name=reg.sbom_parameter("web", old, 0), Value="AAAA", Type="String", Overwrite=True)
    bad = reg.manifest(old)
    assert "packages" not in bad and bad["sbom_note"] == "SBOM parts do not match the sha256 the manifest records"


def test_invoke_nightly_plan_json_changes_nothing(tmp_path: Path) -> None:
    """The task's --plan flag: one JSON document, each image with its verdict, and nothing
    written under the home but the (released) run lock."""
    root = copy_project(tmp_path / "project")
    home = tmp_path / "home"
    res = run_invoke("nightly", "--plan", "--json", root=root, home=home, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["plan"] is True and doc["rebuild"] == ["base", "cache", "web"]
    assert [(i["image"], i["reasons"], i["packages_checked"]) for i in doc["images"]] == [
        ("base", ["no validated image yet"], 0), ("cache", ["no validated image yet"], 0),
        ("web", ["no validated image yet"], 0)]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) if home.exists() else []
    assert written in ([], ["store/locks/nightly-local.lock"])
    human = run_invoke("nightly", "--plan", root=root, home=home, timeout=300)
    assert human.returncode == 0 and "nightly --plan local: would rebuild base, cache, web" in human.stdout

"""Signed provenance on the local target, for real: Ed25519 keys made by `keys.init` (or by
the first signing), envelopes signed by the code a bake's register runs (`LocalTarget._sign`),
and refusals through the real command line (one line, exit 1)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from goldenimage import trust
from goldenimage.attestation import FILE
from goldenimage.errors import IntegrityError
from goldenimage.fsutil import sha256_file
from goldenimage.models import ImageRecord
from goldenimage.paths import store_dir
from goldenimage.progress import Reporter
from goldenimage.settings import load_environment
from goldenimage.targets.local import LocalTarget
from tests.conftest import copy_project, run_invoke

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(h))
    return h


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def set_trust(project: Path, text: str, env: str = "local") -> None:
    path = project / "inventories" / env / "goldenimage.yml"
    path.write_text(path.read_text() + "\ntrust:\n" + text)


def make_image(project: Path, image_id: str, name: str = "base", *, parent: ImageRecord | None = None,
               payload: bytes | None = None, sign: bool = True, env_name: str = "local",
               target_cls: type[LocalTarget] = LocalTarget, audit: dict[str, Any] | None = None,
               report: bytes | None = None) -> ImageRecord:
    """Register a validated image as a bake's `register` does, without a VM: its manifest,
    its junit report, (with `report`) the audit's report named by `audit`, and (with `sign`)
    the attestation `LocalTarget._sign` writes."""
    env = load_environment(env_name, project)
    target = target_cls(env)
    store = target.store
    rec = ImageRecord(id=image_id, name=name, env=env.name, fingerprint=hashlib.sha256(image_id.encode()).hexdigest(), created="2026-12-02T10:00:00Z",
                      status="validated", artifact="disk.qcow2",
                      extra={"parent": {"id": parent.id, "name": parent.name}} if parent else {})
    with store.workspace() as ws:
        img = ws / "image"
        img.mkdir()
        (img / "disk.qcow2").write_bytes(payload or f"qcow2 of {image_id}".encode())
        (img / "junit.xml").write_text("<testsuites/>")
        if report is not None and audit is not None:
            (img / audit["report"]).write_bytes(report)
            audit = {**audit, "report_sha256": hashlib.sha256(report).hexdigest()}
        manifest: dict[str, Any] = {
            "id": rec.id, "name": name, "env": env.name, "fingerprint": rec.fingerprint,
            "fingerprint_inputs": {"playbook": "sha256:" + "a" * 64, "tool:packer": "Packer v1.14.2"},
            "created": rec.created, "status": "validated", "artifact": "disk.qcow2",
            "artifact_sha256": sha256_file(img / "disk.qcow2"),
            "base": {"source": "parent" if parent else "mmdebstrap", "identity": "sha256:" + "b" * 64},
            **({"parent": {"id": parent.id, "name": parent.name}} if parent else {}),
            "tools": {"packer": "1.14.2", "ansible-core": "2.19.14", "qemu": "9.2", "goldenimage": "0.1.0"},
            "validation": {"status": "validated", "passed": 12, "failed": 0, "errors": 0, "skipped": 0,
                           "failures": [], "junit": "junit.xml"},
            **({"compliance": audit} if audit is not None else {}),
        }
        if sign:
            job = SimpleNamespace(image=SimpleNamespace(id=rec.id, name=name), parent=parent)
            target._sign(job, manifest, img, Reporter())  # type: ignore[arg-type]
        store.put(rec, manifest, img)
    return store.get(image_id)


def cli(project: Path, home: Path, *args: str) -> Any:
    return run_invoke(*args, root=project, home=home)


def refusal(res: Any) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_keys_init_makes_a_0600_key_outside_the_project_and_is_idempotent(project: Path, home: Path) -> None:
    res = cli(project, home, "keys.init", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    key = Path(doc["signing_key"])
    assert doc["created"] is True and key == home / "keys" / "local.ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "BEGIN PUBLIC KEY" in doc["public_key"] and Path(doc["public_key_file"]).is_file()
    again = json.loads(cli(project, home, "keys.init", "--json").stdout)
    assert again["created"] is False and again["keyid"] == doc["keyid"]


def test_a_signed_image_verifies_and_is_promoted(project: Path, home: Path) -> None:
    make_image(project, "base-1")
    assert (home / "keys" / "local.ed25519").is_file()  # the first signing made the key
    res = cli(project, home, "verify", "base-1", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["verified"] is True
    assert {c["what"] for c in doc["checks"]} >= {"signature", "subject digest", "image name", "environment",
                                                   "validation", "parent"}
    human = cli(project, home, "verify", "base-1")
    assert human.stdout.startswith("verified: base-1")
    only = cli(project, home, "validate", "--image-id", "base-1", "--verify-only")
    assert only.returncode == 0 and only.stdout.startswith("verified: base-1"), only.stderr
    res = cli(project, home, "promote", "--image-id", "base-1", "--channel", "stable", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["attestation"]["verified"] is True


def test_a_tampered_qcow2_is_refused(project: Path, home: Path) -> None:
    make_image(project, "base-1")
    disk = store_dir_of(home) / "images" / "base-1" / "disk.qcow2"
    disk.write_bytes(b"other bytes")
    line = refusal(cli(project, home, "promote", "--image-id", "base-1", "--channel", "stable"))
    assert "base-1" in line and "sha256" in line


def test_a_tampered_attestation_is_refused_even_with_unsigned_allow(project: Path, home: Path) -> None:
    set_trust(project, "  unsigned: allow\n")
    make_image(project, "base-1")
    path = store_dir_of(home) / "images" / "base-1" / FILE
    doc = json.loads(path.read_text())
    import base64

    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["predicate"]["runDetails"]["byproducts"][0]["annotations"]["failed"] = 0
    statement["subject"][0]["name"] = "base-1/other.qcow2"
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(doc))
    line = refusal(cli(project, home, "verify", "base-1"))
    assert line.startswith("error: image base-1 (base): attestation signature does not verify"), line
    assert refusal(cli(project, home, "promote", "--image-id", "base-1", "--channel", "stable")) == line


def test_a_key_not_trusted_is_refused(project: Path, home: Path, tmp_path: Path) -> None:
    make_image(project, "base-1")  # signed with the environment's default key
    from goldenimage.adapters import signing

    other = signing.create_key(tmp_path / "other.ed25519")
    set_trust(project, f"  trusted_keys: [{other}]\n")
    line = refusal(cli(project, home, "verify", "base-1"))
    assert "base-1" in line and "signed by a key not trusted" in line


def test_an_attestation_of_another_image_is_refused(project: Path, home: Path) -> None:
    make_image(project, "base-1")
    make_image(project, "base-2")
    images = store_dir_of(home) / "images"
    (images / "base-2" / FILE).write_bytes((images / "base-1" / FILE).read_bytes())
    line = refusal(cli(project, home, "verify", "base-2"))
    assert line.startswith("error: image base-2 (base): attestation subject digest does not match"), line


def test_a_missing_attestation_is_refused_with_a_trust_section_and_admitted_by_unsigned_allow(
        project: Path, home: Path) -> None:
    set_trust(project, "  unsigned: deny\n")
    make_image(project, "base-1", sign=False)
    line = refusal(cli(project, home, "promote", "--image-id", "base-1", "--channel", "stable"))
    assert line.startswith("error: image base-1 (base): no attestation in "), line
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text().replace("unsigned: deny", "unsigned: allow"))
    res = cli(project, home, "promote", "--image-id", "base-1", "--channel", "stable", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["attestation"] == {"verified": False, "admitted": "unsigned: allow"}


def test_an_environment_without_trust_is_strict(project: Path, home: Path) -> None:
    """The shipped settings have no `trust:` section: an image without an attestation is
    refused, one signed by this machine's own key verifies."""
    make_image(project, "base-1", sign=False)
    line = refusal(cli(project, home, "verify", "base-1"))
    assert line.startswith("error: image base-1 (base): no attestation in ") and "(trust.unsigned is deny)" in line
    make_image(project, "base-2")
    res = cli(project, home, "verify", "base-2")
    assert res.returncode == 0 and res.stdout.startswith("verified: base-2"), res.stderr


def test_bad_trust_settings_are_exit_2(project: Path, home: Path) -> None:
    set_trust(project, "  unsigned: maybe\n")
    res = cli(project, home, "verify", "base-1")
    assert res.returncode == 2 and "field trust.unsigned" in res.stderr, res.stderr


def test_a_child_is_baked_only_on_a_parent_whose_attestation_verifies(project: Path, home: Path) -> None:
    parent = make_image(project, "base-1")
    env = load_environment("local", project)
    target = LocalTarget(env)
    assert target.require_trusted(parent, Reporter(), "parent")["verified"] is True
    child = make_image(project, "web-1", "web", parent=parent)
    assert target.verify_image(child.id)["verified"] is True
    # the parent's envelope changes (re-signed: still valid, but not the one the child names)
    images = store_dir_of(home) / "images"
    (images / "base-1" / FILE).write_bytes((images / "base-1" / FILE).read_bytes() + b" ")
    line = refusal(cli(project, home, "verify", "web-1"))
    assert "attestation parent attestation does not match" in line, line
    (images / "base-1" / "disk.qcow2").write_bytes(b"tampered parent")
    with pytest.raises(IntegrityError, match="base-1"):
        target.resolve_base(Reporter(), parent)  # refused before its bytes are used


def test_a_child_bake_refuses_an_unsigned_parent_under_deny(project: Path, home: Path) -> None:
    set_trust(project, "  unsigned: deny\n")
    parent = make_image(project, "base-1", sign=False)
    target = LocalTarget(load_environment("local", project))
    with pytest.raises(trust.UntrustedImage, match=r"^image base-1 \(base\): no attestation"):
        target.resolve_base(Reporter(), parent)


def store_dir_of(home: Path) -> Path:
    old = os.environ.get("GOLDENIMAGE_HOME")
    os.environ["GOLDENIMAGE_HOME"] = str(home)
    try:
        return store_dir()
    finally:
        if old is not None:
            os.environ["GOLDENIMAGE_HOME"] = old


def _finished_build(target: LocalTarget, name: str, base: Any, parent: ImageRecord | None, payload: bytes) -> Any:
    """What a build and validation leave for `register` (without Packer or a VM): the qcow2,
    the junit report, a passing suite; `register` itself runs as in a bake."""
    import datetime as dt

    from goldenimage.adapters.testinfra import SuiteResult
    from goldenimage.build import NewImage
    from goldenimage.targets import Checked, Job

    ws = target.store.tmp_dir / f"ws-{name}"
    (ws / "image").mkdir(parents=True)
    (ws / "image" / "disk.qcow2").write_bytes(payload)
    (ws / "image" / "junit.xml").write_text("<testsuites/>")
    img = NewImage(name, hashlib.sha256(payload).hexdigest(), dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC))
    tools = SimpleNamespace(versions=lambda: {"packer": "1.14.2", "ansible-core": "2.19.14", "qemu": "9.2",
                                              "goldenimage": "0.1.0"})
    job = Job(target.env, img, [], base, tools, ws, artifacts={"packer_manifest": {}, "timings": {}},  # type: ignore[arg-type]
              parent=parent)
    suite = SuiteResult(passed=7, failed=0, errors=0, skipped=0, failures=[], junit=ws / "image" / "junit.xml")
    return job, Checked(True, [], {"suite": suite, "packages": [], "apt_sources": [], "compliance": _audit(True)})


def test_register_signs_and_a_child_registered_on_it_names_its_envelope(project: Path, home: Path) -> None:
    """The bake's own `register` (sign, then publish with the files) and `resolve_base` of a
    child (verify the parent, then its bytes), as `bake.run` calls them after a build."""
    from goldenimage.adapters.baseimage import BaseImage
    from goldenimage.targets import Base

    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text().replace("accelerator: auto", "accelerator: tcg"))
    target = LocalTarget(load_environment("local", project))
    disk = BaseImage(home / "base.qcow2", "d" * 64, "mmdebstrap:test")
    job, checked = _finished_build(target, "base", Base(disk.identity, {"disk": disk, "accelerator": "tcg"}),
                                   None, b"parent bytes")
    out = target.register(job, checked, Reporter(quiet=True))
    parent = target.store.get(out["image_id"])
    manifest = target.store.manifest(parent.id)
    assert manifest["attestation"]["file"] == FILE and manifest["validation"]["junit_sha256"]
    assert target.verify_image(parent.id)["verified"] is True
    assert manifest["compliance"]["ok"] is True
    assert any(c["what"] == "compliance" and c["ok"] for c in target.verify_image(parent.id)["checks"])

    base = target.resolve_base(Reporter(quiet=True), parent)  # verifies the parent first
    job, checked = _finished_build(target, "web", base, parent, b"child bytes")
    child = target.register(job, checked, Reporter(quiet=True))["image_id"]
    doc = target.verify_image(child)
    assert doc["verified"] is True
    assert any(c["what"] == "parent attestation" and manifest["attestation"]["sha256"] in c["detail"]
               for c in doc["checks"])


def test_an_attestation_is_published_with_the_images_blobs_and_verified_on_another_machine(
        project: Path, home: Path, tmp_path: Path, moto_endpoint: str) -> None:
    from goldenimage.state import BucketBackend

    from .test_state import BUCKET, s3_client

    s3 = s3_client(moto_endpoint, attempts=5)
    s3.create_bucket(Bucket=BUCKET)
    env = load_environment("local", project)
    a, b = LocalTarget(env), LocalTarget(env)
    a.store = shared_store(tmp_path / "a", BucketBackend(s3, BUCKET, "team/local"))
    b.store = shared_store(tmp_path / "b", BucketBackend(s3, BUCKET, "team/local"))
    with a.store.workspace() as ws:
        img = ws / "image"
        img.mkdir()
        (img / "disk.qcow2").write_bytes(b"shared bytes")
        rec = ImageRecord(id="base-1", name="base", env="local", fingerprint="f" * 64,
                          created="2026-12-02T10:00:00Z", status="validated", artifact="disk.qcow2")
        manifest: dict[str, Any] = {"id": rec.id, "name": "base", "env": "local", "fingerprint": rec.fingerprint,
                                    "created": rec.created, "status": "validated", "artifact": "disk.qcow2",
                                    "artifact_sha256": sha256_file(img / "disk.qcow2"),
                                    "validation": {"status": "validated", "passed": 3, "failed": 0, "errors": 0}}
        a._sign(SimpleNamespace(image=SimpleNamespace(id=rec.id, name="base"), parent=None),  # type: ignore[arg-type]
                manifest, img, Reporter(quiet=True))
        a.store.put(rec, manifest, img)
    assert FILE in s3_entry_files(b.store, rec.id)
    doc = b.verify_image(rec.id)  # machine b: the envelope downloaded, the qcow2 not (not needed yet)
    assert doc["verified"] is True
    assert (tmp_path / "b" / "images" / rec.id / FILE).is_file()
    assert not (tmp_path / "b" / "images" / rec.id / "disk.qcow2").exists()
    (tmp_path / "b" / "images" / rec.id / FILE).write_bytes(b"{}")  # a cached copy changed on b
    with pytest.raises(trust.UntrustedImage, match=r"base-1 .*unreadable"):
        b.verify_image(rec.id)


def shared_store(root: Path, backend: Any) -> Any:
    from goldenimage.store import LocalStore

    return LocalStore(root, backend)


def s3_entry_files(store: Any, image_id: str) -> dict[str, str]:
    files: dict[str, str] = store._read()["images"][image_id]["files"]
    return files


def test_a_quarantined_image_keeps_its_own_refusal_under_deny(project: Path, home: Path) -> None:
    from goldenimage.store import LocalStore

    set_trust(project, "  unsigned: deny\n")
    store = LocalStore(store_dir_of(home))
    with store.workspace() as ws:
        (ws / "image").mkdir()
        (ws / "image" / "disk.qcow2").write_bytes(b"q")
        rec = ImageRecord(id="base-9", name="base", env="local", fingerprint="f" * 64,
                          created="2026-12-02T10:00:00Z", status="quarantined", artifact="disk.qcow2")
        store.put(rec, {"id": rec.id, "name": "base", "env": "local", "fingerprint": rec.fingerprint,
                        "created": rec.created, "status": "quarantined", "artifact": "disk.qcow2"}, ws / "image")
    res = cli(project, home, "promote", "--image-id", "base-9", "--channel", "stable")
    assert res.returncode == 2 and "failed validation and can never be promoted" in res.stderr, res.stderr


def test_another_machines_key_is_as_good_as_unsigned_where_unsigned_is_allowed(project: Path, home: Path) -> None:
    """Shared state being moved over (`unsigned: allow`, no `trusted_keys`): each machine
    signs with its own default key. Here, an image another machine signed is admitted as
    unsigned (the policy admits those; a stranger's signature grants nothing more), and said
    so; under `unsigned: deny` it is refused naming the key."""
    set_trust(project, "  unsigned: allow\n")
    make_image(project, "base-1")  # signed by this home's default key
    key = home / "keys" / "local.ed25519"
    key.unlink()
    key.with_name(key.name + ".pub").unlink(missing_ok=True)
    res = cli(project, home, "verify", "base-1", "--json")  # a fresh runner: no key of its own yet
    assert res.returncode == 0 and json.loads(res.stdout)["verified"] is False, res.stderr
    assert cli(project, home, "keys.init").returncode == 0  # this machine now has another key
    res = cli(project, home, "verify", "base-1", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["verified"] is False and "signed by a key not trusted here" in json.dumps(doc["checks"])
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text().replace("unsigned: allow", "unsigned: deny"))
    line = refusal(cli(project, home, "verify", "base-1"))
    assert "signed by a key not trusted (" in line, line


def _audit(ok: bool) -> dict[str, Any]:
    return {"scanner": "lynis", "version": "3.0.8", "groups": ["ssh"], "score": 55, "min_score": 60,
            "must_pass": [], "ok": ok, "failures": [] if ok else ["compliance: lynis hardening index 55 is under "
                                                                   "the minimum 60"],
            "warnings": [], "suggestions": [{"test": "SSH-7408", "text": "Consider hardening", "details": "-"}],
            "report": "lynis-report.dat", "report_sha256": "e" * 64}


def test_the_audit_verdict_is_signed_and_a_failed_one_refused(project: Path, home: Path) -> None:
    """A validated image whose signed statement records a failed compliance audit (a store
    edited to say `validated`) is refused at verify and promote, one line naming the audit."""
    make_image(project, "base-1", audit=_audit(True))
    doc = json.loads(cli(project, home, "verify", "base-1", "--json").stdout)
    [check] = [c for c in doc["checks"] if c["what"] == "compliance"]
    assert check == {"what": "compliance", "ok": True, "detail": "lynis hardening index 55 (minimum 60): passed"}
    make_image(project, "base-2", audit=_audit(False))
    line = refusal(cli(project, home, "verify", "base-2"))
    assert line.startswith("error: image base-2 (base): attestation compliance"), line
    assert "lynis hardening index 55 (minimum 60): failed" in line
    assert refusal(cli(project, home, "promote", "--image-id", "base-2", "--channel", "stable")) == line


REPORT = b"report_version_major=1\nhardening_index=55\nsuggestion[]=SSH-7408|Consider hardening|-|-|\n"


def test_the_compliance_report_kept_is_the_one_attested(project: Path, home: Path) -> None:
    """Verification compares the report kept with the image with the digest the statement
    signs: an edited report is refused, one line naming it."""
    make_image(project, "base-1", audit=_audit(True), report=REPORT)
    doc = json.loads(cli(project, home, "verify", "base-1", "--json").stdout)
    [check] = [c for c in doc["checks"] if c["what"] == "compliance report"]
    assert check == {"what": "compliance report", "ok": True, "detail": f"sha256 {hashlib.sha256(REPORT).hexdigest()}"}
    kept = store_dir_of(home) / "images" / "base-1" / "lynis-report.dat"
    kept.write_bytes(REPORT.replace(b"=55", b"=95"))
    line = refusal(cli(project, home, "verify", "base-1"))
    assert line.startswith("error: image base-1 (base): attestation compliance report does not match: the report "
                           f"kept has sha256 {sha256_file(kept)}, the statement names "
                           f"{hashlib.sha256(REPORT).hexdigest()}"), line


def _readme_block(after: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("```sh\n", text.index(after)) + len("```sh\n")
    return text[start:text.index("```", start)]


@pytest.mark.parametrize("recipe", ["**Verifying a copied attestation without the toolkit.**",
                                    "**With openssl alone.**"])
def test_the_readme_recipes_verify_a_copied_attestation(project: Path, home: Path, tmp_path: Path,
                                                        recipe: str) -> None:
    """The README's commands, run as written in a directory holding only the copied files,
    accept the real envelope and refuse a tampered one."""
    import shutil
    import subprocess

    make_image(project, "base-1")
    here = tmp_path / "copied"
    here.mkdir()
    shutil.copy(store_dir_of(home) / "images" / "base-1" / FILE, here / FILE)
    shutil.copy(store_dir_of(home) / "images" / "base-1" / "disk.qcow2", here / "disk.qcow2")
    shutil.copy(home / "keys" / "local.ed25519.pub", here / "local.ed25519.pub")
    script = _readme_block(recipe)
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    ok = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=here, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    digest = sha256_file(here / "disk.qcow2")
    assert ok.stdout.count(digest) >= 2, ok.stdout  # the statement's digest, and sha256sum's
    doc = json.loads((here / FILE).read_text())
    doc["payload"] = doc["payload"][:-8] + ("A" * 8 if not doc["payload"].endswith("A" * 8) else "B" * 8)
    (here / FILE).write_text(json.dumps(doc))
    bad = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=here, capture_output=True, text=True, env=env)
    assert bad.returncode != 0, bad.stdout

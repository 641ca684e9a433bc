"""Image families around the pure core: parent settings, suites, `bake --all` options, the
artifact hash check, `images --tree`, `revoke --cascade` and the child's fingerprint."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from goldenimage import commands, family
from goldenimage import fingerprint as fp
from goldenimage.errors import ConfigError, IntegrityError, NotFoundError
from goldenimage.fsutil import sha256_file
from goldenimage.progress import Reporter
from goldenimage.settings import Environment, load_environment
from goldenimage.store import LocalStore
from tests.unit.fp_helpers import EXTRA, FILES, make_project, write

SETTINGS = "inventories/local/goldenimage.yml"
FAMILY = (
    "target: local\n"
    "images:\n"
    "  base:\n    playbook: playbooks/other.yml\n"
    "  web:\n    playbook: playbooks/web.yml\n    groups: [web]\n    parent: base\n"
    "  api:\n    playbook: playbooks/web.yml\n    parent: {image: web, channel: stable}\n"
)


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def fixed_extra(env: Environment, image: str, reporter: Reporter) -> dict[str, str]:
    return dict(EXTRA)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj", {**FILES, SETTINGS: FAMILY})


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def put(store: LocalStore, image_id: str, name: str, *, parent: str | None = None, created: str = "",
        fingerprint: str = "f" * 64, body: bytes = b"qcow") -> None:
    """A registered image whose manifest records its artifact's sha256 (as a bake writes it)."""
    files = store.root / "work" / image_id
    files.mkdir(parents=True)
    (files / "disk.qcow2").write_bytes(body)
    from goldenimage.models import ImageRecord

    ancestry = {"id": parent, "name": "base", "fingerprint": "e" * 64, "channel": None} if parent else None
    rec = ImageRecord(id=image_id, name=name, env="local", fingerprint=fingerprint,
                      created=created or f"2026-11-26T08:00:0{len(store.list())}Z", status="validated",
                      artifact="disk.qcow2", extra={"parent": ancestry} if ancestry else {})
    store.put(rec, {"id": image_id, "name": name, "env": "local", "fingerprint": fingerprint,
                    "created": rec.created, "artifact": "disk.qcow2",
                    "artifact_sha256": sha256_file(files / "disk.qcow2"),
                    **({"parent": ancestry} if ancestry else {})}, files)


# -- settings -------------------------------------------------------------------------------
def test_parents_from_the_settings(root: Path) -> None:
    env = load_environment("local", root)
    assert env.parents == {"base": None, "web": "base", "api": "web"}
    assert env.bake_parents == {"base": None, "web": "base", "api": None}  # api takes web's channel
    assert env.image("api").parent is not None and env.image("api").parent.channel == "stable"
    # a child is validated by the common checks, its ancestors' and its own (those that exist)
    for d in ("common", "base", "web", "api"):
        (root / "tests" / "image" / d).mkdir(parents=True)
    assert [p.name for p in env.suites("api")] == ["common", "base", "web", "api"]
    assert [p.name for p in env.suites("base")] == ["common", "base"]


@pytest.mark.parametrize(("images", "field", "fragment"), [
    ("  web:\n    playbook: playbooks/web.yml\n    parent: db\n",
     "images.web.parent.image", "unknown image 'db' (known: web)"),
    ("  web:\n    playbook: playbooks/web.yml\n    parent: web\n", "images.web.parent", "a parent cycle: web -> web"),
    ("  a:\n    playbook: playbooks/web.yml\n    parent: b\n  b:\n    playbook: playbooks/web.yml\n    parent: a\n",
     "images.a.parent", "a parent cycle: a -> b -> a"),
    ("  base:\n    playbook: playbooks/other.yml\n  web:\n    playbook: playbooks/web.yml\n"
     "    parent: {image: base, env: aws}\n",
     "images.web.parent.env", "parent 'base' of environment 'aws': a parent must be an image of this environment"),
    ("  base:\n    playbook: playbooks/other.yml\n  web:\n    playbook: playbooks/web.yml\n"
     "    parent: {image: base, channel: Stable}\n", "images.web.parent.channel", "channel 'Stable'"),
    ("  web:\n    playbook: playbooks/web.yml\n    parent: {name: base}\n", "images.web.parent.image", "Field required"),
])
def test_bad_parents_are_one_line_naming_file_and_field(root: Path, images: str, field: str, fragment: str) -> None:
    write(root, SETTINGS, "target: local\nimages:\n" + images)
    with pytest.raises(ConfigError) as err:
        load_environment("local", root)
    assert err.value.exit_code == 2
    assert err.value.message.startswith(f"{SETTINGS}: field {field}"), err.value.message
    assert fragment in err.value.message and "\n" not in err.value.message


# -- bake --all options ---------------------------------------------------------------------
@pytest.mark.parametrize(("jobs", "fragment"), [("0", "--jobs: must be at least 1 (got 0)"),
                                                ("-2", "at least 1"), ("two", "'two' is not a whole number")])
def test_bad_jobs(jobs: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        family.bake_cmd("local", None, True, jobs, False, quiet())


def test_image_lists(root: Path) -> None:
    env = load_environment("local", root)
    assert family.parse_images(env, "web, api", False) == ["web", "api"]
    assert family.parse_images(env, None, True) is None
    with pytest.raises(NotFoundError, match="unknown image 'db'"):
        family.parse_images(env, "web,db", False)
    with pytest.raises(ConfigError, match="--all and --image"):
        family.parse_images(env, "web", True)


def test_default_jobs_by_cores_and_memory(root: Path) -> None:
    env = load_environment("local", root)  # qemu: 2 cpus, 1024 MiB
    assert family.default_jobs(env, cores=2, mem_available_mib=20000) == 1
    assert family.default_jobs(env, cores=8, mem_available_mib=20000) == 4
    assert family.default_jobs(env, cores=8, mem_available_mib=3000) == 1
    assert family.default_jobs(env, cores=1, mem_available_mib=0) == 1


def test_result_exit_code_and_lines() -> None:
    rows = [{"image": "base", "state": "built", "image_id": "base-1", "status": "validated", "error": None},
            {"image": "web", "state": "failed", "image_id": None, "status": None, "error": "boom", "exit_code": 1},
            {"image": "api", "state": "blocked", "image_id": None, "status": None, "error": "parent web failed"}]
    doc: dict[str, Any] = {"ok": False, "images": rows, "jobs": 2, "seconds": 3.0}
    assert family.exit_code(doc) == 1
    assert family.exit_code({"ok": True, "images": rows[:1]}) == 0
    lines = family.human(doc)
    assert lines[1].split()[:3] == ["web", "failed", "-"] and "parent web failed" in lines[2]


# -- the artifact, byte for byte --------------------------------------------------------------
def test_a_changed_artifact_is_refused_and_marked(store: LocalStore) -> None:
    put(store, "base-1", "base", fingerprint="a" * 64)
    assert store.verified("base-1").name == "disk.qcow2"
    disk = store.image_dir("base-1") / "disk.qcow2"
    good = sha256_file(disk)
    disk.write_bytes(b"qcow but not the same")
    with pytest.raises(IntegrityError) as err:
        store.verified("base-1")
    msg = err.value.message
    assert "base-1" in msg and good in msg and sha256_file(disk) in msg and err.value.exit_code == 1
    # marked: never skipped to, built on or promoted again
    assert store.get("base-1").status == "corrupt"
    assert store.find_by_fingerprint("base", "a" * 64) is None
    with pytest.raises(ConfigError, match="base-1 is corrupt"):
        store.promote("base-1", "stable")
    with pytest.raises(IntegrityError, match="marked corrupt"):
        store.verified("base-1")


def test_promote_checks_the_bytes(store: LocalStore) -> None:
    put(store, "web-1", "web")
    (store.image_dir("web-1") / "disk.qcow2").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="web-1"):
        store.promote("web-1", "stable")
    assert store.channel_map() == {}


# -- images --tree, outdated, revoke --cascade ---------------------------------------------------
def test_tree_marks_outdated_children(root: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(store.root.parent))
    put(store, "base-1", "base")
    put(store, "web-1", "web", parent="base-1")
    result = commands.images("local", None, None, quiet(), root=root, tree=True)
    assert [(n["depth"], n["image"], n["images"]) for n in result["tree"]] == [
        (0, "base", ["base-1"]), (1, "web", ["web-1"]), (2, "api", [])]
    assert not any("outdated" in r for r in result["images"])
    put(store, "base-2", "base")
    result = commands.images("local", None, None, quiet(), root=root, tree=True)
    stale = {r["id"]: r.get("outdated") for r in result["images"]}
    assert stale["web-1"] == "outdated: parent base is now base-2 (built on base-1)"
    assert stale["base-2"] is None
    text = "\n".join(commands.human_images(result))
    assert "  web (on base)" in text and "web-1  validated  built on base-1  outdated" in text
    flat = "\n".join(commands.human_images(commands.images("local", "web", None, quiet(), root=root)))
    assert "outdated: parent base is now base-2" in flat


def test_revoke_lists_or_cascades_to_descendants(root: Path, store: LocalStore) -> None:
    put(store, "base-1", "base")
    put(store, "web-1", "web", parent="base-1")
    out = commands.revoke("local", "base-1", "CVE", quiet(), registry=store, root=root)
    assert out["descendants"] == ["web-1"] and "cascaded" not in out
    assert store.get("web-1").status == "validated"
    assert "built on it and still usable: web-1" in "\n".join(commands.human_revoke(out))

    put(store, "base-2", "base")
    put(store, "web-2", "web", parent="base-2")
    out = commands.revoke("local", "base-2", "CVE", quiet(), registry=store, root=root, cascade=True)
    assert [c["image_id"] for c in out["cascaded"]] == ["web-2"]
    assert store.get("web-2").status == "revoked"
    assert store.get("web-2").extra["revoked_reason"] == "parent base-2 revoked: CVE"
    assert "revoked web-2 (web) too" in "\n".join(commands.human_revoke(out))


# -- the child's fingerprint ------------------------------------------------------------------
def fingerprints(root: Path, store: LocalStore, **kw: Any) -> dict[str, dict[str, Any]]:
    res = commands.fingerprint_cmd("local", kw.pop("image", None), kw.pop("explain", False), kw.pop("against", None),
                                   quiet(), registry=store, root=root, resolve_extra=fixed_extra)
    return {row["image"]: row for row in res["images"]}


def test_a_new_parent_image_means_a_new_child(root: Path, store: LocalStore) -> None:
    before = fingerprints(root, store)
    assert before["web"]["up_to_date"] is None
    base_fp = before["base"]["fingerprint"]
    put(store, "base-1", "base", fingerprint=base_fp, body=b"base one")
    first = fingerprints(root, store)
    assert first["base"]["up_to_date"] == "base-1"
    assert first["web"]["fingerprint"] != before["web"]["fingerprint"]
    web_inputs = fp.as_manifest(fp.collect(root, load_environment("local", root), "web", {
        **EXTRA, "base:image": "sha256:" + sha256_file(store.image_dir("base-1") / "disk.qcow2"),
        "parent:image": "base-1", "parent:fingerprint": base_fp}))
    put(store, "web-1", "web", parent="base-1", fingerprint=first["web"]["fingerprint"])
    register_manifest(store, "web-1", web_inputs)
    assert fingerprints(root, store)["web"]["up_to_date"] == "web-1"

    # the same base inputs baked again (--force): a new parent image, so web is not up to date
    put(store, "base-2", "base", fingerprint=base_fp, body=b"base two")
    second = fingerprints(root, store, against="web-1")
    assert second["web"]["up_to_date"] is None
    assert second["web"]["against"]["reasons"] == ["parent changed", "base changed"]
    text = "\n".join(commands.human_fingerprint({"images": [second["web"]]}))
    assert "differ: parent changed, base changed" in text and "parent:image (now base-2)" in text
    explained = fingerprints(root, store, explain=True)["web"]
    assert explained["changed_since"]["image_id"] == "web-1"
    assert explained["changed_since"]["reasons"] == ["parent changed", "base changed"]
    assert "not up to date since web-1: parent changed, base changed" in "\n".join(
        commands.human_fingerprint({"images": [explained]}))


def register_manifest(store: LocalStore, image_id: str, inputs: dict[str, str]) -> None:
    path = store.image_dir(image_id) / "manifest.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "fingerprint_inputs": inputs}))


def test_reasons_in_words() -> None:
    assert fp.reasons({"changed": ["roles/web/tasks/main.yml", "tool:packer"], "added": [], "removed": []}) == [
        "tools changed", "roles changed"]
    assert fp.reasons({"changed": [], "added": [], "removed": []}) == []
    assert fp.reasons({"changed": ["ansible.cfg"]}) == ["other inputs changed"]


# -- the parent a bake takes --------------------------------------------------------------------
def test_the_parent_a_child_is_baked_on(root: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from goldenimage.bake import resolve_parent
    from goldenimage.targets.local import LocalTarget

    monkeypatch.setenv("GOLDENIMAGE_HOME", str(store.root.parent))
    target = LocalTarget(load_environment("local", root))
    assert resolve_parent(target, "base", {}) is None
    with pytest.raises(NotFoundError, match=r"field images\.web\.parent: parent 'base' has no validated image"):
        resolve_parent(target, "web", {})
    put(store, "base-1", "base")
    put(store, "base-2", "base")
    assert resolve_parent(target, "web", {}).id == "base-2"  # type: ignore[union-attr]
    assert resolve_parent(target, "web", {"base": "base-1"}).id == "base-1"  # type: ignore[union-attr]
    store.revoke("base-1", "CVE")
    with pytest.raises(ConfigError, match="parent image base-1 \\(base\\) is revoked"):
        resolve_parent(target, "web", {"base": "base-1"})
    # api takes its parent from web's stable channel
    with pytest.raises(NotFoundError, match=r"field images\.api\.parent\.channel: channel web/stable points at no image"):
        resolve_parent(target, "api", {})
    put(store, "web-1", "web", parent="base-2")
    store.promote("web-1", "stable")
    assert resolve_parent(target, "api", {"web": "web-other"}).id == "web-1"  # type: ignore[union-attr]


def test_a_bug_in_one_image_fails_that_image_only(root: Path, store: LocalStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`bake --all --jobs 1`: an exception that is not a GoldenImageError (a bug) in web's bake
    fails web, with the one-line internal error; base and api (its parent from a channel) go on."""
    monkeypatch.setenv("GOLDENIMAGE_ROOT", str(root))
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(store.root.parent))
    baked = []

    def fake_run(target: Any, name: str, force: bool, reporter: Reporter, parent_ids: Any = None) -> dict[str, Any]:
        baked.append(name)
        if name == "web":
            raise KeyError("no such key")
        return {"image": name, "image_id": f"{name}-1", "status": "validated", "fingerprint": "f" * 64,
                "skipped": False}

    monkeypatch.setattr(family, "run", fake_run)
    monkeypatch.setattr(family.preflight, "check", lambda *a, **k: None)  # the bakes are faked: nothing to lint
    out = io.StringIO()
    result = family.bake_all("local", None, 1, False, Reporter(out))
    rows = {r["image"]: r for r in result["images"]}
    assert sorted(baked) == ["api", "base", "web"]
    assert rows["web"]["state"] == "failed" and rows["web"]["error"] == "internal error: KeyError: 'no such key'"
    assert rows["base"]["state"] == rows["api"]["state"] == "built"
    assert result["ok"] is False and result["exit_code"] == 1
    assert "warning: web failed: internal error: KeyError" in out.getvalue()


def test_a_child_starts_from_its_parents_package_index_only_with_the_recorded_bytes(
        root: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The package index a parent's build kept (apt-state.tar) is handed to the child's build
    when its sha256 is the manifest's; otherwise it is not used (a warning) and the build
    updates the lists itself. A parent without one hands nothing."""
    from goldenimage.targets.local import APT_STATE, LocalTarget

    monkeypatch.setenv("GOLDENIMAGE_HOME", str(store.root.parent))
    put(store, "base-1", "base")
    put(store, "base-2", "base")
    index = store.image_dir("base-1") / APT_STATE
    index.write_bytes(b"var/lib/apt/lists ...")
    manifest_file = store.image_dir("base-1") / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["apt_state"] = {"file": APT_STATE, "sha256": sha256_file(index), "bytes": index.stat().st_size}
    manifest_file.write_text(json.dumps(manifest))
    target = LocalTarget(load_environment("local", root))
    out = io.StringIO()

    assert target._apt_state(store.get("base-1"), Reporter(out)) == index
    assert target._apt_state(store.get("base-2"), Reporter(out)) is None  # none kept
    index.write_bytes(b"var/lib/apt/lists, changed")
    assert target._apt_state(store.get("base-1"), Reporter(out)) is None
    assert f"base-1: its package index {APT_STATE} has sha256 {sha256_file(index)}" in out.getvalue()
    index.unlink()
    assert target._apt_state(store.get("base-1"), Reporter(out)) is None
    assert "has sha256 (missing)" in out.getvalue()

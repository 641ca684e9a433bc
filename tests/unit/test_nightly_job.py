"""The nightly job's orchestration on the local target: the real drift check (a cached base
disk whose archive record points at an apt archive in a directory, the real fingerprint of
a project copy against the newest validated image in a real local store), the real
promotion, gc and report -- and a stand-in for the bake step (`bake_images`), which here
registers a prepared image instead of booting VMs."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage import commands, nightly, nightly_report
from goldenimage import fingerprint as fp
from goldenimage.adapters import archive, baseimage
from goldenimage.drift import Installed
from goldenimage.errors import OperationFailed
from goldenimage.fsutil import sha256_file
from goldenimage.progress import Reporter
from goldenimage.settings import Environment, Settings, load_environment
from goldenimage.store import ImageRecord, LocalStore
from tests.conftest import copy_project
from tests.debarchive import BASE_PACKAGES, served, write_suite

DATE = "Sat, 28 Nov 2026 08:00:00 UTC"
SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
BakeImages = Callable[[str, int | None, Reporter], dict[str, Any]]


def quiet() -> Reporter:
    return Reporter(quiet=True)


def mmdebstrap_version() -> str:
    return subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]


class World:
    """A project copy, a home (store + base cache), an archive directory, one validated image
    per image name built from the cached base."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, images: tuple[str, ...] = ("web",)) -> None:
        self.root = copy_project(tmp / "project")
        self.home = tmp / "home"
        self.archive = tmp / "archive"
        monkeypatch.setenv("GOLDENIMAGE_HOME", str(self.home))
        monkeypatch.setenv("GOLDENIMAGE_ROOT", str(self.root))
        monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        monkeypatch.delenv("GOLDENIMAGE_BASE_CACHE", raising=False)
        for suite in SUITES:
            write_suite(self.archive, suite, BASE_PACKAGES if suite != "bookworm-updates" else [], DATE)
        self.settings_file = self.root / "inventories" / "local" / "goldenimage.yml"
        doc = yaml.safe_load(self.settings_file.read_text())
        doc["base"].update(mirror=f"file://{self.archive}", security_mirror=f"file://{self.archive}")
        # images without parents: the stand-in bake registers each image on its own
        doc["images"] = {name: {"playbook": "playbooks/web.yml", "groups": ["web"]} for name in images}
        doc["extra"]["retention"]["images"] = {name: doc["extra"]["retention"]["images"]["web"] for name in images}
        doc["trust"] = {"unsigned": "allow"}  # the stand-in bake registers images without an attestation
        self.settings_file.write_text(yaml.safe_dump(doc))
        self.nightly(gc="plan")
        self.env = load_environment("local", self.root)
        spec = self.env.settings.base
        self.key = baseimage.recipe_key(spec, mmdebstrap_version())
        self.base_dir = self.home / "base" / self.key
        self.base_dir.mkdir(parents=True)
        (self.base_dir / "base.qcow2").write_bytes(b"a stand-in base disk")
        sources = baseimage.archive_sources(spec)
        (self.base_dir / "base.json").write_text(json.dumps({
            "sha256": sha256_file(self.base_dir / "base.qcow2"), "recipe": self.key,
            "archive": {"sources": [s.as_dict() for s in sources],
                        "releases": [r.as_dict() for r in archive.releases(sources)], "arch": "amd64",
                        "installed": [Installed(*p).as_dict() for p in BASE_PACKAGES]}}))
        self.store = LocalStore(self.home / "store")
        # what the bake resolves (base identity, tool versions), once: a stale base would be rebuilt
        self.extra = commands.bake_extra(self.env, images[0], quiet())
        for n, name in enumerate(images, 1):
            self.register(f"{name}-{n}", name, created=f"2026-11-2{n}T00:00:00Z")

    def nightly(self, **section: Any) -> None:
        doc = yaml.safe_load(self.settings_file.read_text())
        doc.setdefault("extra", {})["nightly"] = section
        self.settings_file.write_text(yaml.safe_dump(doc))

    def inputs(self, name: str) -> list[fp.FingerprintInput]:
        return fp.collect(self.root, load_environment("local", self.root), name, self.extra)

    def register(self, image_id: str, name: str = "web", *, created: str = "2026-11-29T00:00:00Z",
                 packages: list[tuple[str, str, str]] | None = None, status: str = "validated",
                 apt_sources: list[str] | None = None, base_source: str | None = None) -> None:
        inputs = self.inputs(name)
        pkgs = packages if packages is not None else [(n, v, a) for n, v, a, _ in BASE_PACKAGES]
        with self.store.workspace() as ws:
            (ws / "image").mkdir()
            (ws / "image" / "disk.qcow2").write_bytes(b"qcow2 " + image_id.encode())
            rec = ImageRecord(id=image_id, name=name, env="local", fingerprint=fp.compute(inputs),
                              created=created, status=status, artifact="disk.qcow2")
            self.store.put(rec, {
                "id": image_id, "name": name, "env": "local", "fingerprint": rec.fingerprint, "created": created,
                "fingerprint_inputs": fp.as_manifest(inputs), "status": status, "artifact": "disk.qcow2",
                "base": {"source": base_source or f"mmdebstrap:{self.key}", "identity": "sha256:x"},
                "packages": [{"name": n, "version": v, "arch": a} for n, v, a in pkgs],
                **({"apt_sources": [{"uri": u, "suite": sx} for u in apt_sources for sx in SUITES]}
                   if apt_sources else {}),
                "validation": {"status": status, "passed": 30 if status == "validated" else 29,
                               "failed": 0 if status == "validated" else 1, "errors": 0,
                               "failures": [] if status == "validated" else ["test_nginx_serves"]},
            }, ws / "image")

    def run(self, bake: BakeImages, **kw: Any) -> dict[str, Any]:
        return nightly.nightly("local", quiet(), root=self.root, bake_images=bake, **kw)


def no_bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
    raise AssertionError("nothing drifted: the bake must not run")


def steps(doc: dict[str, Any]) -> dict[str, str]:
    return {s["step"]: s["outcome"] for s in doc["steps"]}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


def test_unchanged_inputs_no_bake_and_the_report_says_so(world: World) -> None:
    doc = world.run(no_bake)
    assert doc["exit_code"] == 0 and doc["ok"]
    assert steps(doc) == {"drift": "done", "bake": "skipped", "promote": "skipped", "rotate": "skipped",
                          "gc": "done", "report": "done"}
    assert doc["drift"]["bases"] == []
    (web,) = doc["drift"]["images"]
    assert {k: web[k] for k in ("image", "previous_id", "drift", "drifted", "state", "reasons", "packages_checked")} \
        == {"image": "web", "previous_id": "web-1", "drift": False, "drifted": False, "state": "current",
            "reasons": [], "packages_checked": len(BASE_PACKAGES)}
    assert web["indexes"] == [f"file://{world.archive} {s}/main" for s in SUITES]
    assert doc["drift"]["archive"]["bytes_read"] > 0 and doc["drift"]["archive"]["errors"] == []
    assert doc["summary"].startswith("no drift")
    saved = json.loads(Path(doc["report"]["json"]).read_text())
    assert saved["summary"] == doc["summary"] and saved["exit_code"] == 0
    md = Path(doc["report"]["markdown"]).read_text()
    assert "no drift: nothing changed since the last validated images, nothing baked" in md
    assert Path(doc["report"]["json"]).parent == world.home / "store" / "reports" / "nightly" / "local"
    assert baseimage.stale_reason(world.base_dir) is None
    lines = nightly.human_nightly(doc)
    assert lines[0] == "nightly local: no drift: nothing changed since the last validated images, nothing baked"
    assert any(ln.split()[:2] == ["bake", "skipped"] and ln.endswith("no drift: nothing to bake") for ln in lines)
    assert lines[-3] == f"report: {doc['report']['json']}"
    assert doc["site"] == {"outcome": "written", "index": str(world.home / "store" / "site" / "local" / "index.html")}
    assert lines[-1] == f"site:   {doc['site']['index']}"


def test_a_changed_role_file_bakes_promotes_and_reports_inputs_and_packages(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    role = world.root / "roles" / "web" / "tasks" / "main.yml"
    role.write_text(role.read_text() + "\n# a change\n")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        assert (env.name, jobs) == ("local", 2)
        pkgs = [(n, v, a) for n, v, a, _ in BASE_PACKAGES if n != "sudo"] + [("nginx", "1.22.1-9", "amd64")]
        world.register("web-2", packages=pkgs)
        return {"env": env.name, "ok": True, "images": [
            {"image": "web", "state": "built", "image_id": "web-2", "status": "validated",
             "fingerprint": world.store.get("web-2").fingerprint, "previous_id": None, "error": None}]}

    doc = world.run(bake, jobs=2, report_dir=str(tmp_path / "reports"))
    assert doc["exit_code"] == 0, doc["steps"]
    assert doc["drift"]["images"][0]["reasons"] == ["inputs changed: roles/web/tasks/main.yml"]
    assert doc["promotions"] == [{"image": "web", "image_id": "web-2", "channel": "nightly", "outcome": "done",
                                  "previous": None, "changed": True}]
    assert world.store.channel_map("web")["web"]["nightly"] == "web-2"
    img = doc["images"][0]
    assert img["previous_id"] == "web-1" and img["inputs_changed"] == ["inputs changed: roles/web/tasks/main.yml"]
    assert img["validation"] == {"status": "validated", "passed": 30, "failed": 0, "errors": 0, "failures": []}
    assert img["packages"]["counts"] == {"added": 1, "removed": 1, "upgraded": 0, "downgraded": 0}
    assert [c["name"] for c in img["packages"]["changes"]] == ["nginx", "sudo"]
    assert Path(doc["report"]["json"]).parent == tmp_path / "reports"
    md = summary.read_text()
    assert "inputs changed: roles/web/tasks/main.yml" in md and "| nginx | nginx | added |" in md

    # the registry site is regenerated with this run: its report, and web-2's package differences
    site_dir = Path(doc["site"]["index"]).parent
    assert "nightly/" + Path(doc["report"]["json"]).name in (site_dir / "nightly.html").read_text()
    assert (site_dir / "nightly" / Path(doc["report"]["markdown"]).name).is_file()
    web2 = (site_dir / "image" / "web-2.html").read_text()
    assert "<td>nginx</td><td>added</td>" in web2 and "<td>sudo</td><td>removed</td>" in web2


def test_a_run_parses_the_settings_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drift, fingerprint, bake, promote, gc, report and site of one run share the
    environment nightly parsed: the settings file is validated once, not once per command."""
    role = world.root / "roles" / "web" / "tasks" / "main.yml"
    role.write_text(role.read_text() + "\n# a change\n")
    parsed: list[object] = []
    real = Settings.model_validate.__func__  # type: ignore[attr-defined]
    standing_in = False  # the stand-in bake's own registration reads the settings: not the run's

    def counting(cls: type[Settings], obj: Any, *args: Any, **kw: Any) -> Settings:
        if not standing_in:
            parsed.append(obj)
        return real(cls, obj, *args, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Settings, "model_validate", classmethod(counting))

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        nonlocal standing_in
        assert isinstance(env, Environment) and env.name == "local"
        standing_in = True
        world.register("web-2")
        standing_in = False
        return {"env": env.name, "ok": True, "images": [
            {"image": "web", "state": "built", "image_id": "web-2", "status": "validated",
             "fingerprint": world.store.get("web-2").fingerprint, "previous_id": None, "error": None}]}

    doc = world.run(bake)
    assert doc["exit_code"] == 0 and [p["outcome"] for p in doc["promotions"]] == ["done"], doc["steps"]
    assert {s["step"] for s in doc["steps"]} >= {"drift", "bake", "promote", "gc", "report"}
    assert len(parsed) == 1, f"the settings were parsed {len(parsed)} times in one run"


def test_a_drifted_base_marks_it_stale_and_every_image_drifts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, images=("web", "api"))
    newer = [(n, "3.0.15-1~deb12u1" if n in ("openssl", "libssl3") else v, a, s) for n, v, a, s in BASE_PACKAGES]
    write_suite(world.archive, "bookworm-security", newer, "Sun, 29 Nov 2026 08:00:00 UTC", compress="xz")

    forced: list[Any] = []

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None,
             force: list[str] | None = None) -> dict[str, Any]:
        # the bake would rebuild the stale base first: every fingerprint changes
        assert baseimage.stale_reason(world.base_dir) is not None
        forced.append(force)
        rows = []
        for n, name in enumerate(("api", "web"), 3):
            world.register(f"{name}-{n}", name, packages=[(p, v, a) for p, v, a, _ in newer])
            rows.append({"image": name, "state": "built", "image_id": f"{name}-{n}", "status": "validated",
                         "fingerprint": None, "previous_id": None, "error": None})
        return {"env": env.name, "ok": True, "images": rows}

    doc = world.run(bake)
    assert doc["exit_code"] == 0, doc["steps"]
    base = doc["drift"]["bases"][0]
    assert base["drift"] and [n["name"] for n in base["newer"]] == ["libssl3", "openssl"]
    assert base["reason"] == ("archive bookworm-security has newer libssl3 3.0.15-1~deb12u1 > 3.0.14-1~deb12u2, "
                              "+1 more")
    assert [(i["image"], i["drift"], i["drifted"]) for i in doc["drift"]["images"]] == [
        ("api", True, True), ("web", True, True)]
    for i in doc["drift"]["images"]:
        assert i["reasons"][:2] == [
            f"{i['image']}: libssl3 3.0.14-1~deb12u2 installed, 3.0.15-1~deb12u1 in bookworm-security (security fix)",
            f"{i['image']}: openssl 3.0.14-1~deb12u2 installed, 3.0.15-1~deb12u1 in bookworm-security (security fix)"]
        assert i["reasons"][2].startswith(f"base mmdebstrap:{world.key}: archive bookworm-security")
    assert forced == [["api", "web"]]
    assert baseimage.stale_reason(world.base_dir) == base["reason"]
    web = next(i for i in doc["images"] if i["image"] == "web")
    changes = web["packages"]["by_source"]["openssl"]
    assert [(c["name"], c["kind"], c["old"], c["new"], c["security"]) for c in changes] == [
        ("libssl3", "upgraded", "3.0.14-1~deb12u2", "3.0.15-1~deb12u1", True),
        ("openssl", "upgraded", "3.0.14-1~deb12u2", "3.0.15-1~deb12u1", True)]
    assert sorted(p["image_id"] for p in doc["promotions"]) == ["api-3", "web-4"]
    # the stale base is what the next bake rebuilds (same recipe key, new content)
    assert "(security)" in Path(doc["report"]["markdown"]).read_text()


def test_a_moved_archive_with_nothing_newer_is_no_drift_and_nothing_is_recorded(world: World) -> None:
    before = (world.base_dir / "base.json").read_text()
    write_suite(world.archive, "bookworm", BASE_PACKAGES, "Sun, 29 Nov 2026 08:00:00 UTC", inrelease=True)
    doc = world.run(no_bake)
    assert doc["exit_code"] == 0 and not doc["drift"]["drift"] and doc["drift"]["images"][0]["state"] == "current"
    assert (world.base_dir / "base.json").read_text() == before  # no Release file recorded


def test_recorded_release_files_never_hide_an_older_package(world: World) -> None:
    """The old check recorded a moved archive's Release files when the base's packages were
    current, and from then on looked at nothing but those dates: an image whose packages
    are older is drift whatever the dates say, run after run, until its new image has them."""
    newer = [("sudo", "1.9.13p3-1+deb12u2", "amd64", "sudo")]
    write_suite(world.archive, "bookworm-security", newer, DATE)  # the same Date as recorded
    rec = json.loads((world.base_dir / "base.json").read_text())
    rec["archive"]["releases"] = [r.as_dict() for r in archive.releases(baseimage.archive_sources(world.env.settings.base))]
    (world.base_dir / "base.json").write_text(json.dumps(rec))
    for _ in range(2):
        plan = world.run(no_bake, plan=True)
        assert plan["rebuild"] == ["web"] and plan["images"][0]["reasons"][0] == (
            "web: sudo 1.9.13p3-1+deb12u1 installed, 1.9.13p3-1+deb12u2 in bookworm-security (security fix)")
    world.register("web-2", packages=[(n, "1.9.13p3-1+deb12u2" if n == "sudo" else v, a) for n, v, a, _ in BASE_PACKAGES])
    plan = world.run(no_bake, plan=True)
    assert plan["rebuild"] == [] and plan["images"][0]["state"] == "current"


def test_a_failed_bake_is_exit_1_no_promotion_and_the_report_is_written(world: World) -> None:
    role = world.root / "roles" / "web" / "tasks" / "main.yml"
    role.write_text(role.read_text() + "\n# broken\n")

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        world.register("web-2", status="quarantined")
        return {"env": env.name, "ok": False, "images": [
            {"image": "web", "state": "failed", "image_id": "web-2", "status": "quarantined", "fingerprint": None,
             "previous_id": "web-1", "error": "image web-2 failed validation (1 failing checks)"}]}

    doc = world.run(bake)
    assert doc["exit_code"] == 1 and not doc["ok"]
    assert steps(doc) == {"drift": "done", "bake": "failed", "promote": "skipped", "rotate": "skipped",
                          "gc": "done", "report": "done"}
    assert doc["promotions"] == [] and "nightly" not in world.store.channel_map("web").get("web", {})
    assert doc["images"][0]["validation"]["failures"] == ["test_nginx_serves"]
    saved = json.loads(Path(doc["report"]["json"]).read_text())
    assert saved["exit_code"] == 1 and saved["summary"] == "FAILED: bake (1 image(s) failed)"


def test_an_unreachable_archive_fails_the_drift_step_and_images_are_unknown(world: World) -> None:
    shutil.rmtree(world.archive)
    doc = world.run(no_bake)
    assert doc["exit_code"] == 1
    assert steps(doc)["drift"] == "failed" and steps(doc)["bake"] == "skipped"
    assert doc["drift"]["images"][0]["state"] == "unknown" and not doc["drift"]["images"][0]["drift"]
    assert nightly_report.headline({**doc, "steps": []}) == (
        "no drift found, but not known for web (see Drift): nothing baked")
    assert sorted(doc["drift"]["archive"]["errors"]) == sorted(
        f"archive: file://{world.archive}/dists/{s} has neither InRelease nor Release" for s in SUITES)
    assert Path(doc["report"]["json"]).is_file()


def test_a_webhook_that_is_down_changes_nothing_but_is_noted(world: World) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    world.nightly(gc="plan", webhook={"url": f"http://127.0.0.1:{port}/x", "attempts": 2, "backoff": 0.1,
                                      "timeout": 2})
    doc = world.run(no_bake)
    assert doc["exit_code"] == 0 and doc["ok"]
    assert doc["webhook"]["outcome"] == "failed" and doc["webhook"]["attempts"] == 2
    assert "refused" in doc["webhook"]["error"]
    assert json.loads(Path(doc["report"]["json"]).read_text())["webhook"]["outcome"] == "failed"
    assert "## Webhook" in Path(doc["report"]["markdown"]).read_text()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback: its URL, and the documents POSTed to it."""
    import http.server
    import threading

    got: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_that_answers_gets_the_report(world: World, webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, got = webhook
    doc = world.run(no_bake, webhook_url=url)
    assert doc["webhook"] == {"url": doc["webhook"]["url"], "outcome": "sent", "attempts": 1, "status": 204}
    assert got[0]["summary"] == doc["summary"] and got[0]["report"] == doc["report"]


def test_bad_options_are_exit_2(world: World) -> None:
    from goldenimage.errors import ConfigError

    with pytest.raises(ConfigError, match="--jobs: 0 must be at least 1"):
        world.run(no_bake, jobs=0)
    with pytest.raises(ConfigError, match="--webhook: 'ftp://x' is not an http"):
        world.run(no_bake, webhook_url="ftp://x")


def test_one_image_only_checks_and_bakes_that_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, images=("web", "api"))
    for name in ("web", "api"):
        role = world.root / "roles" / "web" / "tasks" / "main.yml"
        role.write_text(role.read_text() + f"\n# {name}\n")
    asked: list[Any] = []

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        asked.append(images)
        return {"env": env.name, "ok": True, "images": [
            {"image": "api", "state": "skipped", "image_id": "api-2", "status": "validated", "fingerprint": None,
             "previous_id": None, "error": None}]}

    doc = world.run(bake, images=["api"])
    assert asked == [["api"]] and [i["image"] for i in doc["drift"]["images"]] == ["api"]
    assert doc["images_selected"] == ["api"] and Path(doc["report"]["json"]).name.startswith("nightly-local-api-")
    assert steps(doc)["promote"] == "skipped"  # skipped by the bake: nothing new
    from goldenimage.errors import NotFoundError

    with pytest.raises(NotFoundError, match="unknown image 'db'"):
        world.run(bake, images=["db"])


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyboardInterrupt()])
def test_a_bug_or_an_interruption_in_a_step_still_writes_the_report(world: World, error: BaseException) -> None:
    role = world.root / "roles" / "web" / "tasks" / "main.yml"
    role.write_text(role.read_text() + "\n# a change\n")

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        raise error

    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            world.run(bake)
        reports = sorted((world.home / "store" / "reports" / "nightly" / "local").glob("*.json"))
        doc = json.loads(reports[-1].read_text())
        assert steps(doc) == {"drift": "done", "bake": "failed", "report": "done"}
        assert doc["steps"][1]["detail"] == "interrupted"
    else:
        doc = world.run(bake)
        assert steps(doc)["bake"] == "failed" and doc["steps"][1]["detail"] == "internal error: RuntimeError: a bug"
        assert steps(doc)["gc"] == "done" and Path(doc["report"]["json"]).is_file()
    assert doc["exit_code"] == 1


def test_an_archive_that_keeps_failing_names_the_url_and_role_changed_images_still_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.debarchive import served

    world = World(tmp_path, monkeypatch, images=("web", "api"))
    path = "/dists/bookworm-security/main/binary-amd64/Packages.gz"
    monkeypatch.setattr(archive, "BACKOFF", 0.0)
    with served(world.archive, {path: ["always-503"]}) as url:
        for n, name in enumerate(("web", "api"), 3):  # both install from the archive over HTTP
            world.register(f"{name}-{n}", name, apt_sources=[url])
        settings = yaml.safe_load(world.settings_file.read_text())
        settings["images"]["web"]["disk_size"] = "5G"  # web's own input changes; api's does not
        world.settings_file.write_text(yaml.safe_dump(settings))
        asked: list[Any] = []

        def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
            asked.append(images)
            world.register("web-5", "web")
            return {"env": env.name, "ok": True, "images": [
                {"image": "api", "state": "skipped", "image_id": "api-4", "status": "validated", "fingerprint": None,
                 "previous_id": "api-4", "error": None},
                {"image": "web", "state": "built", "image_id": "web-5", "status": "validated", "fingerprint": None,
                 "previous_id": "web-3", "error": None}]}

        doc = world.run(bake)
    by = {i["image"]: i for i in doc["drift"]["images"]}
    assert by["web"]["drift"] and by["web"]["state"] == "rebuild" and not by["web"]["drifted"]
    assert by["api"]["state"] == "unknown" and not by["api"]["drift"]
    assert by["api"]["unreadable"] == [f"{url} bookworm-security/main"]
    error = f"archive: GET {url}{path}: HTTP 503 Service Unavailable (after 4 attempts)"
    assert doc["drift"]["archive"]["errors"] == [error]
    assert steps(doc)["drift"] == "failed" and steps(doc)["bake"] == "done" and asked
    assert [p["image"] for p in doc["promotions"]] == ["web"]
    assert doc["exit_code"] == 1 and error in doc["steps"][0]["detail"]
    assert error in Path(doc["report"]["markdown"]).read_text()


def test_plan_says_what_would_be_rebuilt_and_changes_nothing(world: World) -> None:
    newer = [("sudo", "1.9.13p3-1+deb12u2", "amd64", "sudo")]
    write_suite(world.archive, "bookworm-security", newer, "Sun, 29 Nov 2026 08:00:00 UTC")
    before = sorted(p.relative_to(world.home) for p in world.home.rglob("*") if p.is_file())
    plan = world.run(no_bake, plan=True)
    assert plan["exit_code"] == 0 and plan["rebuild"] == ["web"]
    (web,) = plan["images"]
    assert web["packages_checked"] == len(BASE_PACKAGES) and web["drifted"] and web["rebuild"]
    assert web["indexes"] == [f"file://{world.archive} {s}/main" for s in SUITES]
    assert [n["name"] for n in web["newer"]] == ["sudo"] and web["newer"][0]["security"]
    assert plan["archive"]["bytes_read"] > 0
    after = sorted(p.relative_to(world.home) for p in world.home.rglob("*") if p.is_file())
    assert [p for p in after if p not in before] == [Path("store/locks/nightly-local.lock")] or after == before
    assert baseimage.stale_reason(world.base_dir) is None  # sudo is on the base disk: a real run marks it
    lines = nightly.human_nightly(plan)
    assert lines[0] == "nightly --plan local: would rebuild web"
    assert lines[1].split() == ["web", "REBUILD", str(len(BASE_PACKAGES)), "packages", "against", "3", "index(es)"]
    assert "sudo 1.9.13p3-1+deb12u1 installed, 1.9.13p3-1+deb12u2 in bookworm-security (security fix)" in lines[2]
    with nightly.run_lock("local"):  # the plan released the lock
        pass


def test_a_source_at_the_vms_host_address_is_read_on_this_hosts_loopback(world: World) -> None:
    """An image whose role added an apt repository served on this host, which the build VM
    reached at QEMU's user-network host address: the drift check reads that repository on
    127.0.0.1 and reports it as the image records it."""
    newer = [("sudo", "1.9.13p3-1+deb12u2", "amd64", "sudo")]
    write_suite(world.archive, "bookworm-security", newer, "Sun, 29 Nov 2026 08:00:00 UTC")
    with served(world.archive) as url:
        guest = url.replace("127.0.0.1", "10.0.2.2")
        world.register("web-2", created="2026-11-30T00:00:00Z", apt_sources=[guest])
        plan = world.run(no_bake, plan=True)
    assert plan["exit_code"] == 0 and plan["rebuild"] == ["web"], plan
    (web,) = plan["images"]
    assert web["previous_id"] == "web-2" and web["indexes"] == [f"{guest} {s}/main" for s in SUITES]
    assert [(n["name"], n["suite"]) for n in web["newer"]] == [("sudo", "bookworm-security")]


def test_three_failed_runs_in_a_row_are_said_first_and_exit_3(world: World,
                                                             webhook: tuple[str, list[dict[str, Any]]]) -> None:
    hook, got = webhook
    role = world.root / "roles" / "web" / "tasks" / "main.yml"
    role.write_text(role.read_text() + "\n# broken\n")

    def failing(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        return {"env": env.name, "ok": False, "images": [
            {"image": "web", "state": "failed", "image_id": None, "status": None, "fingerprint": None,
             "previous_id": "web-1", "error": "packer build failed"}]}

    codes = [world.run(failing, webhook_url=hook)["exit_code"] for _ in range(2)]
    third = world.run(failing, webhook_url=hook)
    third_md = Path(third["report"]["markdown"]).read_text()  # a run in the same second shares the name
    fourth = world.run(failing, webhook_url=hook)
    fourth_md = Path(fourth["report"]["markdown"]).read_text()
    assert codes == [1, 1] and [g["streak"]["failed"] for g in got] == [1, 2, 3, 4]
    assert not got[1]["streak"]["alarm"] and got[2]["streak"]["alarm"] and got[3]["streak"]["alarm"]
    for doc, md, n in ((third, third_md, 3), (fourth, fourth_md, 4)):
        assert doc["exit_code"] == 3 and doc["streak"]["failed"] == n
        assert doc["summary"].startswith(f"FAILED {n} NIGHTLY RUNS IN A ROW (since ")
        assert md.splitlines()[0].startswith(
            f"# FAILED {n} NIGHTLY RUNS IN A ROW")
        assert nightly.human_nightly(doc)[0].startswith(f"nightly local: FAILED {n} NIGHTLY RUNS IN A ROW")
    role.write_text(role.read_text().replace("\n# broken\n", ""))
    good = world.run(no_bake)
    assert good["exit_code"] == 0 and good["streak"]["failed"] == 0 and not good["streak"]["alarm"]


def test_one_image_checks_its_ancestors_packages_and_a_drifted_base_rebuilds_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nightly --image web`, web baked on base: base's packages are checked too (before, a
    child's base -- its parent image -- was not recognised and nothing was checked)."""
    world = World(tmp_path, monkeypatch, images=("base", "web"))
    settings = yaml.safe_load(world.settings_file.read_text())
    settings["images"]["web"]["parent"] = "base"
    world.settings_file.write_text(yaml.safe_dump(settings))
    newer = [("sudo", "1.9.13p3-1+deb12u2", "amd64", "sudo")]
    write_suite(world.archive, "bookworm-security", newer, "Sun, 29 Nov 2026 08:00:00 UTC")
    plan = world.run(no_bake, images=["web"], plan=True)
    assert [i["image"] for i in plan["images"]] == ["base", "web"] and plan["rebuild"] == ["base", "web"]
    fix = "sudo 1.9.13p3-1+deb12u1 installed, 1.9.13p3-1+deb12u2 in bookworm-security (security fix)"
    assert plan["images"][0]["reasons"][0] == f"base: {fix}"
    assert plan["images"][1]["reasons"][0] == f"web: {fix}"
    asked: list[Any] = []

    def bake(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None,
             force: list[str] | None = None) -> dict[str, Any]:
        asked.append((images, force))
        return {"env": env.name, "ok": True, "images": []}

    world.run(bake, images=["web"])
    assert asked == [(["web"], ["base", "web"])]


def test_an_unmoved_archive_is_answered_from_the_cache_and_a_moved_one_is_read_again(world: World) -> None:
    first = world.run(no_bake)["drift"]["archive"]
    assert first["from_cache"] == 0
    again = world.run(no_bake)["drift"]["archive"]
    assert again["from_cache"] == 3 and again["bytes_read"] < first["bytes_read"]  # the Release files only
    newer = [("sudo", "1.9.13p3-1+deb12u2", "amd64", "sudo")]
    write_suite(world.archive, "bookworm-security", newer, "Sun, 29 Nov 2026 08:00:00 UTC")
    plan = world.run(no_bake, plan=True)
    assert plan["archive"]["from_cache"] == 2 and plan["rebuild"] == ["web"]
    assert world.run(no_bake, plan=True)["archive"]["from_cache"] == 2  # a plan writes no cache entry


def test_the_streak_is_kept_per_image_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, images=("web", "api"))
    role = world.root / "roles" / "web" / "tasks" / "main.yml"
    role.write_text(role.read_text() + "\n# broken\n")

    def failing(env: Environment, jobs: int | None, reporter: Reporter, images: list[str] | None = None) -> dict[str, Any]:
        return {"env": env.name, "ok": False, "images": [
            {"image": i, "state": "failed", "image_id": None, "status": None, "fingerprint": None,
             "previous_id": None, "error": "packer build failed"} for i in images or ["api", "web"]]}

    for _ in range(2):
        assert world.run(failing, images=["web"])["streak"]["failed"] in (1, 2)
    assert world.run(failing, images=["api"])["streak"]["failed"] == 1  # another job's count
    assert world.run(failing, images=["web"])["exit_code"] == 3


def test_a_plan_over_a_stale_base_disk_builds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A base disk marked stale (a run found a newer package on it, its bake failed): the
    child's fingerprint would need the rebuilt disk -- a plan must not build it."""
    world = World(tmp_path, monkeypatch, images=("base", "web"))
    settings = yaml.safe_load(world.settings_file.read_text())
    settings["images"]["web"]["parent"] = "base"
    world.settings_file.write_text(yaml.safe_dump(settings))
    world.register("web-3", "web", base_source="/home/store/images/base-1/disk.qcow2")  # a child's base: its parent
    baseimage.mark_stale(world.base_dir, "archive bookworm-security has newer sudo", "2026-11-30T00:00:00Z")
    plan = world.run(no_bake, images=["web"], plan=True)
    assert plan["exit_code"] == 0, plan["error"]
    assert plan["rebuild"] == ["base", "web"]
    assert plan["images"][0]["reasons"] == [
        f"base mmdebstrap:{world.key}: already marked stale: archive bookworm-security has newer sudo"]
    assert plan["images"][1]["reasons"] == ["parent base is rebuilt"]


def test_nightly_runs_of_different_images_go_side_by_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One nightly job per leaf image (the GitHub workflow's matrix): `--image web` and
    `--image cache` hold different locks; a second run of the same selection stops at once,
    naming it."""
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(tmp_path))
    with nightly.run_lock("local", images=["web"]), nightly.run_lock("local", images=["cache"]):
        with pytest.raises(OperationFailed, match=r"another `invoke nightly --env local --image web` is running"), \
                nightly.run_lock("local", images=["web"]):
            pass
        with nightly.run_lock("local"):  # the whole environment: its own lock
            pass

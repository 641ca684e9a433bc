"""`invoke site` from real registries (a local store; the sandbox's AMIs, channels and
groups on the moto server), opened in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from goldenimage import site
from goldenimage.progress import Reporter
from goldenimage.settings import load_environment
from goldenimage.store import LocalStore
from tests.browser import artifacts_dir, chromium, crawl
from tests.conftest import copy_project, put_validated, run_invoke

pytestmark = pytest.mark.integration


def local_registry(home: Path) -> None:
    """base-1, web-1 and web-2 (revoked) in a local store, channel stable moved three times,
    and one nightly report in the default report directory."""
    store = home / "store"
    put_validated(store, "base-1", "sha256:" + "a" * 64, name="base")
    put_validated(store, "web-1", "sha256:" + "b" * 64)
    put_validated(store, "web-2", "sha256:" + "c" * 64)
    s = LocalStore(store)
    s.promote("web-1", "stable")
    s.promote("web-2", "stable")
    s.revoke("web-2", "CVE-2026-1: nginx")
    reports = store / "reports" / "nightly" / "local"
    reports.mkdir(parents=True)
    doc = {"env": "local", "started": "2026-11-27T02:00:00Z", "ok": True, "exit_code": 0,
           "summary": "nothing changed", "steps": [{"step": "drift", "outcome": "done"}], "images": []}
    (reports / "nightly-local-20261127T020000Z.json").write_text(json.dumps(doc))
    (reports / "nightly-local-20261127T020000Z.md").write_text("# nightly local\n")


def test_the_site_of_a_local_registry_in_chromium(tmp_path: Path) -> None:
    project, home = copy_project(tmp_path / "project"), tmp_path / "home"
    local_registry(home)
    out = tmp_path / "site"
    proc = run_invoke("site", "--out", str(out), "--json", root=project, home=home)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["images"], doc["nightly_runs"], doc["groups"]) == (3, 1, None)

    with chromium() as driver:
        pages = crawl(driver, out / "index.html")
        by_name = {Path(u).name: p for u, p in pages.items()}
        assert {"index.html", "images.html", "channels.html", "nightly.html", "fleet.html",
                "base-1.html", "web-1.html", "web-2.html"} <= set(by_name)
        driver.get((out / "index.html").as_uri())
        svg_text = " ".join(t.text for t in driver.find_elements("css selector", "svg text"))
        assert all(name in svg_text for name in ("base", "web")), svg_text
        assert "This image is revoked: CVE-2026-1: nginx" in by_name["web-2.html"]["text"]
        assert "revocation" in by_name["channels.html"]["text"]
        assert "nothing changed" in by_name["nightly.html"]["text"]
        driver.get((out / "image" / "web-2.html").as_uri())
        shot = artifacts_dir() / "site-image-page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    assert (out / "nightly" / "nightly-local-20261127T020000Z.md").read_text() == "# nightly local\n"

    # written again: the directory is replaced whole, never a mix of two runs
    (out / "stray.html").write_text("left by hand")
    assert run_invoke("site", "--out", str(out), root=project, home=home).returncode == 0
    assert not (out / "stray.html").exists() and (out / "index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site-")]


def test_a_directory_the_site_did_not_write_is_refused(tmp_path: Path) -> None:
    project, home = copy_project(tmp_path / "project"), tmp_path / "home"
    local_registry(home)
    mine = tmp_path / "docs"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    proc = run_invoke("site", "--out", str(mine), root=project, home=home)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --out {mine}: exists and is not a site `invoke site` wrote (choose another directory)")
    assert "Traceback" not in proc.stderr and [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_the_sandbox_site_shows_each_group_and_the_image_it_runs(running: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = site.site("sandbox", str(out), Reporter(quiet=True))
    ami = running["seed"]["images"]["web"]
    assert result["groups"] == 1 and result["images"] == 1
    with chromium() as driver:
        pages = crawl(driver, out / "index.html")
        fleet = next(p for u, p in pages.items() if u.endswith("/fleet.html"))["text"]
    row = next(line for line in fleet.splitlines() if line.startswith("web "))
    assert ami in row and "current" in row, fleet
    snap = site.gather(load_environment("sandbox"), Reporter(quiet=True))
    instances = snap["fleet"][0]["instances"]
    assert instances and {i["image_id"] for i in instances} == {ami}
    assert snap["histories"]["web"]  # the seeded channels, read from SSM

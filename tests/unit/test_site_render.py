"""The registry site's pages from snapshots (pure): valid HTML, links that resolve, the
family, revocations, package differences, bake waterfalls, the fleet's standing, size."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag

import html5lib
import pytest

from goldenimage import site_render
from goldenimage.site_render import image_path, image_standing, render


def rec(image_id: str, name: str, status: str = "validated", created: str = "2026-11-26T10:00:00Z",
        channels: tuple[str, ...] = (), parent: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": image_id, "name": name, "env": "local", "fingerprint": "sha256:" + "a" * 64, "created": created,
            "status": status, "channels": list(channels), **({"parent": {"id": parent}} if parent else {}), **extra}


def move(version: int, image_id: str | None, frm: str | None, action: str = "promote", reason: str = "",
         status: str = "validated") -> dict[str, Any]:
    return {"version": version, "at": f"2026-11-2{version}T10:00:00Z", "image_id": image_id, "from": frm,
            "action": action, "user": "alice", "reason": reason, "status": status}


TIMINGS = {"packer_steps": [{"step": "StepCreateDisk", "seconds": 2.0},
                            {"step": "Provisioning with Ansible...", "seconds": 40.0},
                            {"step": "StepShutdown", "seconds": 3.0}],
           "ansible_tasks": [{"task": "Install nginx", "role": "web", "seconds": 30.0},
                             {"task": "Gathering Facts", "role": "", "seconds": 4.0}]}


def snapshot() -> dict[str, Any]:
    images = [
        rec("base-1", "base", channels=("stable",)),
        rec("web-1", "web", created="2026-11-25T10:00:00Z", parent="base-1"),
        rec("web-2", "web", status="revoked", created="2026-11-26T11:00:00Z", parent="base-1",
            revoked_reason="CVE-2026-1 <script>alert(1)</script>"),
        rec("web-3", "web", created="2026-11-27T10:00:00Z", channels=("stable",), parent="base-1",
            outdated="parent base has a newer image base-2"),
        rec("cache-1", "cache", status="quarantined", parent="base-1"),
    ]
    manifests = {r["id"]: {"packages": [{"name": "nginx", "version": "1.22.1-9", "arch": "amd64"},
                                        {"name": "libc6", "version": "2.36-9", "arch": "amd64"}],
                           "timings": TIMINGS, "tools": {"packer": "1.6.6"},
                           "validation": {"status": r["status"], "passed": 40, "failed": 0}}
                 for r in images}
    manifests["web-3"]["packages"][0]["version"] = "1.22.1-9+deb12u1"
    return {
        "env": "local", "target": "local", "generated": "2026-11-27T12:00:00Z",
        "images": images,
        "tree": [{"image": "base", "depth": 0, "parent": None, "images": ["base-1"]},
                 {"image": "web", "depth": 1, "parent": "base", "images": ["web-1", "web-2", "web-3"]},
                 {"image": "cache", "depth": 1, "parent": "base", "images": ["cache-1"]}],
        "manifests": manifests,
        "histories": {"web": {"stable": [move(1, "web-1", None), move(2, "web-2", "web-1"),
                                         move(3, "web-1", "web-2", "revoke", "CVE-2026-1"),
                                         move(4, "web-3", "web-1")]}},
        "nightly": [{"file": "/r/nightly-local-1.json", "links": {"json": "nightly/nightly-local-1.json"},
                     "doc": {"started": "2026-11-27T02:00:00Z", "ok": False, "exit_code": 1,
                             "summary": "bake failed", "steps": [{"step": "bake", "outcome": "failed"}],
                             "images": []}}],
        "fleet": None,
    }


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            assert a["id"] not in self.ids, f"id {a['id']!r} twice"
            self.ids.add(str(a["id"]))
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(str(a[key]))


def resolve(page: str, link: str) -> tuple[str, str]:
    path, frag = urldefrag(link)
    if not path:
        return page, frag
    parts = page.split("/")[:-1]
    for part in path.split("/"):
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts), frag


def check_site(pages: dict[str, str], external: frozenset[str] = frozenset(),
               only: frozenset[str] | None = None) -> None:
    """Each HTML page (of `only`) parses as strict HTML5 and each of its links names a page of
    the site (and an id on it, for a fragment); `external`: files the site copies in."""
    parsed: dict[str, Links] = {}

    def parse(path: str) -> Links:
        if path not in parsed:
            html5lib.HTMLParser(strict=True).parse(pages[path])  # raises on any HTML5 parse error
            parsed[path] = Links()
            parsed[path].feed(pages[path])
        return parsed[path]

    for path in sorted(only if only is not None else pages):
        if not path.endswith(".html"):
            continue
        for link in parse(path).links:
            if re.match(r"^[a-z]+:", link):
                pytest.fail(f"{path}: external link {link}")
            target, frag = resolve(path, link)
            if target in external:
                continue
            assert target in pages, f"{path}: {link} -> {target} is not a page"
            if frag:
                assert frag in parse(target).ids, f"{path}: {link}: no id {frag!r} in {target}"


def test_every_page_is_valid_html_and_every_link_resolves() -> None:
    pages = render(snapshot())
    check_site(pages, external=frozenset({"nightly/nightly-local-1.json"}))
    assert {"index.html", "images.html", "channels.html", "nightly.html", "fleet.html", "style.css"} <= set(pages)
    assert {image_path(i) for i in ("base-1", "web-1", "web-2", "web-3", "cache-1")} <= set(pages)


def test_the_family_graph_and_list_show_every_image_name_under_its_parent() -> None:
    index = render(snapshot())["index.html"]
    svg = index[index.index("<svg"):index.index("</svg>")]
    for name in ("base", "web", "cache"):
        assert f">{name}" in svg and f'href="images.html#name-{name}"' in svg
    assert svg.count('class="edge"') == 2  # base -> web, base -> cache
    assert "stale" in svg  # web has an outdated image
    listing = index[index.index('<ul class="family">'):]
    assert listing.index(">base<") < listing.index(">web<") and "<ul><li>" in listing


def test_a_revoked_image_is_marked_everywhere_and_its_reason_escaped() -> None:
    pages = render(snapshot())
    page = pages[image_path("web-2")]
    assert "This image is revoked" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert 'status s-revoked' in pages["images.html"]
    timeline = pages["channels.html"]
    assert "revocation" in timeline and "CVE-2026-1" in timeline
    assert timeline.index("v4") < timeline.index("v1")  # newest move first


def test_a_move_back_to_an_earlier_image_is_a_rollback() -> None:
    snap = snapshot()
    snap["histories"]["web"]["stable"].append(move(5, "web-1", "web-3"))
    assert "rollback" in render(snap)["channels.html"]
    assert "rollback" not in render(snapshot())["channels.html"]  # a revoke's fall-back is a revocation


def test_package_differences_to_the_predecessor_from_the_manifests() -> None:
    page = render(snapshot())[image_path("web-3")]
    assert "Differences to" in page and image_path("web-2").split("/")[1] in page
    assert "1.22.1-9+deb12u1" in page and "upgraded" in page
    assert "No earlier image" in render(snapshot())[image_path("web-1")]


def test_security_fixes_are_marked_from_the_nightly_report() -> None:
    snap = snapshot()
    snap["nightly"][0]["doc"]["images"] = [{"image_id": "web-3", "previous_id": "web-1", "packages": {
        "changes": [{"name": "nginx", "source": "nginx", "kind": "upgraded", "old": "1.22.1-9",
                     "new": "1.22.1-9+deb12u1", "security": True}], "security": 1}}]
    page = render(snap)[image_path("web-3")]
    assert '<span class="security">security</span>' in page and "1 from the security suite" in page


def test_the_bake_waterfall_puts_tasks_inside_the_provisioning_step() -> None:
    table = site_render.waterfall(TIMINGS)
    assert "45 Packer" not in table and "3 Packer steps, 2 Ansible tasks, 45s in all" in table
    starts = re.findall(r"<td>([\d.]+)s</td>", table)
    assert starts == ["0.0", "2.0", "2.0", "32.0", "42.0"]  # step, step, its two tasks, step
    assert "No timings" in site_render.waterfall({})


def test_fleet_standing_of_the_image_a_group_runs() -> None:
    images = snapshot()["images"]
    assert image_standing("web-3", images) == "outdated"  # its parent has a newer image
    assert image_standing("web-1", images) == "outdated"  # web-3 is newer
    assert image_standing("web-2", images) == "revoked"
    assert image_standing("base-1", images) == "current"
    assert image_standing("ami-0123", images) == "unknown"


def test_the_fleet_page_lists_each_group_and_what_its_instances_run() -> None:
    snap = snapshot()
    snap["fleet"] = [
        {"group": "web", "asg": "web-prod", "image": "web", "channel": "stable", "desired": 3, "min": 2, "max": 6,
         "error": "", "instances": [{"id": f"i-{n}", "image_id": i, "lifecycle": "InService", "health": "Healthy"}
                                    for n, i in enumerate(["base-1", "base-1", "web-2"])]},
        {"group": "gone", "asg": "gone", "image": None, "channel": None, "desired": None, "min": None,
         "max": None, "error": "no auto-scaling group 'gone'", "instances": []},
    ]
    page = render(snap)["fleet.html"]
    assert "2 &times; " in page and "s-current" in page and "1 &times; " in page and "s-revoked" in page
    assert "no auto-scaling group" in page and "no instances" in page
    assert "has no auto-scaling groups" in render(snapshot())["fleet.html"]


def test_no_page_is_over_a_megabyte_for_a_thousand_images() -> None:
    names = [f"img{n}" for n in range(10)]
    images = [rec(f"{names[i % 10]}-{i:04d}", names[i % 10], created=f"2026-{1 + i % 12:02d}-01T00:00:{i % 60:02d}Z",
                  status="revoked" if i % 7 == 0 else "validated", revoked_reason="x" * 40,
                  channels=("stable",) if i < 10 else ()) for i in range(1000)]
    tree = [{"image": n, "depth": 0 if i == 0 else 1, "parent": None if i == 0 else names[0], "images": []}
            for i, n in enumerate(names)]
    pkgs = [{"name": f"pkg{k}", "version": f"1.{k}", "arch": "amd64"} for k in range(400)]
    manifests = {r["id"]: {"packages": pkgs, "timings": TIMINGS} for r in images}
    histories = {n: {"stable": [move(1 + k % 9, images[k * 10 + i]["id"], None) for k in range(10)]}
                 for i, n in enumerate(names)}  # 100 channel moves
    pages = render({"env": "local", "target": "local", "generated": "now", "images": images, "tree": tree,
                    "manifests": manifests, "histories": histories, "nightly": [], "fleet": None})
    assert len(pages) == 1000 + 6
    biggest = max(pages, key=lambda p: len(pages[p].encode()))
    assert len(pages[biggest].encode()) < 1 << 20, biggest
    check_site(pages, only=frozenset({"index.html", "images.html", "channels.html", image_path("img3-0003")}))

"""The base disk's archive record and its stale marker (adapters/baseimage.py): the record
is written with the base, the hook's dpkg-query output parses, and a base marked stale is
rebuilt under the same recipe key with a new identity. The mmdebstrap build itself is a
stand-in here (`_build`); everything around it is real."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from goldenimage import drift
from goldenimage.adapters import baseimage
from goldenimage.progress import Reporter
from goldenimage.settings import BaseImageSpec
from tests.debarchive import BASE_PACKAGES, write_suite

DATE = "Sat, 28 Nov 2026 08:00:00 UTC"


def test_the_hook_records_name_version_arch_and_source_from_dpkgs_database(tmp_path: Path) -> None:
    out = tmp_path / "dir with space" / "installed.tsv"
    out.parent.mkdir()
    # mmdebstrap runs a customize hook as `sh -c HOOK exec ROOT`: here the host is the root
    subprocess.run(["sh", "-c", baseimage.installed_hook(out), "exec", "/"], check=True)
    got = {p.name: p for p in drift.parse_installed(out.read_text())}
    assert got["dpkg"].source == "dpkg" and got["libc6"].source == "glibc"
    assert got["libc6"].arch == "amd64" and got["libc6"].version


def test_sources_follow_the_settings() -> None:
    assert [s.as_dict() for s in baseimage.archive_sources(BaseImageSpec())] == [
        {"uri": "http://deb.debian.org/debian", "suite": "bookworm", "component": "main"},
        {"uri": "http://deb.debian.org/debian", "suite": "bookworm-updates", "component": "main"},
        {"uri": "http://deb.debian.org/debian-security", "suite": "bookworm-security", "component": "main"}]
    assert [s.suite for s in baseimage.archive_sources(BaseImageSpec(updates=False, security_mirror=""))] == [
        "bookworm"]
    assert baseimage.recipe_key(BaseImageSpec(), "1") != baseimage.recipe_key(BaseImageSpec(updates=False), "1")


def test_a_stale_base_is_rebuilt_under_the_same_key_with_a_new_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive_dir = tmp_path / "archive"
    for suite in ("bookworm", "bookworm-updates", "bookworm-security"):
        write_suite(archive_dir, suite, BASE_PACKAGES, DATE)
    spec = BaseImageSpec(mirror=f"file://{archive_dir}", security_mirror=f"file://{archive_dir}")
    builds: list[int] = []

    def fake_build(spec: BaseImageSpec, work: Path, reporter: Reporter) -> Path:
        builds.append(1)
        (work / "installed.tsv").write_text("".join(f"{n}\t{v}\t{a}\t{s}\n" for n, v, a, s in BASE_PACKAGES))
        disk = work / "base.qcow2"
        disk.write_bytes(f"disk built {len(builds)} time(s)".encode())
        return disk

    monkeypatch.setattr(baseimage, "_build", fake_build)
    cache = tmp_path / "base"
    first = baseimage.ensure_base_image(spec, cache, Reporter(quiet=True))
    directory = cache / first.source.split(":", 1)[1]
    record = baseimage.read_record(directory)
    assert record is not None
    assert [r["suite"] for r in record["archive"]["releases"]] == ["bookworm", "bookworm-updates", "bookworm-security"]
    assert record["archive"]["releases"][0]["date"] == DATE
    assert {p["name"]: p["source"] for p in record["archive"]["installed"]}["libssl3"] == "openssl"

    assert baseimage.ensure_base_image(spec, cache, Reporter(quiet=True)).identity == first.identity
    assert len(builds) == 1  # cached

    baseimage.mark_stale(directory, "archive bookworm-security has newer openssl", "2026-11-30T02:00:00Z")
    second = baseimage.ensure_base_image(spec, cache, Reporter(quiet=True))
    assert len(builds) == 2 and second.source == first.source  # same recipe key
    assert second.identity != first.identity  # new content: every fingerprint changes
    assert baseimage.stale_reason(directory) is None
    assert json.loads((directory / "base.json").read_text())["sha256"] == second.sha256


def test_an_unreachable_archive_at_build_time_records_no_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base still builds; the next drift check finds no recorded Release and reads the indexes."""
    def fake_build(spec: BaseImageSpec, work: Path, reporter: Reporter) -> Path:
        (work / "installed.tsv").write_text("bash\t5.2\tamd64\tbash\n")
        (work / "base.qcow2").write_bytes(b"disk")
        return work / "base.qcow2"

    monkeypatch.setattr(baseimage, "_build", fake_build)
    spec = BaseImageSpec(mirror=f"file://{tmp_path}/nowhere", security_mirror="")
    base = baseimage.ensure_base_image(spec, tmp_path / "base", Reporter(quiet=True))
    record = baseimage.read_record(base.path.parent)
    assert record is not None and record["archive"]["releases"] == []

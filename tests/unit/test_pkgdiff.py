"""pkgdiff.py: the package differences between two images (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from goldenimage import pkgdiff, sbom
from goldenimage.drift import compare_versions

OLD = [("openssl", "3.0.14-1~deb12u2", "amd64"), ("libssl3", "3.0.14-1~deb12u2", "amd64"),
       ("nginx", "1.22.1-9", "amd64"), ("vim-tiny", "2:9.0.1378-2", "amd64"), ("curl", "7.88.1-10", "amd64")]
NEW = [("openssl", "3.0.15-1~deb12u1", "amd64"), ("libssl3", "3.0.15-1~deb12u1", "amd64"),
       ("nginx", "1.22.1-9", "amd64"), ("vim-tiny", "2:9.0.1378-1", "amd64"), ("jq", "1.6-2.1", "amd64")]


def test_diff_groups_by_source_and_marks_security() -> None:
    d = pkgdiff.diff(OLD, NEW, sources={"libssl3": "openssl"},
                     security={("openssl", "3.0.15-1~deb12u1"), ("libssl3", "3.0.15-1~deb12u1")})
    assert d["counts"] == {"added": 1, "removed": 1, "upgraded": 2, "downgraded": 1}
    assert d["security"] == 2
    assert list(d["by_source"]) == ["curl", "jq", "openssl", "vim-tiny"]
    assert [(c["name"], c["kind"], c["security"]) for c in d["by_source"]["openssl"]] == [
        ("libssl3", "upgraded", True), ("openssl", "upgraded", True)]
    assert d["by_source"]["vim-tiny"][0]["kind"] == "downgraded"  # same epoch, lower revision


def test_same_version_spelt_differently_is_no_change() -> None:
    assert pkgdiff.diff([("a", "1.0", "all")], [("a", "0:1.0", "all")])["changes"] == []


def test_packages_from_manifest_and_sbom_agree() -> None:
    from datetime import UTC, datetime

    doc = sbom.build(NEW, image_name="web", fingerprint="sha256:" + "0" * 64, now=datetime(2026, 1, 1, tzinfo=UTC))
    manifest = {"packages": [{"name": n, "version": v, "arch": a} for n, v, a in NEW]}
    assert sorted(pkgdiff.packages_from_sbom(doc)) == sorted(pkgdiff.packages_from_manifest(manifest) or [])
    assert pkgdiff.packages_from_manifest({}) is None


names = st.sampled_from(["a", "b", "c", "d", "libx", "liby"])
vers = st.from_regex(r"([1-3]:)?[0-9]{1,2}(\.[0-9]{1,2})?(-[0-9])?", fullmatch=True)
pkgsets = st.dictionaries(names, vers, max_size=6).map(lambda d: [(n, v, "amd64") for n, v in d.items()])


@given(pkgsets, pkgsets)
def test_diff_properties(a: list[tuple[str, str, str]], b: list[tuple[str, str, str]]) -> None:
    forward, back = pkgdiff.diff(a, b), pkgdiff.diff(b, a)
    c, r = forward["counts"], back["counts"]
    assert (c["added"], c["removed"], c["upgraded"], c["downgraded"]) == (
        r["removed"], r["added"], r["downgraded"], r["upgraded"])
    assert pkgdiff.diff(a, a)["changes"] == []
    for ch in forward["changes"]:
        if ch["kind"] == "upgraded":
            assert compare_versions(ch["new"], ch["old"]) > 0
        if ch["kind"] == "downgraded":
            assert compare_versions(ch["new"], ch["old"]) < 0
    assert sum(len(v) for v in forward["by_source"].values()) == len(forward["changes"])

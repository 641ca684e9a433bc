"""SBOM: installed Debian packages as a CycloneDX document (pure)."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldenimage import sbom
from goldenimage.errors import OperationFailed

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
FP = "ab" * 32
PKGS = [
    ("bash", "5.2.15-2+b7", "amd64"),
    ("libc6", "2.36-9+deb12u9", "amd64"),
    ("vim-tiny", "2:9.0.1378-2+deb12u2", "amd64"),
    ("tzdata", "2025a-0+deb12u1", "all"),
]


def build(pkgs: list[sbom.Package] = PKGS) -> dict[str, object]:
    return sbom.build(pkgs, image_name="web", fingerprint=FP, now=NOW)


def test_document_shape() -> None:
    doc = build()
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    comps = {c["name"]: c for c in doc["components"]}  # type: ignore[attr-defined]
    assert comps["bash"] == {
        "type": "library",
        "name": "bash",
        "version": "5.2.15-2+b7",
        "purl": "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64",
        "bom-ref": "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64",
    }
    assert comps["tzdata"]["purl"] == "pkg:deb/debian/tzdata@2025a-0%2Bdeb12u1?arch=all"
    assert comps["vim-tiny"]["version"] == "2:9.0.1378-2+deb12u2"
    meta = doc["metadata"]
    assert meta["component"]["name"] == "web" and meta["component"]["version"] == FP  # type: ignore[index]
    assert meta["timestamp"].startswith("2026-11-26T09:00:00")  # type: ignore[index]
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}  # type: ignore[attr-defined]
    assert sorted(deps[f"image:web@{FP}"]) == sorted(c["purl"] for c in comps.values())


def test_purl_matches_the_spec_format() -> None:
    assert sbom.purl("openssl", "3.0.15-1~deb12u1", "arm64").to_string() == (
        "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=arm64"
    )


def test_valid_against_the_cyclonedx_schema() -> None:
    pytest.importorskip("jsonschema")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(build()))
    assert errors is None, errors


pkg = st.tuples(
    st.from_regex(r"[a-z0-9][a-z0-9+.-]{0,20}", fullmatch=True),
    st.from_regex(r"([0-9]:)?[0-9][A-Za-z0-9.+~-]{0,15}", fullmatch=True),
    st.sampled_from(["amd64", "arm64", "all", "i386"]),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(pkg, max_size=15), st.randoms(use_true_random=False))
def test_deterministic_and_order_independent(pkgs: list[sbom.Package], rnd: object) -> None:
    shuffled = list(pkgs) + list(pkgs[:2])  # duplicates from a repeated query line
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "incomplete dependency graph" warnings
        a = sbom.build(pkgs, image_name="web", fingerprint=FP, now=NOW)
        b = sbom.build(shuffled, image_name="web", fingerprint=FP, now=NOW)
    assert a == b
    assert len(a["components"]) == len(set(pkgs))


def test_serial_changes_with_content() -> None:
    assert build()["serialNumber"] != build(PKGS[:2])["serialNumber"]
    assert str(build()["serialNumber"]).startswith("urn:uuid:")


def test_parse_dpkg_query() -> None:
    text = "bash\t5.2.15-2+b7\tamd64\nlibc6\t2.36-9+deb12u9\tamd64\n\n"
    assert sbom.parse_dpkg_query(text) == [
        ("bash", "5.2.15-2+b7", "amd64"),
        ("libc6", "2.36-9+deb12u9", "amd64"),
    ]
    assert sbom.DPKG_QUERY[-1] == r"${Package}\t${Version}\t${Architecture}\n"


@pytest.mark.parametrize("bad", ["bash 5.2 amd64\n", "bash\t5.2\n", "bash\t\tamd64\n"])
def test_parse_dpkg_query_rejects_bad_lines(bad: str) -> None:
    with pytest.raises(OperationFailed, match="dpkg-query output line 1"):
        sbom.parse_dpkg_query(bad)

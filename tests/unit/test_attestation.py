"""The statement an image's attestation signs, and the checks of a decoded one (pure)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from goldenimage import attestation as at

SHA = "c" * 64
PARENT_ENV = "e" * 64


def manifest(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "web-1", "name": "web", "env": "local", "fingerprint": "f" * 64, "created": "2026-12-02T10:00:00Z",
        "status": "validated", "artifact_sha256": SHA,
        "fingerprint_inputs": {"playbook": "sha256:" + "a" * 64, "role:nginx": "b" * 64, "tool:packer": "Packer v1.14"},
        "base": {"source": "parent", "identity": "sha256:" + "d" * 64},
        "parent": {"id": "base-1", "name": "base"},
        "tools": {"packer": "1.14.2", "ansible-core": "2.19.14", "qemu": "9.2", "goldenimage": "0.1.0"},
        "validation": {"status": "validated", "passed": 12, "failed": 0, "errors": 0, "skipped": 1,
                       "suites": ["tests/image/common", "tests/image/web"]},
    }
    doc.update(over)
    return doc


def local(doc: dict[str, Any] | None = None, parent_att: str | None = PARENT_ENV) -> dict[str, Any]:
    doc = doc or manifest()
    return at.statement(doc, at.local_subject(doc["id"], "disk.qcow2", doc["artifact_sha256"]),
                        parent_attestation=parent_att, junit_sha256="9" * 64)


EXPECT = at.Expect(image_id="web-1", name="web", env="local", sha256=SHA, parent_id="base-1",
                   parent_attestation=PARENT_ENV)


def test_the_statement_is_in_toto_v1_with_slsa_provenance_v1() -> None:
    doc = local()
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [{"name": "web-1/disk.qcow2", "digest": {"sha256": SHA},
                               "annotations": {"kind": "qcow2", "image_id": "web-1"}}]
    build = doc["predicate"]["buildDefinition"]
    assert build["externalParameters"] == {"image": "web", "environment": "local", "image_id": "web-1",
                                           "fingerprint": "f" * 64}
    assert build["internalParameters"]["parent"] == {"image_id": "base-1", "name": "base",
                                                     "attestation_sha256": PARENT_ENV}
    assert build["internalParameters"]["base"]["identity"] == "sha256:" + "d" * 64
    assert build["resolvedDependencies"] == [
        {"name": "playbook", "digest": {"sha256": "a" * 64}},
        {"name": "role:nginx", "digest": {"sha256": "b" * 64}},
        {"name": "tool:packer", "digest": {"goldenimage-value": "Packer v1.14"}},
    ]
    run = doc["predicate"]["runDetails"]
    assert run["builder"]["version"] == {"ansible-core": "2.19.14", "goldenimage": "0.1.0", "packer": "1.14.2",
                                         "qemu": "9.2"}
    (validation,) = run["byproducts"]
    assert validation["name"] == at.VALIDATION and validation["digest"] == {"sha256": "9" * 64}
    assert validation["annotations"] == {"status": "validated", "suites": ["tests/image/common", "tests/image/web"],
                                         "passed": 12, "failed": 0, "errors": 0, "skipped": 1,
                                         "junit_sha256": "9" * 64}


def test_encode_decode_round_trip_and_bad_payloads() -> None:
    doc = local()
    assert at.decode(at.encode(doc)) == doc
    assert at.encode(doc) == at.encode(copy.deepcopy(doc))  # the same bytes for the same statement
    with pytest.raises(ValueError):
        at.decode(b"[1, 2]")
    with pytest.raises(ValueError):
        at.decode(b"not json")


def test_a_matching_statement_passes_every_check() -> None:
    verdict = at.check(local(), EXPECT)
    assert verdict.failed is None
    assert [c.what for c in verdict.checks] == ["statement type", "predicate type", "subject digest", "image name",
                                               "environment", "image id", "validation", "parent attestation"]


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


BD = ["predicate", "buildDefinition"]
VAL = ["predicate", "runDetails", "byproducts", 0, "annotations"]
CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("other type", _set(["_type"], "https://in-toto.io/Statement/v0.1"), "statement type", "v0.1"),
    ("other predicate", _set(["predicateType"], "https://slsa.dev/provenance/v0.2"), "predicate type", "v0.2"),
    ("other digest", _set(["subject", 0, "digest"], {"sha256": "0" * 64}), "subject digest", "0" * 64),
    ("no subject", _set(["subject"], []), "subject", "no subject"),
    ("subject not a list", _set(["subject"], {"name": "x"}), "subject", "no subject"),
    ("other image", _set([*BD, "externalParameters", "image"], "cache"), "image name", "'cache'"),
    ("other env", _set([*BD, "externalParameters", "environment"], "prod"), "environment", "'prod'"),
    ("other id", _set([*BD, "externalParameters", "image_id"], "web-2"), "image id", "'web-2'"),
    ("quarantined", _set([*VAL, "status"], "quarantined"), "validation", "quarantined"),
    ("a failed check", _set([*VAL, "failed"], 1), "validation", "1 failed"),
    ("an error", _set([*VAL, "errors"], 2), "validation", "2 errors"),
    ("no validation", _set(["predicate", "runDetails", "byproducts"], []), "validation", "records no validation"),
    ("other parent", _set([*BD, "internalParameters", "parent", "image_id"], "base-0"), "parent attestation",
     "names base-0"),
    ("other parent envelope", _set([*BD, "internalParameters", "parent", "attestation_sha256"], "1" * 64),
     "parent attestation", "1" * 64),
    ("no parent", _set([*BD, "internalParameters", "parent"], None), "parent attestation", "names None"),
    ("no predicate", _set(["predicate"], None), "image name", "None"),
]


@pytest.mark.parametrize(("case", "change", "what", "detail"), CASES, ids=[c[0] for c in CASES])
def test_each_difference_fails_its_check(case: str, change: Callable[[dict[str, Any]], None], what: str,
                                         detail: str) -> None:
    doc = local()
    change(doc)
    failed = at.check(doc, EXPECT).failed
    assert failed is not None and failed.what == what and detail in failed.detail, failed


def test_an_image_without_a_parent_must_have_a_statement_without_one() -> None:
    doc = manifest()
    doc.pop("parent")
    expect = at.Expect(image_id="web-1", name="web", env="local", sha256=SHA)
    assert at.check(local(doc, None), expect).failed is None
    failed = at.check(local(), expect).failed
    assert failed is not None and failed.what == "parent" and "base-1" in failed.detail


def test_an_unsigned_parent_is_recorded_and_matched_as_none() -> None:
    expect = at.Expect(image_id="web-1", name="web", env="local", sha256=SHA, parent_id="base-1")
    assert at.check(local(parent_att=None), expect).failed is None
    assert at.check(local(), expect).failed is not None  # a parent signed since: not the one used


def test_an_ami_subject_names_the_ami_its_region_and_snapshots() -> None:
    doc = manifest(id="ami-0abc")
    subject = at.ami_subject("ami-0abc", "eu-west-1", ["snap-2", "snap-1"], SHA)
    assert subject[0]["annotations"] == {"kind": "ami", "region": "eu-west-1", "snapshots": ["snap-1", "snap-2"],
                                         "qcow2_sha256": SHA}
    assert [s["name"] for s in subject] == ["ami-0abc", "snap-1", "snap-2"]
    st = at.statement(doc, subject, parent_attestation=PARENT_ENV, junit_sha256=None)
    expect = at.Expect(image_id="ami-0abc", name="web", env="local", ami="ami-0abc", region="eu-west-1",
                       snapshots=("snap-1", "snap-2"), parent_id="base-1", parent_attestation=PARENT_ENV)
    assert at.check(st, expect).failed is None
    for other in (dict(ami="ami-0def", image_id="ami-0def"), dict(region="us-east-1"), dict(snapshots=("snap-1",))):
        e = at.Expect(**{**expect.__dict__, **other})
        failed = at.check(st, e).failed
        assert failed is not None and failed.what in ("subject AMI", "image id"), (other, failed)
    assert "junit" not in str(st["predicate"]["runDetails"]["byproducts"][0].get("digest"))


@pytest.mark.parametrize(("value", "digest"), [
    ("sha256:" + "a" * 64, {"sha256": "a" * 64}),
    ("a" * 64, {"sha256": "a" * 64}),
    ("sha512:" + "b" * 128, {"sha512": "b" * 128}),
    ("Packer v1.14.2", {"goldenimage-value": "Packer v1.14.2"}),
    ("image:base-1", {"goldenimage-value": "image:base-1"}),
])
def test_digest_of(value: str, digest: dict[str, str]) -> None:
    assert at.digest_of(value) == digest


def test_validation_result_defaults_from_an_older_manifest() -> None:
    assert at.validation_result({"status": "validated"}, None) == {
        "status": "validated", "suites": [], "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
        "junit_sha256": None}

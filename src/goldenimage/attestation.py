"""An image's provenance as data: the in-toto Statement a bake signs, and what a verifier
checks a decoded statement says (pure: no I/O, no keys; `trust` signs and verifies).

The statement (in-toto Statement v1, predicate SLSA provenance v1) is built from the
image's manifest, the record the bake writes anyway, so that what is signed is what the
toolkit itself relies on:

- subject: the artifact. Local: `{name: <image id>/disk.qcow2, digest: {sha256}}`. An AMI:
  `{name: <ami id>, annotations: {region, snapshots}}` plus one subject per snapshot
  (`{name: <snapshot id>, annotations: {kind: snapshot}}`) and the qcow2 it came from, if any.
- buildDefinition.externalParameters: image name, environment, image id, fingerprint.
- buildDefinition.internalParameters: the base identity and the parent (its image id and
  the sha256 of the parent's DSSE envelope bytes: the chain of trust of an image family).
- buildDefinition.resolvedDependencies: every fingerprint input with its digest.
- runDetails.builder: the toolkit and the tools (Packer, Ansible, QEMU) of the bake.
- runDetails.byproducts: the validation result, one descriptor named `VALIDATION`
  (status, suites, check counts, the junit report's sha256).

`check` compares a statement with what the caller is about to use (`Expect`) and returns
every check with its outcome, so that `invoke verify` can print them and a refusal can
name the first that failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .compliance import attested, index_text

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://github.com/goldenimage/goldenimage/bake/v1"
BUILDER_ID = "https://github.com/goldenimage/goldenimage/invoke-bake"
VALIDATION = "goldenimage-validation"  # the byproduct that carries the validation result
COMPLIANCE = "goldenimage-compliance"  # the compliance audit's verdict (compliance.attested)
FILE = "attestation.dsse.json"  # the envelope among an image's files
_DIGEST = re.compile(r"^(?P<algo>[a-z0-9-]+):(?P<hex>[0-9a-f]{32,128})$")


def digest_of(value: str) -> dict[str, str]:
    """A fingerprint input's digest as an in-toto DigestSet (`sha256:<hex>` or bare hex)."""
    m = _DIGEST.match(value)
    if m:
        return {m["algo"]: m["hex"]}
    if re.fullmatch(r"[0-9a-f]{64}", value):
        return {"sha256": value}
    return {"goldenimage-value": value}  # not a digest (a version string, say): kept as it is


def local_subject(image_id: str, artifact: str, sha256: str) -> list[dict[str, Any]]:
    """The subject of a local image: its qcow2 by digest."""
    return [{"name": f"{image_id}/{artifact}", "digest": {"sha256": sha256},
             "annotations": {"kind": "qcow2", "image_id": image_id}}]


def ami_subject(ami: str, region: str, snapshots: list[str], qcow2_sha256: str | None) -> list[dict[str, Any]]:
    """The subject of an AMI: the AMI (its region and snapshots as annotations), each
    snapshot, and the digest of the qcow2 it was registered from (sandbox), where known.
    An AMI has no content digest EC2 would give: its id in a region names it."""
    subject: list[dict[str, Any]] = [{
        "name": ami, "digest": {"goldenimage-ami": f"{region}/{ami}"},
        "annotations": {"kind": "ami", "region": region, "snapshots": sorted(snapshots),
                        **({"qcow2_sha256": qcow2_sha256} if qcow2_sha256 else {})}}]
    subject += [{"name": s, "digest": {"goldenimage-snapshot": f"{region}/{s}"},
                 "annotations": {"kind": "snapshot", "ami": ami}} for s in sorted(snapshots)]
    return subject


def validation_result(manifest: dict[str, Any], junit_sha256: str | None) -> dict[str, Any]:
    """What the statement says of the validation, from the manifest's `validation`."""
    v = manifest.get("validation") or {}
    return {"status": v.get("status", manifest.get("status")), "suites": list(v.get("suites") or []),
            "passed": int(v.get("passed") or 0), "failed": int(v.get("failed") or 0),
            "errors": int(v.get("errors") or 0), "skipped": int(v.get("skipped") or 0),
            "junit_sha256": junit_sha256}


def statement(manifest: dict[str, Any], subject: list[dict[str, Any]], *,
              parent_attestation: str | None, junit_sha256: str | None) -> dict[str, Any]:
    """The in-toto Statement of an image described by its `manifest` (see the module's
    docstring). `parent_attestation`: sha256 of the parent's envelope bytes (None: no
    parent)."""
    tools = manifest.get("tools") or {}
    parent = manifest.get("parent")
    base = manifest.get("base") or {}
    inputs = manifest.get("fingerprint_inputs") or {}
    validation = validation_result(manifest, junit_sha256)
    return {
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"image": manifest.get("name"), "environment": manifest.get("env"),
                                       "image_id": manifest.get("id"), "fingerprint": manifest.get("fingerprint")},
                "internalParameters": {
                    "base": {"identity": base.get("identity"), "source": base.get("source")},
                    "parent": ({"image_id": parent.get("id"), "name": parent.get("name"),
                                "attestation_sha256": parent_attestation}
                               if isinstance(parent, dict) else None),
                },
                "resolvedDependencies": [{"name": name, "digest": digest_of(str(d))}
                                         for name, d in sorted(inputs.items())],
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {k: str(v) for k, v in sorted(tools.items())}},
                "metadata": {"invocationId": manifest.get("id"), "finishedOn": manifest.get("created")},
                "byproducts": [{"name": VALIDATION, "annotations": validation,
                                **({"digest": {"sha256": junit_sha256}} if junit_sha256 else {})},
                               *_compliance_byproduct(manifest)],
            },
        },
    }


def _compliance_byproduct(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    audit = manifest.get("compliance")
    if not isinstance(audit, dict):
        return []
    said = attested(audit)
    return [{"name": COMPLIANCE, "annotations": said,
             **({"digest": {"sha256": said["report_sha256"]}} if said.get("report_sha256") else {})}]


def encode(doc: dict[str, Any]) -> bytes:
    """The statement's bytes (the DSSE payload): canonical enough to sign once."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(payload: bytes) -> dict[str, Any]:
    """A payload back as a statement; ValueError if it is not a JSON object."""
    doc = json.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("the payload is not a JSON object")
    return doc


@dataclass(frozen=True)
class Expect:
    """What the bytes about to be used are, to be compared with what a statement says.

    `sha256`: the local artifact's digest (already checked against its bytes); `ami`,
    `region`, `snapshots`: the AMI's; `parent_attestation`: sha256 of the envelope of the
    parent the image was actually built on (None: it has no parent); `report_sha256`: the
    compliance report kept with the image now (None: none kept)."""

    image_id: str
    name: str
    env: str
    sha256: str | None = None
    ami: str | None = None
    region: str | None = None
    snapshots: tuple[str, ...] = ()
    parent_id: str | None = None
    parent_attestation: str | None = None
    report_sha256: str | None = None


@dataclass(frozen=True)
class Check:
    """One thing a verification looked at: what, whether it held, and what was found."""

    what: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    """Every check of one statement; `failed` is the first that did not hold."""

    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _subject_checks(subject: Any, expect: Expect) -> list[Check]:
    if not isinstance(subject, list) or not subject:
        return [Check("subject", False, "the statement has no subject")]
    checks: list[Check] = []
    if expect.sha256 is not None:
        digests = [_get(s, "digest", "sha256") for s in subject if isinstance(s, dict)]
        named = [d for d in digests if d]
        ok = expect.sha256 in named
        checks.append(Check("subject digest", ok, f"sha256 {expect.sha256}" if ok else
                            f"the artifact has sha256 {expect.sha256}, the statement names "
                            f"{', '.join(named) or 'no sha256'}"))
    if expect.ami is not None:
        amis = [s for s in subject if isinstance(s, dict) and _get(s, "annotations", "kind") == "ami"]
        ami = amis[0] if amis else {}
        found = (ami.get("name"), _get(ami, "annotations", "region"), tuple(_get(ami, "annotations", "snapshots") or ()))
        want = (expect.ami, expect.region, tuple(sorted(expect.snapshots)))
        checks.append(Check("subject AMI", found == want,
                            f"{expect.ami} in {expect.region}, snapshots {', '.join(want[2]) or 'none'}"
                            if found == want else
                            f"the AMI is {expect.ami} in {expect.region} with snapshots "
                            f"{', '.join(want[2]) or 'none'}, the statement names {found[0]} in {found[1]} "
                            f"with snapshots {', '.join(found[2]) or 'none'}"))
    return checks


def _field(what: str, found: Any, want: Any) -> Check:
    ok = found == want
    return Check(what, ok, f"{want}" if ok else f"expected {want!r}, the statement says {found!r}")


def check(doc: dict[str, Any], expect: Expect) -> Verdict:
    """Every check of a decoded (and signature-verified) statement against `expect`: its
    types, its subject, image name, environment and id, that validation passed, and the
    parent's attestation digest."""
    checks = [_field("statement type", doc.get("_type"), STATEMENT_TYPE),
              _field("predicate type", doc.get("predicateType"), PREDICATE_TYPE)]
    checks += _subject_checks(doc.get("subject"), expect)
    params = _get(doc, "predicate", "buildDefinition", "externalParameters") or {}
    checks += [_field("image name", params.get("image"), expect.name),
               _field("environment", params.get("environment"), expect.env),
               _field("image id", params.get("image_id"), expect.image_id)]
    byproducts = _get(doc, "predicate", "runDetails", "byproducts") or []
    validation = next((b.get("annotations") or {} for b in byproducts
                       if isinstance(b, dict) and b.get("name") == VALIDATION), None)
    if validation is None:
        checks.append(Check("validation", False, "the statement records no validation"))
    else:
        ok = validation.get("status") == "validated" and not validation.get("failed") and not validation.get("errors")
        checks.append(Check("validation", ok,
                            f"{validation.get('passed', 0)} passed, {validation.get('failed', 0)} failed, "
                            f"{validation.get('errors', 0)} errors ({validation.get('status')})"))
    audit = next((b.get("annotations") or {} for b in byproducts
                  if isinstance(b, dict) and b.get("name") == COMPLIANCE), None)
    if audit is not None:  # an image validated before the audit gate records none
        checks.append(Check("compliance", audit.get("ok") is True,
                            f"{index_text(str(audit.get('scanner')), audit.get('score'), audit.get('min_score'))}: "
                            f"{'passed' if audit.get('ok') is True else 'failed'}"))
        if expect.report_sha256 is not None:  # the report kept is the one the audit wrote
            said = audit.get("report_sha256")
            checks.append(Check("compliance report", said == expect.report_sha256,
                                f"sha256 {said}" if said == expect.report_sha256 else
                                f"the report kept has sha256 {expect.report_sha256}, the statement names {said}"))
    parent = _get(doc, "predicate", "buildDefinition", "internalParameters", "parent")
    if expect.parent_id is None:
        checks.append(Check("parent", parent is None, "no parent" if parent is None else
                            f"the statement names parent {_get(parent, 'image_id')}, the image has none"))
    else:
        found = (_get(parent, "image_id"), _get(parent, "attestation_sha256"))
        want = (expect.parent_id, expect.parent_attestation)
        checks.append(Check("parent attestation", found == want,
                            f"{want[0]} (envelope sha256 {want[1]})" if found == want else
                            f"the parent used is {want[0]} with envelope sha256 {want[1]}, the statement "
                            f"names {found[0]} with {found[1]}"))
    return Verdict(checks)

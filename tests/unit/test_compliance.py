"""The compliance gate's core: a Lynis report read, judged by an image's settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from goldenimage import attestation, compliance
from goldenimage.errors import ConfigError
from goldenimage.settings import load_environment

from .test_settings import write

# lines of a real report (lynis 3.0.8, group ssh, in a validation boot of the web image)
REPORT = """\
# Lynis Report
report_version_major=1
lynis_version=3.0.8
test_group=ssh authentication
suggestion[]=LYNIS|This release is more than 4 months old.|-|-|
suggestion[]=SSH-7408|Consider hardening SSH configuration|AllowTcpForwarding (set YES to NO)|-|
details[]=SSH-7408|sshd|desc:sshd option AllowTcpForwarding;field:AllowTcpForwarding;prefval:NO;value:YES;|
warning[]=AUTH-9308|No password set for single mode|-|-|
suggestion[]=SSH-7408|Consider hardening SSH configuration|Compression (set YES to NO)|-|
slow_test[]=SSH-7408,10.208730
hardening_index=64
tests_executed=SSH-7440|SSH-7408|SSH-7406|AUTH-9308|AUTH-9262|CORE-1000|
tests_skipped=AUTH-9218|
finish=true
"""


def test_a_report_is_read() -> None:
    audit = compliance.parse_report(REPORT)
    assert audit.version == "3.0.8" and audit.score == 64
    assert audit.groups == ("ssh", "authentication")
    assert "SSH-7440" in audit.executed and audit.skipped == ("AUTH-9218",)
    assert [f.test for f in audit.warnings] == ["AUTH-9308"]
    # the release-age note is no test's finding
    assert [f.details for f in audit.suggestions] == ["AllowTcpForwarding (set YES to NO)", "Compression (set YES to NO)"]


def test_what_is_not_a_report_is_refused() -> None:
    with pytest.raises(ValueError, match="not a lynis report"):
        compliance.parse_report("Fatal error: can't find plugin directory\n")


def test_no_policy_passes_whatever_the_score() -> None:
    assert compliance.evaluate(compliance.parse_report(REPORT), None, []) == []


@pytest.mark.parametrize(("floor", "failed"), [(64, False), (65, True), (0, False), (100, True)])
def test_the_minimum_score(floor: int, failed: bool) -> None:
    failures = compliance.evaluate(compliance.parse_report(REPORT), floor, [])
    assert bool(failures) is failed
    if failed:
        assert failures == [f"compliance: lynis hardening index 64 is under the minimum {floor}"]


def test_a_report_without_an_index_fails_a_minimum() -> None:
    audit = compliance.parse_report(REPORT.replace("hardening_index=64\n", ""))
    assert audit.score is None
    assert compliance.evaluate(audit, 10, []) == ["compliance: the lynis report has no hardening index (minimum 10)"]
    assert compliance.evaluate(audit, None, []) == []


def test_tests_that_must_pass() -> None:
    audit = compliance.parse_report(REPORT)
    assert compliance.evaluate(audit, None, ["SSH-7440", "SSH-7406", "AUTH-9262"]) == []
    failures = compliance.evaluate(audit, None, ["SSH-7408", "AUTH-9308", "KRNL-6000"])
    assert failures == [
        "compliance: SSH-7408 must pass: suggestion SSH-7408: Consider hardening SSH configuration "
        "(AllowTcpForwarding (set YES to NO))",
        "compliance: SSH-7408 must pass: suggestion SSH-7408: Consider hardening SSH configuration "
        "(Compression (set YES to NO))",
        "compliance: AUTH-9308 must pass: warning AUTH-9308: No password set for single mode",
        # a test the chosen groups did not run cannot pass
        "compliance: KRNL-6000 must pass but the audit did not run it (groups: ssh, authentication)",
    ]


def test_the_top_findings_put_warnings_first() -> None:
    top = compliance.top(compliance.parse_report(REPORT), 2)
    assert top == ["warning AUTH-9308: No password set for single mode",
                   "suggestion SSH-7408: Consider hardening SSH configuration "
                   "(AllowTcpForwarding (set YES to NO); Compression (set YES to NO))"]
    assert len(compliance.top(compliance.parse_report(REPORT), 1)) == 1


def _entry(failures: list[str]) -> dict[str, object]:
    audit = compliance.parse_report(REPORT)
    return compliance.as_manifest(audit, min_score=60, must_pass=["SSH-7440"], failures=failures,
                                  report="lynis-report.dat", report_sha256="ab" * 32, seconds=41.5)


def test_the_manifest_and_the_attestation_say_the_verdict() -> None:
    entry = _entry([])
    assert entry["ok"] is True and entry["score"] == 64 and entry["tests_executed"] == 6
    said = compliance.attested(entry)
    assert said == {"scanner": "lynis", "version": "3.0.8", "groups": ["ssh", "authentication"], "score": 64,
                    "min_score": 60, "must_pass": ["SSH-7440"], "ok": True, "warned": ["AUTH-9308"],
                    "suggested": ["SSH-7408"], "report_sha256": "ab" * 32}


def _statement(entry: dict[str, object] | None) -> dict[str, object]:
    manifest = {"name": "web", "env": "local", "id": "web-1", "status": "validated",
                "validation": {"status": "validated", "passed": 3}, **({"compliance": entry} if entry else {})}
    return attestation.statement(manifest, attestation.local_subject("web-1", "disk.qcow2", "cd" * 32),
                                 parent_attestation=None, junit_sha256=None)


def _expect() -> attestation.Expect:
    return attestation.Expect(image_id="web-1", name="web", env="local", sha256="cd" * 32)


def test_verification_checks_the_audit_verdict() -> None:
    passed = attestation.check(_statement(_entry([])), _expect())
    assert passed.failed is None and any(c.what == "compliance" and c.ok for c in passed.checks)
    failed = attestation.check(_statement(_entry(["compliance: lynis hardening index 64 is under the minimum 70"])),
                               _expect())
    assert failed.failed is not None and failed.failed.what == "compliance"
    assert failed.failed.detail == "lynis hardening index 64 (minimum 60): failed"
    # the report's digest is the byproduct's
    doc = _statement(_entry([]))
    byproduct = next(b for b in doc["predicate"]["runDetails"]["byproducts"]  # type: ignore[index]
                     if b["name"] == attestation.COMPLIANCE)
    assert byproduct["digest"] == {"sha256": "ab" * 32}


def test_an_image_attested_before_the_gate_still_verifies() -> None:
    verdict = attestation.check(_statement(None), _expect())
    assert verdict.failed is None and not any(c.what == "compliance" for c in verdict.checks)


def test_the_default_audit_and_an_image_own(project: Path) -> None:
    write(project, "images:\n  web:\n    playbook: playbooks/web.yml\n    compliance: {groups: [ssh], min_score: 60,"
                   " must_pass: [SSH-7440]}\n  base: {playbook: playbooks/web.yml}\n")
    env = load_environment("local", project)
    assert env.compliance("web").groups == ["ssh"] and env.compliance("web").min_score == 60
    assert env.compliance("base").groups == list(compliance.DEFAULT_GROUPS) and env.compliance("base").min_score is None
    assert env.compliance("gone") == env.compliance("base")  # an image no longer in the settings


@pytest.mark.parametrize(("value", "message"), [
    ("{groups: [sssh]}", "field images.web.compliance.groups: Value error, unknown lynis test group 'sssh'"),
    ("{groups: []}", "field images.web.compliance.groups"),
    ("{min_score: 101}", "field images.web.compliance.min_score"),
    ("{must_pass: [ssh-7408]}", "field images.web.compliance.must_pass: Value error, 'ssh-7408' is not a lynis test id"),
    ("{min_scor: 3}", "field images.web.compliance.min_scor"),
])
def test_bad_compliance_settings_name_the_field(project: Path, value: str, message: str) -> None:
    write(project, f"images:\n  web:\n    playbook: playbooks/web.yml\n    compliance: {value}\n")
    with pytest.raises(ConfigError) as exc:
        load_environment("local", project)
    assert str(exc.value).startswith("inventories/local/goldenimage.yml: ") and message in str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_verification_compares_the_report_kept_with_the_attested_digest() -> None:
    doc = _statement(_entry([]))
    kept = attestation.check(doc, dataclasses.replace(_expect(), report_sha256="ab" * 32))
    assert kept.failed is None and [c.ok for c in kept.checks if c.what == "compliance report"] == [True]
    edited = attestation.check(doc, dataclasses.replace(_expect(), report_sha256="ef" * 32))
    assert edited.failed is not None and edited.failed.what == "compliance report"
    assert edited.failed.detail == f"the report kept has sha256 {'ef' * 32}, the statement names {'ab' * 32}"
    # none kept (an AMI audited before reports were kept): nothing to compare, nothing refused
    assert all(c.what != "compliance report" for c in attestation.check(doc, _expect()).checks)

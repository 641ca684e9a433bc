"""The AMI validation's check (`aws.validate.TestinfraCheck`) runs the compliance audit after
the image checks over the same SSH connection, and its verdict joins theirs. Moto boots no
instance, so the SSH side (testinfra, the SBOM read, lynis) is replaced here by recorders;
the audit itself is tested for real in tests/integration/test_lynis.py and the e2e bake."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from goldenimage.adapters import imagefacts, lynis, testinfra
from goldenimage.aws import validate
from goldenimage.progress import Reporter
from goldenimage.settings import ComplianceSpec


def _check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, suite_ok: bool, audit_ok: bool,
           spec: ComplianceSpec | None) -> tuple[validate.CheckResult, list[str]]:
    calls: list[str] = []
    junit = tmp_path / "junit.xml"

    def run_suite(*a: Any, **k: Any) -> testinfra.SuiteResult:
        calls.append("checks")
        return testinfra.SuiteResult(passed=5, failed=0 if suite_ok else 1, errors=0, skipped=0,
                                     failures=[] if suite_ok else ["test_nginx: failed"], junit=junit)

    def audit_image(config: Path, host: str, got: ComplianceSpec, work: Path, reporter: Reporter) -> dict[str, Any]:
        calls.append(f"audit {host} {','.join(got.groups)} {config.name}")
        return {"ok": audit_ok, "failures": [] if audit_ok else ["compliance: lynis hardening index 50 is under "
                                                                 "the minimum 60"], "score": 50}

    monkeypatch.setattr(validate, "wait_for_ssh", lambda *a, **k: None)
    monkeypatch.setattr(testinfra, "run_suite", run_suite)
    monkeypatch.setattr(imagefacts, "read", lambda run: (calls.append("sbom") or [], []))
    monkeypatch.setattr(lynis, "audit_image", audit_image)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    check = validate.TestinfraCheck([tmp_path], root=tmp_path, expect={"image_name": "web"}, work=tmp_path / "w",
                                    compliance=spec)
    target = validate.RemoteTarget("i-1", "192.0.2.10", "admin", key, "ami-1")
    return check(target, Reporter(quiet=True)), calls


def test_the_audit_runs_after_the_checks_and_its_verdict_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, calls = _check(tmp_path, monkeypatch, suite_ok=True, audit_ok=True, spec=ComplianceSpec(groups=["ssh"]))
    assert calls == ["checks", "sbom", "audit target ssh ssh_config"]
    assert result.passed and result.details["compliance"]["score"] == 50


@pytest.mark.parametrize(("suite_ok", "audit_ok"), [(True, False), (False, False), (False, True)])
def test_either_verdict_fails_the_ami_with_every_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        suite_ok: bool, audit_ok: bool) -> None:
    result, _ = _check(tmp_path, monkeypatch, suite_ok=suite_ok, audit_ok=audit_ok, spec=ComplianceSpec())
    assert not result.passed
    assert ("test_nginx: failed" in result.failures) is (not suite_ok)
    assert any(f.startswith("compliance:") for f in result.failures) is (not audit_ok)


def test_no_audit_without_a_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, calls = _check(tmp_path, monkeypatch, suite_ok=True, audit_ok=False, spec=None)
    assert result.passed and "compliance" not in result.details and calls == ["checks", "sbom"]

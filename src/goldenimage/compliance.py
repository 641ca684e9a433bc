"""The compliance audit as a validation gate (pure: text in, verdicts out).

A Lynis report (`key=value` lines, `report.dat`) is read into an `Audit`: the hardening
index, the tests it ran and skipped, and its warnings and suggestions, each under its test
id. An image's `compliance:` settings (`settings.ComplianceSpec`) say what it must reach:
a minimum hardening index and/or tests that must pass. A test passes when the audit ran it
and it left neither a warning nor a suggestion; a test the chosen groups did not run fails
the gate (the gate cannot be met by not looking).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SCANNER = "lynis"
TEST_ID = re.compile(r"^[A-Z][A-Z0-9]{1,9}-[0-9]{4}$")
# Lynis's test groups (its include/tests_<group> files) that apply to a Linux server image
GROUPS = (
    "accounting", "authentication", "banners", "boot_services", "containers", "crypto", "databases", "dns",
    "file_integrity", "file_permissions", "filesystems", "firewalls", "hardening", "homedirs",
    "insecure_services", "kernel", "kernel_hardening", "ldap", "logging", "mac_frameworks", "mail_messaging",
    "malware", "memory_processes", "nameservices", "networking", "php", "ports_packages", "printers_spoolers",
    "scheduling", "shells", "snmp", "squid", "ssh", "storage", "storage_nfs", "system_integrity", "time",
    "tooling", "usb", "virtualization", "webservers",
)
# the default scope: what an image's own configuration decides (sshd, accounts and PAM,
# shells), at a cost a TCG boot can afford: 51-58 s measured (bench/README has each group's
# cost; kernel_hardening adds ~18 s)
DEFAULT_GROUPS = ("ssh", "authentication", "shells")


@dataclass(frozen=True)
class Finding:
    test: str
    kind: str  # "warning" | "suggestion"
    text: str
    details: str = ""

    def line(self) -> str:
        extra = f" ({self.details})" if self.details and self.details != "-" else ""
        return f"{self.kind} {self.test}: {self.text}{extra}"


@dataclass(frozen=True)
class Audit:
    version: str
    score: int | None  # the hardening index, 0-100
    executed: tuple[str, ...]
    skipped: tuple[str, ...]
    findings: tuple[Finding, ...] = field(default=())
    groups: tuple[str, ...] = ()

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "warning"]

    @property
    def suggestions(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "suggestion"]

    def failed(self, test: str) -> list[Finding]:
        return [f for f in self.findings if f.test == test]


def parse_report(text: str) -> Audit:
    """A Lynis report.dat. ValueError when it is not one (no tests_executed line)."""
    values: dict[str, str] = {}
    findings: list[Finding] = []
    for raw in text.splitlines():
        key, sep, value = raw.partition("=")
        if not sep or raw.startswith("#"):
            continue
        if key in ("warning[]", "suggestion[]"):
            parts = value.split("|")
            test = parts[0].strip()
            if TEST_ID.match(test):
                findings.append(Finding(test, key[:-2], parts[1].strip() if len(parts) > 1 else "",
                                        parts[2].strip() if len(parts) > 2 else ""))
        else:
            values[key] = value
    if "tests_executed" not in values:
        raise ValueError("not a lynis report: no tests_executed line")
    index = values.get("hardening_index", "")
    return Audit(
        version=values.get("lynis_version", ""),
        score=int(index) if index.isdigit() else None,
        executed=tuple(t for t in values["tests_executed"].split("|") if t),
        skipped=tuple(t for t in values.get("tests_skipped", "").split("|") if t),
        findings=tuple(findings),
        groups=tuple(values.get("test_group", "").split()),
    )


REPORT_FILE = "lynis-report.dat"  # the audit's full report, kept with the image (beside junit.xml)


def index_text(scanner: str, score: Any, min_score: int | None) -> str:
    """A hardening index as every output line says it: `lynis hardening index 75 (minimum 60)`."""
    floor = f" (minimum {min_score})" if min_score is not None else ""
    return f"{scanner} hardening index {score}{floor}"


def evaluate(audit: Audit, min_score: int | None, must_pass: list[str] | tuple[str, ...]) -> list[str]:
    """What keeps the image from passing the gate, one line each (empty: it passes)."""
    failures: list[str] = []
    if min_score is not None:
        if audit.score is None:
            failures.append(f"compliance: the lynis report has no hardening index (minimum {min_score})")
        elif audit.score < min_score:
            failures.append(f"compliance: lynis hardening index {audit.score} is under the minimum {min_score}")
    ran = set(audit.executed)
    for test in must_pass:
        if test not in ran:
            failures.append(f"compliance: {test} must pass but the audit did not run it "
                            f"(groups: {', '.join(audit.groups) or 'all'})")
            continue
        for finding in audit.failed(test):
            failures.append(f"compliance: {test} must pass: {finding.line()}")
    return failures


def top(audit: Audit, n: int = 5) -> list[str]:
    """The findings to show first: warnings, then suggestions, in the report's order, one
    line per test and text (a test's several details joined on it)."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for f in audit.warnings + audit.suggestions:
        details = grouped.setdefault((f.kind, f.test, f.text), [])
        if f.details and f.details != "-":
            details.append(f.details)
    return [Finding(test, kind, text, "; ".join(details)).line()
            for (kind, test, text), details in list(grouped.items())[:n]]


def as_manifest(audit: Audit, *, min_score: int | None, must_pass: list[str] | tuple[str, ...],
                failures: list[str], report: str, report_sha256: str, seconds: float) -> dict[str, Any]:
    """The manifest's `compliance` (and, without the findings' texts, the attestation's)."""
    return {
        "scanner": SCANNER, "version": audit.version, "groups": list(audit.groups),
        "score": audit.score, "min_score": min_score, "must_pass": list(must_pass),
        "ok": not failures, "failures": failures,
        "tests_executed": len(audit.executed),
        "warnings": [{"test": f.test, "text": f.text, "details": f.details} for f in audit.warnings],
        "suggestions": [{"test": f.test, "text": f.text, "details": f.details} for f in audit.suggestions],
        "report": report, "report_sha256": report_sha256, "seconds": seconds,
    }


def attested(compliance: dict[str, Any]) -> dict[str, Any]:
    """What the attestation says of the audit: the verdict, the score and the tests that
    warned or suggested, and the report's digest."""
    return {
        "scanner": compliance.get("scanner"), "version": compliance.get("version"),
        "groups": compliance.get("groups"), "score": compliance.get("score"),
        "min_score": compliance.get("min_score"), "must_pass": compliance.get("must_pass"),
        "ok": compliance.get("ok"),
        "warned": sorted({w["test"] for w in compliance.get("warnings") or []}),
        "suggested": sorted({s["test"] for s in compliance.get("suggestions") or []}),
        "report_sha256": compliance.get("report_sha256"),
    }

"""testinfra: run an image's suite directories (`tests/image/common/`, `tests/image/<image>/`)
against a booted VM over SSH."""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_json
from ..progress import Reporter
from . import proc


@dataclass(frozen=True)
class SuiteResult:
    passed: int
    failed: int
    errors: int
    skipped: int
    failures: list[str]
    junit: Path

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "errors": self.errors,
                "skipped": self.skipped, "failures": self.failures}


def run_suite(
    suites: Sequence[Path], host: str, ssh_config: Path, expect: dict[str, Any], work: Path,
    reporter: Reporter, *, root: Path, workers: int = 2,
) -> SuiteResult:
    """Run pytest-testinfra on the suite directories `suites` (one pytest run, from the
    project `root`) against `host` of `ssh_config` (a booted VM or a launched instance; a
    full testinfra host spec such as `local://` is taken as it is);
    expectations reach the suite as a JSON file. With `workers` > 1 the checks run in that
    many pytest-xdist processes, sharing the SSH control connection: each check mostly waits
    for its commands in the guest, and a 2-vCPU guest under TCG ran the web suite in 17 s
    this way instead of 24 s (3 or 4 processes were slower again)."""
    if not suites:
        raise ValueError("run_suite needs at least one suite directory")
    expect_file = work / "expect.json"
    atomic_write_json(expect_file, expect)
    junit = work / "junit.xml"
    argv = [
        sys.executable, "-m", "pytest", *(str(s) for s in suites),
        f"--hosts={host if '://' in host else f'ssh://{host}'}",
        f"--ssh-config={ssh_config}", "--sudo", f"--junitxml={junit}", f"--rootdir={root}",
        "-p", "no:cacheprovider", "-q", "-rN", "--color=no", "-o", "addopts=",
        *(["-n", str(workers)] if workers > 1 else ["-p", "no:xdist"]),
    ]
    env = {**os.environ, "GOLDENIMAGE_EXPECT": str(expect_file)}

    def line(ln: str) -> None:
        if ln.strip():
            reporter.step(f"testinfra: {ln.strip()[:100]}")

    res = proc.run(argv, env=env, cwd=root, on_line=line)
    if not junit.is_file():
        tail = "; ".join(x.strip() for x in res.lines[-3:] if x.strip())
        return SuiteResult(0, 0, 1, 0, [f"the image suite did not run: {tail}"], junit)
    return parse_junit(junit)


def parse_junit(path: Path) -> SuiteResult:
    root = ET.parse(path).getroot()
    passed = failed = errors = skipped = 0
    failures: list[str] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        bad = case.find("failure")
        err = case.find("error")
        if bad is not None or err is not None:
            node = bad if bad is not None else err
            assert node is not None
            msg = (node.get("message") or node.text or "").strip().splitlines()
            failures.append(f"{name}: {msg[0][:200] if msg else 'failed'}")
            if bad is not None:
                failed += 1
            else:
                errors += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    if passed + failed + errors == 0:
        failures.append("no checks ran: the image suite is empty")
    return SuiteResult(passed, failed, errors, skipped, failures, path)

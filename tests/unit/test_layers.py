"""The package's layers hold: `lint-imports` checks the contracts in pyproject.toml
(the pure core does no I/O, adapters import no command module, no import cycles)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage.models import ImageRecord
from goldenimage.plan import plan

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(("hit", "force", "action", "reason"), [
    (None, False, "build", "no validated web image has fingerprint 0123456789ab"),
    ("web-1", False, "skip", "up to date: web-1"),
    ("web-1", True, "build", "--force: rebuild even if a validated image has the fingerprint"),
    (None, True, "build", "--force: rebuild even if a validated image has the fingerprint"),
])
def test_bake_plan(hit: str | None, force: bool, action: str, reason: str) -> None:
    rec = ImageRecord(hit, "web", "local", "0123456789abcdef", "t", "validated", "disk.qcow2") if hit else None
    p = plan("web", "0123456789abcdef", rec, force)
    assert (p.action, p.reason) == (action, reason)
    assert p.image == (rec if action == "skip" else None)

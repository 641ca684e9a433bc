"""What an up-to-date bake does not pay: a second parse of the templates, a second ask of
the tool versions, the imports only a build needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage import fingerprint as fp
from goldenimage.settings import load_environment
from tests.unit.fp_helpers import EXTRA, count_hcl_parses, make_project

ROOT = Path(__file__).resolve().parents[2]


def test_each_template_is_parsed_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "proj")
    env = load_environment("local", root)
    parsed = count_hcl_parses(monkeypatch)  # this test's own cache
    templates = sorted(p.relative_to(root).as_posix() for p in (root / "packer").iterdir()
                       if p.name.endswith(fp.HCL_SUFFIXES))
    web = fp.compute(fp.collect(root, env, "web", EXTRA))
    fp.collect(root, env, "other", EXTRA)
    assert sorted(parsed) == templates  # two images, one parse each
    # an edited template is parsed again (the cache is keyed by its text), and counts
    src = root / "packer" / "sources.pkr.hcl"
    src.write_text(src.read_text().replace("cpus         = var.cpus", "cpus         = 4"))
    assert fp.compute(fp.collect(root, env, "web", EXTRA)) != web
    assert parsed[len(templates):] == ["packer/sources.pkr.hcl"]


def test_a_bake_that_skips_imports_nothing_only_a_build_needs() -> None:
    code = ("import sys; import goldenimage.family, goldenimage.targets.local; "
            "print(' '.join(m for m in ('cyclonedx', 'hcl2', 'lark') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert res.stdout.strip() == ""

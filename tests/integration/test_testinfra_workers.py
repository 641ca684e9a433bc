"""run_suite for real: pytest-testinfra against this machine (`local://`), the checks of two
suite directories in two xdist processes, and in one, come back as one JUnit result with the
failure named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from goldenimage.adapters import testinfra
from goldenimage.progress import Reporter

pytestmark = pytest.mark.integration


def _suites(root: Path) -> list[Path]:
    common, own = root / "tests/image/common", root / "tests/image/web"
    for d in (common, own):
        d.mkdir(parents=True)
    (common / "test_common.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', ['0', '1', '2', '3', '4', '5'])\n"
        "def test_sh_runs(host, n):\n    assert host.run('test %s -ge 0', n).rc == 0\n")
    (own / "test_web.py").write_text(
        "def test_root_is_a_directory(host):\n    assert host.file('/').is_directory\n\n"
        "def test_this_one_fails(host):\n    assert host.file('/no/such/file').exists\n")
    return [common, own]


@pytest.mark.parametrize("workers", [2, 1])
def test_checks_in_worker_processes_come_back_as_one_result(tmp_path: Path, workers: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # run_suite always asks for --sudo; this machine runs the checks as root already
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    suites = _suites(tmp_path / "project")
    work = tmp_path / "work"
    work.mkdir()
    res = testinfra.run_suite(suites, "local://", tmp_path / "ssh_config", {"image_name": "web"}, work,
                              Reporter(quiet=True), root=tmp_path / "project", workers=workers)
    assert (res.passed, res.failed, res.errors) == (7, 1, 0), res.failures
    assert len(res.failures) == 1 and "test_web::test_this_one_fails" in res.failures[0] and not res.ok

"""The command contract: exit codes, one `error:` line, one JSON document with --json."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from goldenimage.cli import run
from goldenimage.errors import BuildFailed, ConfigError, NotFoundError
from goldenimage.progress import Reporter


def call(work: Any, **kw: Any) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run(work, **kw)
    return int(exc.value.code or 0), "", ""


@pytest.mark.parametrize(("error", "code"), [
    (ConfigError("inventories/x/goldenimage.yml: field target: bad"), 2),
    (NotFoundError("unknown image id 'web-1'"), 2),
    (BuildFailed("packer build failed: boom"), 1),
    (KeyboardInterrupt(), 1),
])
def test_errors_map_to_exit_codes_and_one_line(error: BaseException, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    def work(r: Reporter) -> dict[str, Any]:
        raise error

    assert call(work)[0] == code
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


@pytest.mark.parametrize(("error", "doc", "line"), [
    (ConfigError("bad value"), {"ok": False, "error": "bad value", "exit_code": 2}, "error: bad value"),
    # a bug too: a nightly job or a `bake --all` worker reads the result from stdout, whatever happened
    (ZeroDivisionError("oops"), {"ok": False, "error": "internal error: ZeroDivisionError: oops", "exit_code": 1},
     "error: internal error: ZeroDivisionError: oops (run with --debug)"),
])
def test_json_mode_prints_one_document_even_on_error(error: Exception, doc: dict[str, Any], line: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def work(r: Reporter) -> dict[str, Any]:
        raise error

    assert call(work, json_out=True)[0] == doc["exit_code"]
    out, err = capsys.readouterr()
    assert json.loads(out) == doc
    assert err.strip().splitlines() == [line]


def test_success_and_result_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert call(lambda r: {"x": 1}, json_out=True)[0] == 0
    assert json.loads(capsys.readouterr().out) == {"x": 1, "ok": True}
    assert call(lambda r: {"x": 1, "exit_code": 1}, human=lambda res: [f"x={res['x']}"])[0] == 1
    assert capsys.readouterr().out == "x=1\n"


def test_a_bug_is_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def work(r: Reporter) -> dict[str, Any]:
        raise ZeroDivisionError("oops")

    assert call(work)[0] == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: internal error: ZeroDivisionError: oops")


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def work(r: Reporter) -> dict[str, Any]:
        raise ConfigError("bad")

    call(work, debug=True)
    assert "Traceback" in capsys.readouterr().err


def test_closed_pipe_is_not_a_traceback() -> None:
    code = ("from goldenimage.cli import run\n"
            "run(lambda r: {'rows': list(range(100000))}, json_out=True)\n")
    p = subprocess.Popen(f"{sys.executable} -c \"{code}\" | head -c 10", shell=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert out.startswith("{")
    assert "Traceback" not in err and "BrokenPipe" not in err

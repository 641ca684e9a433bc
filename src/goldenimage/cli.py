"""The one place where results become output and errors become exit codes.

Tasks in tasks.py call `run(...)` with a function that does the work and returns a result
dict. With `--json` that dict is the single JSON document on stdout; otherwise `human`
turns it into lines. A GoldenImageError becomes one `error:` line and its exit code; any
other exception is a bug and shows its traceback only with `--debug`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

from .errors import GoldenImageError, Interrupted
from .progress import Reporter

Result = dict[str, Any]


def _emit(text: str, stream: TextIO) -> None:
    """Print, surviving a reader that went away (`invoke images --json | head`)."""
    try:
        print(text, file=stream)
        stream.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(
    work: Callable[[Reporter], Result],
    *,
    json_out: bool = False,
    debug: bool = False,
    human: Callable[[Result], list[str]] | None = None,
) -> None:
    """Run one task's work; exit the process with the contract's exit code."""
    signal.signal(signal.SIGTERM, _sigterm)
    reporter = Reporter()
    code = 0
    result: Result | None = None
    try:
        try:
            result = work(reporter)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: stopped at a safe point and cleaned up") from None
    except GoldenImageError as exc:
        code = exc.exit_code
        if debug:
            traceback.print_exc()
        result = {"ok": False, "error": exc.message, "exit_code": code, **exc.result}
        if json_out:
            _emit(json.dumps(result, indent=2, sort_keys=True, default=str), sys.stdout)
        _emit(f"error: {exc.message}", sys.stderr)
        sys.exit(code)
    except Exception as exc:  # a bug: say so in one line, the traceback only when asked
        if debug:
            traceback.print_exc()
        _emit(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug)", sys.stderr)
        sys.exit(1)
    assert result is not None
    code = int(result.pop("exit_code", 0))
    result.setdefault("ok", code == 0)
    if json_out:
        _emit(json.dumps(result, indent=2, sort_keys=True, default=str), sys.stdout)
    else:
        lines = human(result) if human else [json.dumps(result, indent=2, default=str)]
        _emit("\n".join(lines), sys.stdout)
    sys.exit(code)

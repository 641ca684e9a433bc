"""The one place where results become output and errors become exit codes.

Tasks in tasks.py call `run(...)` with a function that does the work and returns a result
dict. With `--json` that dict is the single JSON document on stdout; otherwise `human`
turns it into lines. A GoldenImageError becomes one `error:` line and its exit code; any
other exception is a bug and shows its traceback only with `--debug`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TextIO

from .errors import GoldenImageError, Interrupted, internal_error
from .progress import Reporter

Result = dict[str, Any]
Work = Callable[[Reporter], Result]


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


def _fail(doc: Result, line: str, code: int, *, json_out: bool, debug: bool) -> NoReturn:
    """A failed task: its traceback when asked, one JSON document with --json, one `error:`
    line, exit `code`."""
    if debug:
        traceback.print_exc()
    if json_out:
        _emit(json.dumps({"ok": False, **doc}, indent=2, sort_keys=True, default=str), sys.stdout)
    _emit(line, sys.stderr)
    sys.exit(code)


def _remember_on_this_host() -> None:
    """Templates' digests are kept between commands (adapters.hostcache): a command that
    builds nothing does not parse the templates again."""
    from . import fingerprint
    from .adapters.hostcache import HclDigests

    fingerprint.keep_hcl_digests(HclDigests())


def run(
    work: Callable[[Reporter], Result],
    *,
    json_out: bool = False,
    debug: bool = False,
    human: Callable[[Result], list[str]] | None = None,
) -> None:
    """Run one task's work; exit the process with the contract's exit code."""
    signal.signal(signal.SIGTERM, _sigterm)
    _remember_on_this_host()
    reporter = Reporter()
    result: Result | None = None
    try:
        try:
            result = work(reporter)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: stopped at a safe point and cleaned up") from None
    except GoldenImageError as exc:
        _fail({"error": exc.message, "exit_code": exc.exit_code, **exc.result}, f"error: {exc.message}",
              exc.exit_code, json_out=json_out, debug=debug)
    except Exception as exc:  # a bug: say so in one line, the traceback only when asked
        message = internal_error(exc)
        # with --json a nightly job (or a bake --all worker) still reads one document
        _fail({"error": message, "exit_code": 1}, f"error: {message} (run with --debug)", 1,
              json_out=json_out, debug=debug)
    assert result is not None
    code = int(result.pop("exit_code", 0))
    result.setdefault("ok", code == 0)
    if json_out:
        _emit(json.dumps(result, indent=2, sort_keys=True, default=str), sys.stdout)
    else:
        lines = human(result) if human else [json.dumps(result, indent=2, default=str)]
        _emit("\n".join(lines), sys.stdout)
    sys.exit(code)


COMMON_HELP = {"env": "environment: a directory under inventories/ (default: the goldenimage.env setting)",
               "json": "print one JSON document", "debug": "show tracebacks"}


def command(human: str, *, name: str | None = None, default_env: str = "env",
            positional: list[str] | None = None, **help: str) -> Callable[[Callable[..., Work]], Any]:
    """An Invoke task whose body returns the work (a function of the Reporter) for `run`.

    The task gets the options every task has: --env (default: `goldenimage.<default_env>`
    of Invoke's configuration, which tasks.py sets with `ns.configure` and `invoke.yaml` or
    `INVOKE_GOLDENIMAGE_ENV` override), --json and --debug. `human` names the formatter of
    the result ("module:function"), imported when the task runs.
    """
    from invoke.tasks import task

    def decorate(body: Callable[..., Work]) -> Any:
        sig = inspect.signature(body)
        takes_env = "env" in sig.parameters
        own = [p for p in sig.parameters.values() if p.name != "env"]
        common = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
                  for n, d in (("env", None), ("json", False), ("debug", False))]

        @functools.wraps(body)
        def wrapper(c: Any, *, env: str | None = None, json: bool = False, debug: bool = False,
                    **options: Any) -> None:
            env = env or c.config.goldenimage[default_env]
            work = body(c, env=env, **options) if takes_env else body(c, **options)
            module, func = human.split(":")
            run(work, json_out=json, debug=debug, human=getattr(importlib.import_module(module), func))

        wrapper.__signature__ = sig.replace(parameters=[*own, *common])  # type: ignore[attr-defined]
        return task(wrapper, name=name, help={**COMMON_HELP, **help}, positional=positional or [])

    return decorate

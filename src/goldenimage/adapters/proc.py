"""Child processes: streamed output, and no orphan left behind when we are interrupted.

Every child runs in its own session (process group). On KeyboardInterrupt (SIGINT, or
SIGTERM which the CLI turns into one) the whole group is asked to stop with the child's
preferred signal (Packer cleans up its VM and output on SIGINT), given a grace period,
then killed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingToolError, OperationFailed

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Linux: the child gets SIGTERM if we die, even by SIGKILL (Packer then cleans up)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def processes_mentioning(text: str) -> list[int]:
    """Pids of the processes whose command line contains `text` (e.g. a work directory)."""
    me = os.getpid()
    pids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if text.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_processes_mentioning(text: str) -> list[int]:
    """SIGKILL what is left of a dead run: every process whose command line names `text`."""
    pids = processes_mentioning(text)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    lines: list[str]

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def venv_tool(name: str) -> str:
    """A tool of this Python's environment (ansible-playbook, ansible-galaxy, ansible-lint
    beside the interpreter), else the name for PATH to resolve."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def which(tool: str, hint: str = "") -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingToolError(
            f"{tool} not found on PATH: run `invoke setup`" + (f" (or install {hint})" if hint else "")
        )
    return path


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Stop a child's whole process group: `sig`, wait up to `grace` seconds, then SIGKILL."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of a finished leader
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    grace: float = 30.0,
    keep: int = 400,
    check: bool = False,
    what: str = "",
    log: Path | None = None,
) -> Completed:
    """Run `argv`, feeding each output line (stdout+stderr) to `on_line`; keep the last `keep`.

    With `log`, the child writes its output to that file (not to a pipe) and the lines are
    read back from it: a child that outlives us (we were killed; it got SIGTERM through
    PDEATHSIG and is cleaning up) can still write its output instead of dying of SIGPIPE.
    """
    tail: collections.deque[str] = collections.deque(maxlen=keep)

    def feed(raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        tail.append(line)
        if on_line is not None:
            on_line(line)

    sink: Any = subprocess.PIPE
    if log is not None:
        sink = log.open("wb")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if log is not None:
            sink.close()
    try:
        if log is None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                feed(raw)
        else:
            _follow(log, proc, feed)
        proc.wait()
    except BaseException:
        stop_group(proc, stop_signal, grace)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    done = Completed(list(argv), proc.returncode, list(tail))
    if check and done.returncode != 0:
        last = next((ln for ln in reversed(done.lines) if ln.strip()), "")
        raise OperationFailed(f"{what or argv[0]} failed (exit {done.returncode}): {last.strip()}")
    return done


def _follow(path: Path, proc: subprocess.Popen[bytes], feed: Callable[[bytes], None]) -> None:
    """Feed the lines `proc` writes to `path` until it exits (then the rest)."""
    pending = b""
    with path.open("rb") as reader:
        while True:
            exited = proc.poll() is not None  # before reading: what it wrote last is read below
            chunk = reader.read()
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    feed(raw)
            elif exited:
                break
            else:
                time.sleep(0.1)
    if pending:
        feed(pending)


@contextlib.contextmanager
def background(
    argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, grace: float = 10.0
) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running child (a VM) whose output goes to `log`; stopped when the block exits."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        yield proc
    finally:
        stop_group(proc, signal.SIGTERM, grace)


def output(argv: Sequence[str], *, what: str = "") -> str:
    """Run a short command and return its stdout; a failure is an OperationFailed."""
    res = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        err = (res.stderr or res.stdout).strip().splitlines()
        raise OperationFailed(f"{what or argv[0]} failed: {err[-1] if err else f'exit {res.returncode}'}")
    return res.stdout

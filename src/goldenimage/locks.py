"""Locks one command takes per environment (`invoke gc --apply` / `--restore`), behind one
small interface so that a lease on shared state can take the place of either kind.

A lock carries its holder's info (user@host, pid, command, since) so that a second run can
say who holds it: it waits up to `wait` seconds, then fails with one line naming the holder
(`LockHeld`, exit 1: the operation did not run).

- `FileLock`: an advisory `flock` on a file under the environment's local state, released
  by the kernel when the holder dies; the holder's info is written into the file.
- `aws.lock.ParameterLock`: an SSM parameter created only if absent, across machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import OperationFailed

POLL = 0.5  # seconds between two tries while waiting


class LockHeld(OperationFailed):
    """Another run holds the lock: nothing was done."""


def holder_info(command: str) -> dict[str, Any]:
    """Who takes a lock: user@host, pid, command, since (UTC)."""
    return {"holder": f"{getpass.getuser()}@{socket.gethostname()}", "pid": os.getpid(), "command": command,
            "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another run (its holder did not say who)"
    return f"{info.get('holder', '?')} pid {info.get('pid', '?')} ({info.get('command', '?')}) since {info.get('since', '?')}"


class Lock:
    """One exclusive lock. `try_acquire` returns None when taken, else the holder's info;
    `release` gives it back."""

    name = "lock"

    def try_acquire(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def held(self, what: str, wait: float = 0.0, sleep: Callable[[float], None] = time.sleep, *,
             on_wait: Callable[[str], None] | None = None, max_poll: float = POLL) -> Iterator[Lock]:
        """Hold the lock for the block; waiting up to `wait` seconds, then `LockHeld`.
        `on_wait` hears once who holds it; polls back off from `POLL` to `max_poll` seconds."""
        deadline, delay, told = time.monotonic() + wait, POLL, False
        while True:
            other = self.try_acquire()
            if other is None:
                break
            if time.monotonic() >= deadline:
                raise LockHeld(f"{what} is already running: {self.name} is held by {describe(other)}")
            if on_wait is not None and not told:
                on_wait(f"{self.name} is held by {describe(other)}")
                told = True
            sleep(delay)
            delay = min(delay * 2, max_poll)
        try:
            yield self
        finally:
            self.release()


class FileLock(Lock):
    """`flock` on `path`; the holder's info in the file (read by whoever finds it taken)."""

    def __init__(self, path: Path, command: str) -> None:
        self.path = path
        self.name = f"lock {path}"
        self.command = command
        self._fd: int | None = None

    def try_acquire(self) -> dict[str, Any] | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return self._holder()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info(self.command)).encode(), 0)
        self._fd = fd
        return None

    def _holder(self) -> dict[str, Any]:
        for _ in range(3):  # the holder may be writing its info this instant
            with contextlib.suppress(OSError, ValueError):
                info: dict[str, Any] = json.loads(self.path.read_text())
                return info
            time.sleep(0.05)
        return {}

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

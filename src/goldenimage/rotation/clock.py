"""Time and the stop request: the only two things the run loop waits on besides AWS.

`Clock` is the wall clock; `SimClock` only moves when somebody sleeps (the benchmark and
the tests of long waits use it). `StopFlag` turns the first SIGINT into a request checked
at safe points (`Stopped` is raised there); a second SIGINT interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType


class Clock:
    """Wall clock; the benchmark and tests pass a simulated one. `naps` counts the
    sleeps (the run loop checks that every round either changed something or slept)."""

    naps: int = 0

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        self.naps += 1
        if seconds > 0:
            time.sleep(seconds)


class SimClock(Clock):
    """A clock that only moves when somebody sleeps."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.naps += 1
        self.t += max(0.0, seconds)


class Stopped(Exception):
    """A stop was requested (SIGINT); raised at the next safe point."""


class StopFlag:
    """SIGINT sets a flag (checked at safe points); a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise Stopped()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.requested = True
            signal.signal(signal.SIGINT, previous)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

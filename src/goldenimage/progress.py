"""Progress on stderr: phases with elapsed time, and the current step of long tools.

Human lines go to stderr so that `--json` keeps stdout for the one JSON document. On a
terminal the current step is redrawn in place; elsewhere (CI logs, nightly jobs) each new
step is one line, and repeated or noisy lines are dropped.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Reporter:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.durations: dict[str, float] = {}
        self._phase: str | None = None
        self._phase_start = 0.0
        self._last_step = ""
        self._last_shape = ""
        self._last_shape_at = 0.0
        self._dirty = False

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._phase_start:6.1f}s"

    def _emit(self, line: str, *, transient: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            width = 120
            text = line[:width]
            if transient:
                self.stream.write("\r\x1b[2K" + text)
                self._dirty = True
            else:
                self.stream.write(("\r\x1b[2K" if self._dirty else "") + text + "\n")
                self._dirty = False
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._emit(message)

    def warn(self, message: str) -> None:
        self._emit(f"warning: {message}")

    @contextlib.contextmanager
    def phase(self, name: str, what: str = "") -> Iterator[None]:
        """A named phase; its wall time lands in `durations` whether it succeeds or not."""
        outer, outer_start = self._phase, self._phase_start
        self._phase, self._phase_start = name, time.monotonic()
        self._last_step = ""
        self._emit(f"==> {name}: {what}" if what else f"==> {name}")
        ok = False
        try:
            yield
            ok = True
        finally:
            took = time.monotonic() - self._phase_start
            self.durations[name] = round(self.durations.get(name, 0.0) + took, 3)
            self._emit(f"==> {name}: {'done' if ok else 'stopped'} in {took:.1f}s")
            self._phase, self._phase_start = outer, outer_start

    def step(self, text: str) -> None:
        """The current step of a long tool (a Packer stage, an Ansible task, a wait)."""
        text = " ".join(text.split())
        if not text or text == self._last_step:
            return
        self._last_step = text
        if not self.tty:
            # a log, not a screen: a line that differs only in its numbers (a wait's seconds)
            # is repeated at most every 30 s
            shape = re.sub(r"\d+", "#", text)
            now = time.monotonic()
            if shape == self._last_shape and now - self._last_shape_at < 30:
                return
            self._last_shape, self._last_shape_at = shape, now
        prefix = f"    [{self._phase} {self._elapsed()}] " if self._phase else "    "
        self._emit(prefix + text, transient=True)

"""proc.run: output lines, and a child that must outlive a killed parent to clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from goldenimage.adapters import proc

CHILD = """
trap 'echo cleaning up; sleep 0.5; echo cleaned; touch "$MARKER"; exit 0' TERM
echo started
while :; do sleep 0.1; done
"""


def test_lines_from_a_pipe_and_from_a_log(tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo one; echo two >&2; printf three"]
    seen: list[str] = []
    piped = proc.run(argv, on_line=seen.append)
    assert piped.lines == seen == ["one", "two", "three"] and piped.returncode == 0
    seen.clear()
    logged = proc.run(argv, on_line=seen.append, log=tmp_path / "out.log")
    assert logged.lines == seen == ["one", "two", "three"]
    assert (tmp_path / "out.log").read_text() == "one\ntwo\nthree"


def _kill_parent_of_child(tmp_path: Path, use_log: bool) -> tuple[Path, Path]:
    marker, log = tmp_path / "marker", tmp_path / "child.log"
    started = tmp_path / "parent.out"
    parent = (
        "import sys\nfrom pathlib import Path\nfrom goldenimage.adapters import proc\n"
        f"proc.run(['sh', '-c', {CHILD!r}], on_line=lambda l: print(l, flush=True),"
        f" log={'Path(' + repr(str(log)) + ')' if use_log else 'None'})\n"
    )
    with started.open("w") as out:
        p = subprocess.Popen([sys.executable, "-c", parent], stdout=out, env={**os.environ, "MARKER": str(marker)})
    deadline = time.monotonic() + 30
    while "started" not in started.read_text():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return marker, log


def test_a_child_writing_to_a_log_cleans_up_after_its_parent_is_killed(tmp_path: Path) -> None:
    marker, log = _kill_parent_of_child(tmp_path, use_log=True)
    assert marker.exists(), "the child got SIGTERM (PDEATHSIG) and finished its clean-up"
    assert log.read_text().splitlines() == ["started", "cleaning up", "cleaned"]


def test_a_child_writing_to_a_pipe_dies_of_sigpipe_instead(tmp_path: Path) -> None:
    """Why Packer writes to a file: its clean-up output would hit the dead parent's pipe."""
    marker, _ = _kill_parent_of_child(tmp_path, use_log=False)
    assert not marker.exists()

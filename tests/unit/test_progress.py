from __future__ import annotations

import io

from goldenimage.progress import Reporter


def test_phases_record_durations_even_when_they_fail() -> None:
    out = io.StringIO()
    r = Reporter(out)
    with r.phase("base"):
        r.step("working")
    try:
        with r.phase("build"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert set(r.durations) == {"base", "build"}
    text = out.getvalue()
    assert "==> base: done in" in text and "==> build: stopped in" in text
    assert "[base" in text and "working" in text


def test_log_output_drops_repeats_that_differ_only_in_numbers() -> None:
    out = io.StringIO()
    r = Reporter(out)
    with r.phase("validate"):
        for i in range(20):
            r.step(f"booting, waiting for SSH ({i}s)")
        r.step("SSH up after 20s")
    lines = [ln for ln in out.getvalue().splitlines() if "waiting for SSH" in ln]
    assert len(lines) == 1
    assert "SSH up after 20s" in out.getvalue()


def test_quiet_reporter_prints_nothing() -> None:
    out = io.StringIO()
    r = Reporter(out, quiet=True)
    with r.phase("x"):
        r.step("y")
        r.info("z")
    assert out.getvalue() == ""


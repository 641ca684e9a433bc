"""nightly_report.py: reasons, exit code, headline and the Markdown report (pure); the
webhook's retry bounds with a fake clock; the settings section's errors through cli.run."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage import nightly_report as nr
from goldenimage import pkgdiff
from goldenimage.adapters import webhook
from goldenimage.cli import run
from goldenimage.sections import WebhookSpec
from tests.conftest import copy_project


def step(name: str, outcome: str, **kw: Any) -> dict[str, Any]:
    return {"step": name, "outcome": outcome, "seconds": 1.25, "detail": kw.pop("detail", ""), **kw}


def report(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "env": "local", "target": "local", "started": "2026-11-30T02:00:00Z", "exit_code": 0,
        "steps": [step(s, "done") for s in nr.STEPS],
        "drift": {"drift": True, "bases": [{"base": "mmdebstrap:abc", "drift": True,
                                            "reason": "archive bookworm-security has newer openssl 2 > 1",
                                            "newer": [{"name": "openssl", "installed": "1", "available": "2",
                                                       "suite": "bookworm-security", "security": True}]}],
                  "images": [{"image": "web", "previous_id": "web-1", "drift": True,
                              "reasons": ["base mmdebstrap:abc: archive ..."]}]},
        "bake": {"ok": True, "images": [{"image": "web", "state": "built", "image_id": "web-2"}]},
        "images": [{"image": "web", "state": "built", "image_id": "web-2", "previous_id": "web-1",
                    "status": "validated", "inputs_changed": ["base image changed: now sha256:1"],
                    "validation": {"status": "validated", "passed": 31, "failed": 0, "errors": 0},
                    "packages": pkgdiff.diff([("openssl", "1", "amd64"), ("a|b", "1", "all")],
                                             [("openssl", "2", "amd64")], security={("openssl", "2")})}],
        "promotions": [{"image": "web", "image_id": "web-2", "channel": "nightly", "previous": "web-1",
                        "outcome": "done"}],
        "rotation": [{"group": "dev", "outcome": "done", "detail": "done"}],
        "gc": {"mode": "apply", "changes": [{"image_id": "web-0", "action": "delete", "reason": "old",
                                             "outcome": "done"}], "reclaimed_bytes": 3 * 1024 ** 3},
        "webhook": {"outcome": "failed", "attempts": 4, "error": "Connection refused"},
    }
    doc.update(kw)
    return doc


def test_markdown_has_every_section() -> None:
    md = nr.markdown(report())
    assert md.startswith("# Nightly `local` (local) — 2026-11-30T02:00:00Z")
    assert "**baked and validated web web-2** (exit 0)" in md
    assert "| drift | done | 1.2 |" in md or "| drift | done | 1.3 |" in md
    assert "- base `mmdebstrap:abc`: DRIFT — archive bookworm-security has newer openssl 2 > 1" in md
    assert "  - openssl 1 → 2 from bookworm-security (security)" in md
    assert "packages vs web-1: 1 upgraded, 0 downgraded, 0 added, 1 removed (1 from the security suite)" in md
    assert "| openssl | openssl | upgraded | 1 | 2 | yes |" in md
    assert "| a\\|b | a\\|b | removed | 1 |  |  |" in md  # a pipe cannot break the table
    assert "31 passed, 0 failed" in md
    assert "| web | web-2 | nightly | web-1 | done |" in md
    assert "- apply: 1 change(s), reclaimed 3.0 GiB" in md and "delete web-0 → done: old" in md
    assert "- failed after 4 attempt(s): Connection refused" in md


def test_no_drift_report_says_so() -> None:
    doc = report(drift={"drift": False, "bases": [], "images": [
        {"image": "web", "previous_id": "web-1", "drift": False, "reasons": []}]},
        bake={"ok": True, "images": []}, images=[], promotions=[], rotation=[], gc={"mode": "off"},
        webhook={"outcome": "off"})
    md = nr.markdown(doc)
    assert "**no drift: nothing changed since the last validated images, nothing baked**" in md
    assert "image `web` (previous web-1): no drift — unchanged" in md
    assert "## Webhook" not in md and "- off" in md


def test_exit_code_and_headline_of_failures() -> None:
    steps = [step("drift", "done"), step("bake", "failed", exit_code=1), step("promote", "skipped")]
    assert nr.exit_code(steps) == 1
    assert nr.exit_code([*steps, step("rotate", "failed", exit_code=2)]) == 2
    assert nr.exit_code([step("bake", "skipped")]) == 0
    doc = report(steps=steps, bake={"images": [{"image": "web", "state": "failed"}]})
    assert nr.headline(doc) == "FAILED: bake (1 image(s) failed)"


def test_input_reasons() -> None:
    assert nr.input_reasons({"changed": ["base:image", "roles/web/tasks/main.yml"], "added": [], "removed": [],
                             "now": {"base:image": "ami:eu-west-1:ami-0new"}}, "ami-0old") == [
        "base AMI filter now resolves to ami-0new (was ami-0old)", "inputs changed: roles/web/tasks/main.yml"]
    many = nr.input_reasons({"changed": [f"f{i}" for i in range(7)], "added": ["x"], "removed": []})
    assert many == ["inputs changed: f0, f1, f2, f3, f4, +2 more", "inputs added: x"]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_webhook_retries_with_backoff_within_its_bounds() -> None:
    slept: list[float] = []
    clock = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    spec = WebhookSpec(url=f"http://127.0.0.1:{_closed_port()}/hook", attempts=4, backoff=0.5, deadline=60)
    out = webhook.post({"x": 1}, spec, sleep=sleep, clock=lambda: clock[0])
    assert out["outcome"] == "failed" and out["attempts"] == 4 and "refused" in out["error"]
    assert slept == [0.5, 1.0, 2.0]
    # the deadline bounds the total: 1.5 s allows the first two attempts and a cut-short wait
    slept.clear()
    clock[0] = 0.0
    out = webhook.post({}, spec.model_copy(update={"deadline": 1.2}), sleep=sleep, clock=lambda: clock[0])
    assert out["attempts"] == 2 and slept == [0.5, 0.7] and "deadline" in out["error"]


@pytest.mark.parametrize(("section", "message"), [
    ("nightly: {gc: sometimes}", "field extra.nightly.gc: Input should be 'apply', 'plan' or 'off'"),
    ("nightly: {channel: Nightly}", "field extra.nightly.channel: Value error, channel 'Nightly'"),
    ("nightly: {rotate: [dev]}", "field extra.nightly.rotate[0]: unknown group 'dev'"),
    ("nightly: {webhook: {url: ftp://x}}", "field extra.nightly.webhook.url: String should match pattern"),
    ("nightly: {webhook: {url: 'http://x', attempts: 0}}", "field extra.nightly.webhook.attempts"),
    ("nightly: {colour: blue}", "field extra.nightly.colour: Extra inputs are not permitted"),
    ("nightly: [a]", "field extra.nightly: expected a mapping"),
])
def test_bad_nightly_settings_are_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], section: str, message: str
) -> None:
    from goldenimage import nightly

    root = copy_project(tmp_path / "p")
    settings = root / "inventories" / "local" / "goldenimage.yml"
    doc = yaml.safe_load(settings.read_text())
    doc["extra"].update(yaml.safe_load(section))
    settings.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exit_:
        run(lambda r: nightly.nightly("local", r, root=root))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: inventories/local/goldenimage.yml: ") and message in err[0]
    assert not (tmp_path / "home").exists()  # nothing ran: no lock, no report

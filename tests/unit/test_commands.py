"""The library side of `invoke fingerprint / promote / revoke`, and their exit codes."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from goldenimage import cli, commands
from goldenimage import fingerprint as fp
from goldenimage.errors import ConfigError, NotFoundError
from goldenimage.progress import Reporter
from goldenimage.settings import Environment, load_environment
from goldenimage.store import LocalStore
from tests.unit.fp_helpers import EXTRA, make_project, register, write

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def fixed_extra(env: Environment, image: str, reporter: Reporter) -> dict[str, str]:
    return dict(EXTRA)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def current_inputs(root: Path, image: str = "web") -> list[fp.FingerprintInput]:
    return fp.collect(root, load_environment("local", root), image, EXTRA)


def fingerprint(root: Path, store: LocalStore, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"image": "web", "explain": False, "against": None, **kw}
    return commands.fingerprint_cmd(
        "local",
        args["image"],
        args["explain"],
        args["against"],
        quiet(),
        registry=store,
        root=root,
        resolve_extra=fixed_extra,
    )


def test_fingerprint_every_image_when_none_named(root: Path, store: LocalStore) -> None:
    r = fingerprint(root, store, image=None)
    assert [row["image"] for row in r["images"]] == ["other", "web"]
    web = r["images"][1]
    assert web["fingerprint"] == fp.compute(current_inputs(root))
    assert web["up_to_date"] is None
    assert "explain" not in web


def test_fingerprint_explain_and_up_to_date(root: Path, store: LocalStore) -> None:
    inputs = current_inputs(root)
    register(
        store,
        "web-1",
        fingerprint=fp.compute(inputs),
        manifest={"fingerprint_inputs": fp.as_manifest(inputs)},
    )
    r = fingerprint(root, store, explain=True)
    row = r["images"][0]
    assert row["up_to_date"] == "web-1"
    assert [e["name"] for e in row["explain"]] == sorted(i.name for i in inputs)
    lines = commands.human_fingerprint(r)
    assert lines[0].startswith("web  ") and "up to date: web-1" in lines[0]
    assert any("tool:packer  = 1.11.2" in line for line in lines)


def test_against_says_which_inputs_changed(root: Path, store: LocalStore) -> None:
    inputs = current_inputs(root)
    register(
        store,
        "web-1",
        fingerprint=fp.compute(inputs),
        manifest={"fingerprint_inputs": fp.as_manifest(inputs)},
    )
    same = fingerprint(root, store, image=None, against="web-1")
    assert same["images"][0]["against"]["same"] is True
    assert "nothing changed" in commands.human_fingerprint(same)[-1]

    write(root, "roles/web/tasks/main.yml", "- ansible.builtin.debug: {msg: changed}\n")
    write(root, "roles/web/vars/main.yml", "web_x: 1\n")
    (root / "inventories/local/group_vars/web.yml").unlink()

    def newer_packer(env: Environment, image: str, reporter: Reporter) -> dict[str, str]:
        return {**EXTRA, "tool:packer": "1.12.0"}

    r = commands.fingerprint_cmd(
        "local", None, False, "web-1", quiet(), registry=store, root=root, resolve_extra=newer_packer
    )
    a = r["images"][0]["against"]
    assert a["same"] is False
    assert a["changed"] == ["roles/web/tasks/main.yml", "tool:packer"]
    assert a["added"] == ["roles/web/vars/main.yml"]
    # the new tasks no longer include_role tls: its files left the image
    assert a["removed"] == ["inventories/local/group_vars/web.yml", "roles/tls/tasks/main.yml"]
    text = "\n".join(commands.human_fingerprint(r))
    assert "5 inputs differ" in text and "tool:packer (now 1.12.0)" in text


@pytest.mark.parametrize(
    ("kw", "error", "pattern"),
    [
        ({"against": "web-404"}, NotFoundError, "unknown image id 'web-404'"),
        ({"against": "web-old"}, ConfigError, "web-old: its manifest has no fingerprint_inputs"),
        ({"against": "db-1"}, ConfigError, "db-1 is a 'db' image, not 'web'"),
        ({"image": "nope"}, NotFoundError, "unknown image 'nope'"),
    ],
)
def test_fingerprint_bad_input(
    root: Path, store: LocalStore, kw: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    register(store, "web-old")
    register(store, "db-1", name="db", manifest={"fingerprint_inputs": {"a": "0" * 64}})
    with pytest.raises(error, match=pattern):
        fingerprint(root, store, **kw)


def test_malformed_template_through_the_command(root: Path, store: LocalStore) -> None:
    write(root, "packer/build.pkr.hcl", "build {\n  sources = [\n")
    with pytest.raises(ConfigError, match=r"^packer/build\.pkr\.hcl:\d+"):
        fingerprint(root, store)


def test_promote_and_revoke_commands(root: Path, store: LocalStore) -> None:
    register(store, "web-1")
    register(store, "web-2")
    kw: dict[str, Any] = {"registry": store, "root": root, "user": "alice", "now": T0}
    r1 = commands.promote("local", "web-1", "stable", quiet(), **kw)
    assert r1["previous"] is None and r1["rollback_target"] is None and r1["target"] == "local"
    r2 = commands.promote("local", "web-2", "stable", quiet(), **kw)
    assert r2["rollback_target"] == "web-1"
    assert commands.human_promote(r2) == [
        "web/stable: web-1 -> web-2",
        "rollback: invoke promote --env local --image-id web-1 --channel stable",
    ]
    again = commands.promote("local", "web-2", "stable", quiet(), **kw)
    assert commands.human_promote(again)[0] == "web/stable already points at web-2: nothing to do"
    log = io.StringIO()
    rv = commands.revoke("local", "web-2", "CVE-2026-1", Reporter(log), **kw)
    assert rv["channels_moved"] == {"stable": "web-1"} and rv["channels_left"] == []
    assert rv["previous_status"] == "validated"
    assert "warning: channel web/stable fell back to web-1" in log.getvalue()
    assert commands.human_revoke(rv) == [
        "revoked web-2 (web): CVE-2026-1",
        "  channel web/stable moved back to web-1",
    ]
    h = commands.history("local", "web", "stable", quiet(), registry=store, root=root)
    assert [(e["image_id"], e["status"], e["action"]) for e in h["history"]] == [
        ("web-1", "validated", "promote"),
        ("web-2", "revoked", "promote"),
        ("web-1", "validated", "revoke"),
    ]
    text = commands.human_history(h)
    assert text[0] == "web/stable:" and text[-1] == "rollback target: none"
    assert text[3].endswith("web-1 [validated]  fell back: web-2 revoked (CVE-2026-1)  by alice")


def test_revoke_with_nothing_to_fall_back_to(root: Path, store: LocalStore) -> None:
    register(store, "web-1")
    kw: dict[str, Any] = {"registry": store, "root": root, "user": "alice", "now": T0}
    commands.promote("local", "web-1", "canary", quiet(), **kw)
    rv = commands.revoke("local", "web-1", "bad", quiet(), **kw)
    assert rv["channels_moved"] == {} and rv["channels_left"] == ["canary"]
    assert commands.human_revoke(rv)[1] == "  channel web/canary points at nothing now: promote a new image"


def test_no_rollback_hint_to_a_revoked_image(root: Path, store: LocalStore) -> None:
    for i in ("web-1", "web-2"):
        register(store, i)
    kw: dict[str, Any] = {"registry": store, "root": root, "user": "alice", "now": T0}
    commands.promote("local", "web-1", "stable", quiet(), **kw)
    assert commands.promote("local", "web-2", "stable", quiet(), **kw)["rollback_target"] == "web-1"
    store.revoke("web-1", "bad", "bob", T0)  # not current: the channel stays on web-2
    r = commands.promote("local", "web-2", "stable", quiet(), **kw)
    assert r["changed"] is False and r["rollback_target"] is None
    assert len(commands.human_promote(r)) == 1


def test_image_of_another_environment_is_refused(root: Path, store: LocalStore) -> None:
    register(store, "web-9", env="staging")
    with pytest.raises(ConfigError, match="belongs to environment 'staging', not 'local'"):
        commands.promote("local", "web-9", "stable", quiet(), registry=store, root=root)


@pytest.mark.parametrize("target", ["aws", "sandbox"])
def test_remote_targets_use_their_registry(
    root: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    from goldenimage.aws.target import AwsSide
    from goldenimage.models import ImageRecord

    s = root / "inventories/local/goldenimage.yml"
    s.write_text(s.read_text().replace("target: local", f"target: {target}"))
    calls: list[tuple[str, ...]] = []

    class FakeRegistry:
        def get(self, image_id: str) -> ImageRecord:
            return ImageRecord(image_id, "web", "local", "f", "t", "validated", "a")

        def promote(self, image_id: str, channel: str) -> dict[str, Any]:
            calls.append(("promote", image_id, channel))
            return {"image": "web", "channel": channel, "image_id": image_id, "previous": "ami-1",
                    "changed": True, "parameter": "/p", "version": 2}

        def revoke(self, image_id: str, reason: str) -> dict[str, Any]:
            calls.append(("revoke", image_id, reason))
            return {"image_id": image_id, "image": "web", "reason": reason, "channels_moved": {},
                    "channels_left": [], "deprecation": "skipped"}

        def rollback_target(self, name: str, channel: str) -> str:
            return "ami-1"

        def list(self, name: str | None = None) -> list[ImageRecord]:
            return [self.get("ami-2")]

        def manifest(self, image_id: str) -> dict[str, Any]:
            return {}

        def snapshots(self, image_id: str) -> list[str]:
            return []

        def attestation(self, name: str, image_id: str) -> bytes | None:
            return None  # made before attestations: admitted (the project says unsigned: allow)

        def compliance_report(self, name: str, image_id: str) -> bytes | None:
            return None

        def attestation_path(self, name: str, image_id: str) -> str:
            return "/p/_attestation"

    monkeypatch.setattr(AwsSide, "registry", lambda self: FakeRegistry())
    monkeypatch.setattr(AwsSide, "clients", property(lambda self: SimpleNamespace(
        ctx=SimpleNamespace(region="us-east-1"))))
    p = commands.promote("local", "ami-2", "stable", quiet(), root=root)
    assert p["target"] == target and p["rollback_target"] == "ami-1"
    assert commands.human_promote(p)[0] == "web/stable: ami-1 -> ami-2 (version 2, /p)"
    r = commands.revoke("local", "ami-2", "bad", quiet(), root=root)
    assert r["target"] == target and commands.human_revoke(r)[0] == "revoked ami-2 (web): bad"
    assert calls == [("promote", "ami-2", "stable"), ("revoke", "ami-2", "bad")]
    with pytest.raises(ConfigError, match="bad channel name"):
        commands.promote("local", "ami-2", "Bad", quiet(), root=root)


# -- through cli.run: exit codes and one-line errors -------------------------------------
def run(work: Any, json_out: bool, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.run(work, json_out=json_out, human=commands.human_promote)
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


@pytest.mark.parametrize(
    ("image_id", "channel", "message"),
    [
        ("web-404", "stable", "error: unknown image id 'web-404'"),
        ("web-q", "stable", "error: image web-q is quarantined"),
        ("web-r", "stable", "error: image web-r is revoked (bad): it can never be promoted"),
        ("web-1", "Stable", "error: bad channel name 'Stable'"),
    ],
)
def test_cli_exit_2_with_one_line(
    root: Path,
    store: LocalStore,
    capsys: pytest.CaptureFixture[str],
    image_id: str,
    channel: str,
    message: str,
) -> None:
    register(store, "web-1")
    register(store, "web-q", status="quarantined")
    register(store, "web-r")
    store.revoke("web-r", "bad", "bob", T0)

    def work(rep: Reporter) -> dict[str, Any]:
        return commands.promote("local", image_id, channel, rep, registry=store, root=root)

    code, out, err = run(work, False, capsys)
    assert code == 2
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message)
    assert "Traceback" not in err

    code, out, _ = run(work, True, capsys)
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and doc["exit_code"] == 2


def test_cli_json_success(root: Path, store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    register(store, "web-1")

    def work(rep: Reporter) -> dict[str, Any]:
        return commands.promote("local", "web-1", "canary", rep, registry=store, root=root)

    code, out, _ = run(work, True, capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["image_id"] == "web-1" and doc["changed"] is True


def test_bake_extra_uses_the_bakes_sources(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible.release import __version__ as ansible_version

    from goldenimage.adapters import baseimage, packer

    seen: dict[str, object] = {}

    def fake_base(spec: object, cache: Path, reporter: Reporter, shared: object = None,
                  need_bytes: bool = True) -> baseimage.BaseImage:
        seen["spec"] = spec
        return baseimage.BaseImage(Path("/x/base.qcow2"), "c" * 64, "mmdebstrap:k")

    monkeypatch.setattr(baseimage, "ensure_base_image", fake_base)
    monkeypatch.setattr(packer.Packer, "detect", classmethod(lambda cls: cls("/p", (1, 11, 2))))
    env = load_environment("local", root)
    got = commands.bake_extra(env, "web", quiet())
    assert got == {
        "base:image": "sha256:" + "c" * 64,
        "tool:packer": "1.11.2",
        "tool:ansible-core": ansible_version,
    }
    assert seen["spec"] == env.settings.base

    from goldenimage.aws import target as aws

    s = root / "inventories/local/goldenimage.yml"
    s.write_text(s.read_text().replace("target: local", "target: aws"))
    monkeypatch.setattr(aws, "resolve_base_ami", lambda clients, spec: {"id": "ami-0abc", "name": "debian"})
    # the same identity the AMI bake fingerprints: the region and the AMI id
    assert commands.bake_extra(load_environment("local", root), "web", quiet())["base:image"] == "ami:us-east-1:ami-0abc"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: commands.promote("local", None, "stable", quiet()), "--image-id is required"),
        (lambda: commands.promote("local", "web-1", None, quiet()), "--channel is required"),
        (lambda: commands.revoke("local", "web-1", None, quiet()), "--reason is required"),
        (lambda: commands.history("local", None, "stable", quiet()), "--image is required"),
    ],
)
def test_missing_options_are_exit_2(call: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$") as exc:
        call()
    assert exc.value.exit_code == 2

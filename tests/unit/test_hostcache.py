"""What the host remembers between commands (adapters.hostcache): tool versions while the
binary is unchanged, templates' digests while text, parser and normal form are unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from goldenimage import fingerprint
from goldenimage.adapters.hostcache import HclDigests, version_output
from goldenimage.errors import MissingToolError, TemplateError
from tests.unit.fp_helpers import count_hcl_parses


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_tool(bin_dir: Path, version: str) -> tuple[Path, Path]:
    """A `faketool` on PATH that prints `version` and counts its runs."""
    bin_dir.mkdir(exist_ok=True)
    runs, tool = bin_dir / "runs", bin_dir / "faketool"
    tool.write_text(f"#!/bin/sh\necho run >> {runs}\necho 'faketool v{version}'\n")
    tool.chmod(0o755)
    return tool, runs


def test_a_version_is_asked_once_while_the_binary_is_unchanged(home: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tool, runs = fake_tool(tmp_path / "bin", "1.2.3")
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    assert version_output(["faketool", "version"]) == "faketool v1.2.3\n"
    assert version_output(["faketool", "version"]) == "faketool v1.2.3\n"
    assert runs.read_text().count("run") == 1
    assert version_output(["faketool", "--version"]) == "faketool v1.2.3\n"  # another question
    assert runs.read_text().count("run") == 2
    # an upgrade replaces the binary: asked again, the new answer
    fake_tool(tmp_path / "bin", "1.2.4")
    st = tool.stat()
    os.utime(tool, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert version_output(["faketool", "version"]) == "faketool v1.2.4\n"
    assert runs.read_text().count("run") == 3


def test_an_unreadable_cache_only_means_asking_again(home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tool, runs = fake_tool(tmp_path / "bin", "2.0.0")
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "tool-versions.json").write_text("{not json")
    assert version_output(["faketool", "version"]) == "faketool v2.0.0\n"
    assert version_output(["faketool", "version"]) == "faketool v2.0.0\n"
    assert runs.read_text().count("run") == 1


def test_a_missing_tool_is_named(home: Path) -> None:
    with pytest.raises(MissingToolError, match="no-such-tool-here not found on PATH"):
        version_output(["no-such-tool-here", "--version"])


TEMPLATE = 'variable "a" {\n  default = "x"\n}\n'


@pytest.fixture()
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return count_hcl_parses(monkeypatch)


def test_a_template_is_parsed_once_per_host_not_once_per_process(home: Path, parses: list[str]) -> None:
    fingerprint.keep_hcl_digests(HclDigests())
    first = fingerprint.hcl_digest(TEMPLATE, "packer/a.pkr.hcl")
    fingerprint.keep_hcl_digests(HclDigests())  # the next command: a new process's cache
    assert fingerprint.hcl_digest(TEMPLATE, "packer/a.pkr.hcl") == first
    assert parses == ["packer/a.pkr.hcl"]
    # the same digest as a process that remembers nothing
    fingerprint.keep_hcl_digests({})
    assert fingerprint.hcl_digest(TEMPLATE, "packer/a.pkr.hcl") == first
    # an edited template is parsed again
    fingerprint.keep_hcl_digests(HclDigests())
    assert fingerprint.hcl_digest(TEMPLATE.replace('"x"', '"y"'), "packer/a.pkr.hcl") != first
    assert len(parses) == 3


def test_an_invalid_template_is_never_remembered(home: Path, parses: list[str]) -> None:
    for _ in range(2):
        fingerprint.keep_hcl_digests(HclDigests())
        with pytest.raises(TemplateError, match=r"packer/bad\.pkr\.hcl"):
            fingerprint.hcl_digest('variable "a" {\n', "packer/bad.pkr.hcl")
    assert parses == ["packer/bad.pkr.hcl"] * 2


def test_a_damaged_entry_is_computed_again(home: Path, parses: list[str]) -> None:
    cache = HclDigests()
    fingerprint.keep_hcl_digests(cache)
    first = fingerprint.hcl_digest(TEMPLATE, "packer/a.pkr.hcl")
    for entry in cache.root.iterdir():
        entry.write_text("garbage")
    fingerprint.keep_hcl_digests(HclDigests())
    assert fingerprint.hcl_digest(TEMPLATE, "packer/a.pkr.hcl") == first
    assert len(parses) == 2


def test_another_normal_form_or_parser_is_another_cache(home: Path) -> None:
    root = HclDigests().root
    assert root.parent == home / "cache" / "hcl"
    from importlib.metadata import version

    assert root.name.startswith(version("python-hcl2") + "-")

"""Packer's output, condensed and summarised (pure functions over captured lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from goldenimage.adapters.packer import (
    Packer,
    condense,
    for_old_packer,
    summarise_build_error,
    summarise_hcl_error,
)
from goldenimage.errors import TemplateError

HCL_ERROR = """\
Error: Invalid expression

  on sources.pkr.hcl line 5, in source "qemu" "local":
   5:   output_directory = var.output_directory +
   6:   iso_checksum     = var.base_image_checksum

Expected the start of an expression, but found an invalid expression token.

Error: Attribute redefined

  on sources.pkr.hcl line 7, in source "qemu" "local":
""".splitlines()

ANSIBLE_FAIL = """\
==> qemu.local: Provisioning with Ansible...
    qemu.local: PLAY [Web image] ***************************************************************
    qemu.local: TASK [Gathering Facts] *********************************************************
    qemu.local: ok: [default]
    qemu.local: TASK [web : Install nginx] *****************************************************
    qemu.local: fatal: [default]: FAILED! => {"changed": false, "msg": "No package matching 'nginxx' is available"}
    qemu.local: PLAY RECAP *********************************************************************
==> qemu.local: Deleting output directory...
Build 'qemu.local' errored: Error executing Ansible: Non-zero exit status: exit status 2
""".splitlines()


def test_hcl_error_names_repository_file_and_line(tmp_path: Path) -> None:
    staged = tmp_path / "ws" / "packer"
    msg = summarise_hcl_error(HCL_ERROR, staged, tmp_path)
    assert msg == ("packer/sources.pkr.hcl:5: Invalid expression: Expected the start of an expression, "
                   "but found an invalid expression token.")


def test_hcl_error_with_absolute_staged_path(tmp_path: Path) -> None:
    staged = tmp_path / "ws" / "packer"
    lines = ["Error: Unsupported argument", "", f"  on {staged}/build.pkr.hcl line 12:", "",
             'An argument named "foo" is not expected here.']
    assert summarise_hcl_error(lines, staged, tmp_path) == (
        'packer/build.pkr.hcl:12: Unsupported argument: An argument named "foo" is not expected here.'
    )


def test_ansible_failure_names_task_and_host() -> None:
    assert summarise_build_error(ANSIBLE_FAIL) == (
        "ansible task [web : Install nginx] failed on host default: No package matching 'nginxx' is available"
    )


def test_a_fact_the_play_did_not_gather_says_how_to_gather_facts() -> None:
    """What Ansible says when a role includes OS-specific variables from facts that were not
    gathered (measured: include_vars with first_found on ansible_facts['os_family'])."""
    lines = ["    qemu.local: TASK [osvars : Include OS-specific variables] ***",
             '    qemu.local: fatal: [default]: FAILED! => {"changed": false, "msg": "Task failed: Finalization '
             "of task args for 'ansible.builtin.include_vars' failed: Error while resolving value for "
             "'_raw_params': object of type 'dict' has no attribute 'os_family'\"}"]
    text = summarise_build_error(lines)
    assert text.startswith("ansible task [osvars : Include OS-specific variables] failed on host default:")
    assert text.endswith("set `gather_facts: true` and `gather_subset: [min]` in the image's playbook "
                         "(README: Bring your own roles)")
    assert "gather_facts" not in summarise_build_error(ANSIBLE_FAIL)  # another failure: no such hint


def test_packer_failure_without_ansible() -> None:
    lines = ["==> qemu.local: Waiting for SSH to become available...",
             "Build 'qemu.local' errored: Timeout waiting for SSH."]
    assert summarise_build_error(lines) == "Timeout waiting for SSH."


def test_condense_keeps_stages_and_tasks_only() -> None:
    steps = [s for s in map(condense, ANSIBLE_FAIL) if s]
    assert steps == [
        "Provisioning with Ansible...",
        "PLAY [Web image]",
        "TASK [Gathering Facts]",
        "TASK [web : Install nginx]",
        'fatal: [default]: FAILED! => {"changed": false, "msg": "No package matching \'nginxx\' is available"}',
        "Deleting output directory...",
    ]


def test_stage_leaves_required_plugins_out_for_old_packer(tmp_path: Path) -> None:
    templates = Path(__file__).resolve().parents[2] / "packer"
    old = Packer("packer", (1, 6, 6)).stage(templates, tmp_path / "old")
    new = Packer("packer", (1, 10, 0)).stage(templates, tmp_path / "new")
    assert "plugins.pkr.hcl" not in {p.name for p in old.iterdir()}
    assert "plugins.pkr.hcl" in {p.name for p in new.iterdir()}
    assert {p.name for p in new.iterdir()} - {p.name for p in old.iterdir()} == {"plugins.pkr.hcl"}


def test_packer_crash_is_named_with_its_panic() -> None:
    lines = ["==> qemu.local: Waiting for SSH to become available...",
             "!!!!!!!!!!!!!!!!!!!!!!!!!!! PACKER CRASH !!!!!!!!!!!!!!!!!!!!!!!!!!!!",
             "panic: runtime error: invalid memory address or nil pointer dereference"]
    assert summarise_build_error(lines) == (
        "packer crashed: panic: runtime error: invalid memory address or nil pointer dereference"
    )


def test_stage_blanks_new_packer_settings_for_old_packer(tmp_path: Path) -> None:
    templates = Path(__file__).resolve().parents[2] / "packer"
    old = Packer("packer", (1, 6, 6)).stage(templates, tmp_path / "old")
    new = Packer("packer", (1, 7, 0)).stage(templates, tmp_path / "new")
    source = (templates / "sources.pkr.hcl").read_text()
    assert (new / "sources.pkr.hcl").read_text() == source
    staged = (old / "sources.pkr.hcl").read_text()
    assert "metadata_options" in source and "metadata_options" not in staged
    assert "imds_support" not in staged and 'http_tokens                 = "required"' not in staged
    # blanked, not removed: Packer's line numbers still point into packer/sources.pkr.hcl
    assert len(staged.splitlines()) == len(source.splitlines())
    for a, b in zip(staged.splitlines(), source.splitlines(), strict=True):
        assert a in ("", b)


@pytest.mark.parametrize(("text", "message"), [
    ("a\n# packer >= 1.7 only\nb\n", "sources.pkr.hcl: a `# packer >= 1.7 only` region is never ended"),
    ("a\n# end packer >= 1.7\n", "sources.pkr.hcl:2: `# end packer >= 1.7` without its start"),
    ("# packer >= 1.7 only\n  # packer >= 1.7 only\n# end packer >= 1.7\n", "sources.pkr.hcl:2: a `# packer"),
])
def test_unbalanced_new_packer_regions_are_template_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        for_old_packer(text, "sources.pkr.hcl")


def test_for_old_packer_keeps_text_without_regions() -> None:
    text = 'source "x" "y" {\n  a = 1\n}\n'
    assert for_old_packer(text, "x.pkr.hcl") == text
    assert for_old_packer("a\n  # packer >= 1.7 only\nb\n  # end packer >= 1.7\nc", "f") == "a\n\n\n\nc"

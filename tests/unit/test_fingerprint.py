"""The fingerprint: pure core properties, and what the collectors count and ignore."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goldenimage import fingerprint as fp
from goldenimage.errors import ConfigError, TemplateError
from goldenimage.fingerprint import FingerprintInput
from goldenimage.settings import load_environment
from tests.unit.fp_helpers import EXTRA, FILES, make_project, write

digests = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
names = st.from_regex(r"[a-z:/._-]{1,30}", fullmatch=True)
input_maps = st.dictionaries(names, digests, max_size=20)


def inputs_of(m: dict[str, str]) -> list[FingerprintInput]:
    return [FingerprintInput(n, d) for n, d in m.items()]


# -- pure core ---------------------------------------------------------------------------
@given(input_maps, st.randoms(use_true_random=False))
def test_compute_is_order_independent(m: dict[str, str], rnd: object) -> None:
    a = inputs_of(m)
    b = list(a)
    rnd.shuffle(b)  # type: ignore[attr-defined]
    assert fp.compute(a) == fp.compute(b)


@given(input_maps.filter(bool), st.data())
def test_compute_changes_with_any_digest_or_name(m: dict[str, str], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(m)))
    new_digest = data.draw(digests.filter(lambda d: d != m[name]))
    assert fp.compute(inputs_of({**m, name: new_digest})) != fp.compute(inputs_of(m))
    renamed = {("~" + n if n == name else n): d for n, d in m.items()}
    assert fp.compute(inputs_of(renamed)) != fp.compute(inputs_of(m))
    smaller = {n: d for n, d in m.items() if n != name}
    assert fp.compute(inputs_of(smaller)) != fp.compute(inputs_of(m))


def test_compute_is_unambiguous_about_boundaries() -> None:
    """Moving characters between a name and its digest is not the same input set."""
    a = [FingerprintInput("ab", "c" * 64), FingerprintInput("d", "e" * 64)]
    b = [FingerprintInput("a", "b" + "c" * 64), FingerprintInput("d", "e" * 64)]
    assert fp.compute(a) != fp.compute(b)


def test_compute_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate fingerprint inputs: a"):
        fp.compute([FingerprintInput("a", "0" * 64), FingerprintInput("a", "1" * 64)])


def test_detail_is_not_hashed() -> None:
    assert fp.compute([FingerprintInput("x", "0" * 64, "shown")]) == fp.compute(
        [FingerprintInput("x", "0" * 64)]
    )


@given(input_maps, input_maps)
def test_diff_properties(old: dict[str, str], new: dict[str, str]) -> None:
    d = fp.diff(old, new)
    back = fp.diff(new, old)
    assert d["added"] == back["removed"] and d["removed"] == back["added"]
    assert d["changed"] == back["changed"]
    assert fp.diff(old, old) == {"added": [], "removed": [], "changed": []}
    # the diff is empty exactly when the fingerprints agree
    same = not (d["added"] or d["removed"] or d["changed"])
    assert same == (fp.compute(inputs_of(old)) == fp.compute(inputs_of(new)))


def test_as_manifest_and_explain() -> None:
    ins = [fp.value_input("tool:packer", "1.11.2"), FingerprintInput("a/b", "0" * 64)]
    assert fp.as_manifest(ins) == {"a/b": "0" * 64, "tool:packer": fp.sha256_text("1.11.2")}
    assert list(fp.as_manifest(ins)) == ["a/b", "tool:packer"]
    rows = fp.explain(ins)
    digest = fp.sha256_text("1.11.2")
    assert rows[1] == {"name": "tool:packer", "digest": digest, "detail": "1.11.2"}
    assert rows[0] == {"name": "a/b", "digest": "0" * 64}


def test_file_digest_covers_bytes_and_executable_bit(tmp_path: Path) -> None:
    p = write(tmp_path, "f.sh", b"#!/bin/sh\n")
    plain = fp.file_digest(p)
    assert plain == fp.bytes_digest(b"#!/bin/sh\n", executable=False)
    os.chmod(p, 0o755)
    assert fp.file_digest(p) == fp.bytes_digest(b"#!/bin/sh\n", executable=True) != plain
    os.chmod(p, 0o700)  # group/other bits do not count, only "is it executable"
    assert fp.file_digest(p) == fp.bytes_digest(b"#!/bin/sh\n", executable=True)


# -- collectors --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("proj"))


def fingerprint(root: Path, image: str = "web", extra: dict[str, str] | None = None) -> str:
    env = load_environment("local", root)
    return fp.compute(fp.collect(root, env, image, EXTRA if extra is None else extra))


def names_of(root: Path, image: str = "web") -> set[str]:
    return {i.name for i in fp.collect(root, load_environment("local", root), image, EXTRA)}


def test_collect_follows_playbook_roles_dependencies_and_includes(project: Path) -> None:
    got = names_of(project)
    assert {
        "packer/plugins.pkr.hcl",
        "packer/variables.pkr.hcl",
        "packer/sources.pkr.hcl",
        "packer/build.pkr.hcl",
        "packer/local.pkrvars.hcl",
        "packer/scripts/cleanup.sh",
        "playbooks/web.yml",
        "roles/common/tasks/main.yml",
        "roles/common/defaults/main.yml",
        "roles/web/tasks/main.yml",
        "roles/web/meta/main.yml",
        "roles/web/templates/site.conf.j2",
        "roles/web/files/healthcheck.sh",
        "roles/ntp/tasks/main.yml",  # meta dependency of web
        "roles/tls/tasks/main.yml",  # include_role in web's tasks
        "inventories/local/hosts.yml",
        "inventories/local/group_vars/all.yml",
        "inventories/local/group_vars/web.yml",
        "inventories/local/goldenimage.yml#images.web",
        "inventories/local/goldenimage.yml#base",
        "inventories/local/goldenimage.yml#target",
        "base:image",
        "tool:packer",
        "tool:ansible-core",
    } == got
    assert "roles/unused/tasks/main.yml" not in got
    assert "playbooks/other.yml" not in got


@pytest.fixture
def copy(project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(project, tmp_path / "p", symlinks=True))


def test_stable_under_mtimes_and_ignored_files(copy: Path) -> None:
    before = fingerprint(copy)
    for dirpath, _dirs, files in os.walk(copy):
        for f in files:
            os.utime(Path(dirpath, f), (1_000_000, 1_000_000))
    for rel in (
        "roles/web/.git/HEAD",
        "roles/web/__pycache__/x.cpython-311.pyc",
        "roles/web/tasks/main.yml~",
        "roles/web/tasks/.main.yml.swp",
        "roles/web/.DS_Store",
        "packer/.git/config",
        "packer/x.pyc",
        "roles/common/library/helper.pyc",
    ):
        write(copy, rel, b"noise")
    assert fingerprint(copy) == before


def test_stable_under_hcl_comments_and_whitespace(copy: Path) -> None:
    before = fingerprint(copy)
    src = (copy / "packer/variables.pkr.hcl").read_text()
    noisy = "# leading comment\n\n" + src.replace("  ", "\t").replace(" = ", "=") + "\n// end\n"
    write(copy, "packer/variables.pkr.hcl", noisy)
    blocks = (copy / "packer/variables.pkr.hcl").read_text()
    assert blocks != src
    assert fingerprint(copy) == before


def test_stable_under_top_level_block_order(copy: Path) -> None:
    before = fingerprint(copy)
    parts = FILES["packer/variables.pkr.hcl"].split("\n\n")
    write(copy, "packer/variables.pkr.hcl", "\n\n".join(reversed(parts)))
    assert fingerprint(copy) == before


def test_unused_role_other_image_and_qemu_sizing_do_not_count(copy: Path) -> None:
    before = fingerprint(copy)
    write(copy, "roles/unused/tasks/main.yml", "- ansible.builtin.debug: {msg: changed}\n")
    write(copy, "playbooks/other.yml", "- hosts: all\n  roles: [unused, common]\n")
    settings_file = copy / "inventories/local/goldenimage.yml"
    text = settings_file.read_text()
    settings_file.write_text(text.replace("qemu:\n  cpus: 2", "qemu:\n  cpus: 8"))
    assert fingerprint(copy) == before


ROLE_FILES = sorted(rel for rel in FILES if rel.startswith("roles/") and not rel.startswith("roles/unused/"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(ROLE_FILES), st.data())
def test_any_byte_of_a_used_role_file_counts(copy: Path, rel: str, data: st.DataObject) -> None:
    before = fingerprint(copy)
    original = (copy / rel).read_bytes()
    pos = data.draw(st.integers(0, len(original) - 1))
    new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]))
    changed = original[:pos] + bytes([new_byte]) + original[pos + 1 :]
    try:
        (copy / rel).write_bytes(changed)
        try:
            after = fingerprint(copy)
        except ConfigError:
            return  # the byte broke a YAML file the collector parses: loud, not silent
        assert after != before
    finally:
        (copy / rel).write_bytes(original)


@pytest.mark.parametrize(
    ("rel", "old", "new"),
    [
        ("packer/variables.pkr.hcl", 'default = "4G"', 'default = "5G"'),
        ("packer/local.pkrvars.hcl", "cpus = 2", "cpus = 3"),
        ("packer/plugins.pkr.hcl", '">= 1.1.0"', '">= 1.1.1"'),
        ("packer/build.pkr.hcl", "web_port=80", "web_port=81"),
        ("packer/scripts/cleanup.sh", "ssh_host_*", "ssh_host_*key"),
        ("inventories/local/group_vars/all.yml", "pool.ntp.org", "time.example.org"),
        ("inventories/local/hosts.yml", "default:", "builder:"),
        ("inventories/local/goldenimage.yml", "suite: bookworm", "suite: trixie"),
        ("inventories/local/goldenimage.yml", "groups: [web]", "groups: [web, extra]"),
        ("playbooks/web.yml", "web_port: 80", "web_port: 8080"),
    ],
)
def test_a_value_change_counts(copy: Path, rel: str, old: str, new: str) -> None:
    before = fingerprint(copy)
    p = copy / rel
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))
    assert fingerprint(copy) != before


def test_new_file_in_a_role_and_new_var_file_count(copy: Path) -> None:
    before = fingerprint(copy)
    write(copy, "roles/web/vars/main.yml", "web_extra: 1\n")
    one = fingerprint(copy)
    write(copy, "packer/aws.pkrvars.hcl", 'region = "eu-west-1"\n')
    assert len({before, one, fingerprint(copy)}) == 3


def test_executable_bit_counts(copy: Path) -> None:
    before = fingerprint(copy)
    os.chmod(copy / "roles/web/files/healthcheck.sh", 0o644)
    assert fingerprint(copy) != before


@pytest.mark.parametrize(
    "extra",
    [
        {**EXTRA, "base:image": "sha256:" + "2" * 64},
        {**EXTRA, "tool:packer": "1.11.3"},
        {**EXTRA, "tool:ansible-core": "2.19.15"},
        {k: v for k, v in EXTRA.items() if k != "tool:packer"},
    ],
)
def test_base_image_and_tool_versions_count(project: Path, extra: dict[str, str]) -> None:
    assert fingerprint(project, extra=extra) != fingerprint(project)


@given(
    st.sampled_from(sorted(EXTRA)),
    st.text(min_size=1, max_size=30),
    st.text(min_size=1, max_size=30),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_base_image_id_or_tool_version_counts(project: Path, key: str, a: str, b: str) -> None:
    fa = fingerprint(project, extra={**EXTRA, key: a})
    fb = fingerprint(project, extra={**EXTRA, key: b})
    assert (fa == fb) == (a == b)


hcl_strings = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 -_.:/", max_size=16)


@given(hcl_strings, hcl_strings)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_variable_value_counts(copy: Path, a: str, b: str) -> None:
    rel = "packer/variables.pkr.hcl"
    original = (copy / rel).read_text()
    try:
        write(copy, rel, original.replace('default = "4G"', f'default = "{a}"'))
        fa = fingerprint(copy)
        write(copy, rel, original.replace('default = "4G"', f'default = "{b}"'))
        fb = fingerprint(copy)
    finally:
        write(copy, rel, original)
    assert (fa == fb) == (a == b)


@given(st.lists(st.tuples(st.sampled_from(sorted(FILES)), st.integers(0, 2**31 - 1)), max_size=10))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_stable_under_any_mtimes(copy: Path, touches: list[tuple[str, int]]) -> None:
    before = fingerprint(copy)
    for rel, mtime in touches:
        os.utime(copy / rel, (mtime, mtime))
    assert fingerprint(copy) == before


def test_malformed_template_is_a_template_error_naming_file_and_line(copy: Path) -> None:
    write(copy, "packer/sources.pkr.hcl", 'source "qemu" "d" {\n  cpus = \n}\n')
    with pytest.raises(TemplateError, match=r"^packer/sources\.pkr\.hcl:2(:\d+)?: invalid HCL2"):
        fingerprint(copy)


def test_missing_role_names_playbook_and_role(copy: Path) -> None:
    write(copy, "playbooks/web.yml", "- hosts: all\n  roles: [common, nope]\n")
    with pytest.raises(ConfigError, match=r"playbooks/web\.yml: role 'nope' not found"):
        fingerprint(copy)


def test_bad_extra_name_is_a_bug(project: Path) -> None:
    with pytest.raises(ValueError):
        fingerprint(project, extra={"packer": "1"})


def test_symlinked_role_dir_inside_project_is_followed(copy: Path) -> None:
    shutil.move(copy / "roles/tls", copy / "shared-tls")
    os.symlink("../shared-tls", copy / "roles/tls")
    assert "roles/tls/tasks/main.yml" in names_of(copy)


def _many(n: int) -> Iterator[tuple[str, bytes]]:
    for i in range(n):
        yield f"roles/common/files/f{i:03d}.txt", f"file {i}\n".encode()


def test_thread_pool_path_matches_serial(copy: Path) -> None:
    paths = [write(copy, rel, data) for rel, data in _many(200)]
    pooled = fp.hash_files(paths, copy)
    serial = [FingerprintInput(p.relative_to(copy).as_posix(), fp.file_digest(p)) for p in paths]
    assert pooled == serial


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 5 * (1 << 20) + 7])
def test_file_digest_any_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    assert fp.file_digest(write(tmp_path, "blob", data)) == fp.bytes_digest(data)


def test_fifo_in_a_role_is_an_error_not_a_hang(copy: Path) -> None:
    os.mkfifo(copy / "roles/web/files/pipe")
    with pytest.raises(ConfigError, match=r"roles/web/files/pipe: cannot read: not a regular"):
        fingerprint(copy)


def test_imported_playbooks_vars_files_and_vault_tags_are_followed(copy: Path) -> None:
    write(
        copy,
        "playbooks/web.yml",
        FILES["playbooks/web.yml"] + ("- ansible.builtin.import_playbook: extra.yml\n"),
    )
    write(
        copy,
        "playbooks/extra.yml",
        (
            "- hosts: all\n"
            "  vars:\n    secret: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162\n"
            "  vars_files:\n    - vars/common.yml\n    - [vars/missing.yml, vars/fallback.yml]\n"
            "  roles: [extra]\n"
        ),
    )
    write(copy, "playbooks/vars/common.yml", "a: 1\n")
    write(copy, "playbooks/vars/fallback.yml", "b: 1\n")
    write(copy, "playbooks/roles/extra/tasks/main.yml", "- ansible.builtin.debug: {}\n")
    got = names_of(copy)
    assert {
        "playbooks/extra.yml",
        "playbooks/vars/common.yml",
        "playbooks/vars/fallback.yml",
        "playbooks/roles/extra/tasks/main.yml",
    } <= got


def test_missing_vars_file_is_an_error(copy: Path) -> None:
    write(copy, "playbooks/web.yml", "- hosts: all\n  vars_files: [nope.yml]\n")
    with pytest.raises(ConfigError, match=r"playbooks/web\.yml: vars_files: nope\.yml"):
        fingerprint(copy)


def test_invalid_playbook_yaml_names_file_and_line(copy: Path) -> None:
    write(copy, "playbooks/web.yml", "- hosts: all\n  roles: [a\n")
    with pytest.raises(ConfigError, match=r"^playbooks/web\.yml:\d+: invalid YAML"):
        fingerprint(copy)

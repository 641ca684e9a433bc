"""Bring your own roles, for real and offline: requirements.yml installed by ansible-galaxy
from local tarballs, used by ansible-playbook; a changed requirement is a new fingerprint;
a broken playbook is refused by preflight before anything is built; `invoke image.new`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage import fingerprint as fp
from goldenimage import preflight, requirements
from goldenimage.adapters import galaxy
from goldenimage.progress import Reporter
from goldenimage.settings import load_environment
from tests.conftest import run_invoke
from tests.vendored import vendor

pytestmark = pytest.mark.integration
EXTRA = {"base:image": "sha256:base", "tool:packer": "1.6.6", "tool:ansible-core": "2.19"}


def test_requirements_are_installed_once_and_ansible_uses_them(project: Path, tmp_path: Path) -> None:
    vendor(project)
    reqs = requirements.load(project)
    assert reqs is not None
    installed = galaxy.ensure(project, reqs, Reporter(quiet=True))
    assert installed.directory == reqs.install_dir(project)
    items = {i["name"]: i for i in installed.items}
    assert set(items) == {"osvars", "goldenimage_test.tools"}
    assert items["goldenimage_test.tools"]["installed_version"] == "1.0.0"
    assert all(i["files_sha256"] for i in items.values())
    stamp = (installed.directory / galaxy.INSTALLED).stat().st_mtime_ns
    again = galaxy.ensure(project, reqs, Reporter(quiet=True))  # the same content: reused, not reinstalled
    assert (again.directory / galaxy.INSTALLED).stat().st_mtime_ns == stamp
    assert not [p for p in installed.directory.parent.iterdir() if p.name.startswith(".")]

    play = tmp_path / "play.yml"
    play.write_text("- name: Uses both\n  hosts: all\n  gather_facts: true\n  gather_subset: [min]\n"
                    "  roles: [osvars]\n  tasks:\n    - name: Shout\n      ansible.builtin.debug:\n"
                    "        msg: \"{{ 'hello' | goldenimage_test.tools.shout }} {{ osvars_packager }}\"\n")
    env = {**os.environ, **galaxy.ansible_env(project, reqs), "ANSIBLE_NOCOLOR": "1"}
    res = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}",
                          "--check", str(play)], env=env, capture_output=True, text=True, cwd=project)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "HELLO! apt" in res.stdout  # the collection's filter, and the role's Debian variables


def _image_uses_osvars(project: Path) -> None:
    web = project / "playbooks" / "web.yml"
    web.write_text(web.read_text().replace("    - role: web\n", "    - role: osvars\n    - role: web\n"))


def test_a_changed_requirement_is_a_new_fingerprint_naming_it(project: Path) -> None:
    vendor(project)
    _image_uses_osvars(project)
    env = load_environment("local", project)
    before = fp.collect(project, env, "web", EXTRA)
    names = {i.name for i in before}
    assert {"requirement:role:osvars", "requirement:collection:goldenimage_test.tools"} <= names
    assert "requirement:role:osvars" not in {i.name for i in fp.collect(project, env, "cache", EXTRA)}
    vendor(project, collection_version="1.0.1")
    after = fp.collect(project, env, "web", EXTRA)
    assert fp.compute(before) != fp.compute(after)
    changed = fp.diff(fp.as_manifest(before), fp.as_manifest(after))
    assert changed["changed"] == ["requirement:collection:goldenimage_test.tools"], changed


def bake_fails(project: Path, home: Path) -> str:
    res = run_invoke("bake", "--image", "web", "--force", root=project, home=home, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    error = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1, res.stderr
    # nothing built: no base disk, no image, no workspace
    assert not (home / "base").exists() and not (home / "store" / "images").exists()
    assert not list((home / "store").glob(".tmp/*"))
    return error[0]


@pytest.mark.parametrize(("breakage", "says"), [
    (lambda p: (p / "requirements.yml").write_text("roles:\n  - src: geerlingguy.docker\n"),
     "error: requirements.yml: field roles[0]: role 'geerlingguy.docker' is not pinned (no version)"),
    (lambda p: (p / "playbooks/web.yml").write_text("- name: Web\n  hosts: all\n  roles: [nosuch]\n"),
     "error: playbooks/web.yml: role 'nosuch' not found under roles/ nor in requirements.yml"),
    (lambda p: (p / "playbooks/web.yml").write_text("- name: Web\n  hosts: all\n  roles: [web\n"),
     "error: playbooks/web.yml:4: invalid YAML"),
    (lambda p: (p / "playbooks/web.yml").write_text(
        "- name: Web\n  hosts: all\n  tasks:\n    - name: X\n      ansible.builtin.debug: {msg: x}\n      bogus: 1\n"),
     "error: playbooks/web.yml:4:7: ansible-playbook --syntax-check: conflicting action statements"),
])
def test_a_broken_playbook_is_refused_before_anything_is_built(project: Path, tmp_path: Path, breakage, says) -> None:  # type: ignore[no-untyped-def]
    breakage(project)
    error = bake_fails(project, tmp_path / "home")
    assert error.startswith(says), error


def test_a_lint_failure_names_file_line_and_rule(project: Path, tmp_path: Path) -> None:
    tasks = project / "roles/web/tasks/main.yml"
    tasks.write_text(tasks.read_text() + "\n- ansible.builtin.command: echo unnamed\n")
    error = bake_fails(project, tmp_path / "home")
    line = len(tasks.read_text().splitlines())
    assert error.startswith(f"error: roles/web/tasks/main.yml:{line}: ansible-lint name[missing]"), error


def test_image_new_passes_preflight_on_the_first_try(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     ) -> None:
    monkeypatch.setenv("GOLDENIMAGE_HOME", str(tmp_path / "home"))
    res = run_invoke("image.new", "--image", "db", "--json", root=project, home=tmp_path / "home")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["parent"] == "base" and "tests/image/db/test_db.py" in doc["files"]
    env = load_environment("local", project)
    assert env.image("db").parent is not None and env.image("db").parent.image == "base"
    preflight.check(env, ["base", "db"], Reporter(quiet=True))  # real syntax check and ansible-lint
    assert "gather_subset: [min]" in (project / "playbooks/db.yml").read_text()
    before = (project / "inventories/local/goldenimage.yml").read_text()
    for args, says in ((["--image", "db"], "field images.db: image 'db' exists already"),
                       (["--image", "Db"], "'Db': image names are [a-z][a-z0-9-]*"),
                       (["--image", "x", "--parent", "nope"], "--parent: no image 'nope'"),
                       ([], "give the new image's name")):
        bad = run_invoke("image.new", *args, root=project, home=tmp_path / "home")
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert (project / "inventories/local/goldenimage.yml").read_text() == before
    assert not (project / "playbooks/x.yml").exists()

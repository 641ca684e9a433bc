"""requirements.yml read as data: every entry pinned, local sources pinned by content, the
fingerprint inputs an image gets from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldenimage import requirements
from goldenimage.errors import ConfigError


def write(root: Path, text: str) -> None:
    (root / "requirements.yml").write_text(text)


def test_no_file_no_requirements(tmp_path: Path) -> None:
    assert requirements.load(tmp_path) is None


def test_pinned_galaxy_and_git_entries(tmp_path: Path) -> None:
    write(tmp_path, "roles:\n  - src: geerlingguy.docker\n    version: 7.4.1\n"
                    "  - name: hardening\n    src: https://github.com/example/hardening.git\n    scm: git\n"
                    "    version: 0b1c2d3\ncollections:\n  - name: community.general\n    version: 9.5.0\n")
    reqs = requirements.load(tmp_path)
    assert reqs is not None and reqs.role_names == {"geerlingguy.docker", "hardening"}
    assert reqs.inputs() == {
        "requirement:role:geerlingguy.docker": "7.4.1 geerlingguy.docker",
        "requirement:role:hardening": "0b1c2d3 https://github.com/example/hardening.git",
        "requirement:collection:community.general": "9.5.0 community.general",
    }
    assert reqs.install_dir(tmp_path) == tmp_path / ".goldenimage" / "requirements" / reqs.key[:16]


@pytest.mark.parametrize(("text", "says"), [
    ("roles:\n  - src: geerlingguy.docker\n", "field roles[0]: role 'geerlingguy.docker' is not pinned (no version)"),
    ("collections:\n  - name: community.general\n    version: '>=9.0.0'\n",
     "field collections[0]: collection 'community.general' is not pinned (version '>=9.0.0' is not an exact version)"),
    ("collections:\n  - community.general\n", "field collections[0]: collection 'community.general' is not pinned"),
    ("roles:\n  - src: geerlingguy.docker\n    version: latest\n", "is not pinned (version 'latest'"),
    ("roles:\n  - src: https://github.com/example/x.git\n    version: v1\n", "field roles[0]: give the role a `name`"),
    ("roles:\n  - src: ./vendor/none.tar.gz\n    name: none\n", "field roles[0]: ./vendor/none.tar.gz: no such file"),
    ("roles:\n  - {src: a.b, version: '1'}\n  - {src: a.b, version: '2'}\n", "field roles[1]: role 'a.b' is listed twice"),
    ("roles: [\n", "requirements.yml:2: invalid YAML"),
    ("packages: []\n", "expected `roles:` and/or `collections:` lists"),
])
def test_unpinned_or_broken_entries_are_refused_naming_them(tmp_path: Path, text: str, says: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        requirements.load(tmp_path)
    assert str(err.value).startswith("requirements.yml") and says in str(err.value)


def test_a_local_source_is_pinned_by_its_content(tmp_path: Path) -> None:
    (tmp_path / "vendor").mkdir()
    tarball = tmp_path / "vendor" / "r.tar.gz"
    tarball.write_bytes(b"one")
    write(tmp_path, "roles:\n  - src: ./vendor/r.tar.gz\n    name: r\n")
    first = requirements.load(tmp_path)
    tarball.write_bytes(b"two")
    second = requirements.load(tmp_path)
    assert first is not None and second is not None
    assert first.key != second.key
    assert first.inputs()["requirement:role:r"] != second.inputs()["requirement:role:r"]
    assert "sha256:" in second.inputs()["requirement:role:r"]


def test_a_local_collection_is_named_by_its_own_manifest(tmp_path: Path) -> None:
    from tests.vendored import collection_tarball

    path = collection_tarball(tmp_path, "2.1.0")
    write(tmp_path, f"collections:\n  - name: ./{path.relative_to(tmp_path)}\n    type: file\n")
    reqs = requirements.load(tmp_path)
    assert reqs is not None
    (coll,) = reqs.collections
    assert (coll.name, coll.version) == ("goldenimage_test.tools", "2.1.0") and coll.digest

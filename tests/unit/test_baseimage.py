from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from goldenimage.adapters.baseimage import ensure_base_image, recipe_key
from goldenimage.errors import ConfigError
from goldenimage.progress import Reporter
from goldenimage.settings import BaseImageSpec


def test_recipe_key_changes_with_every_input() -> None:
    base = BaseImageSpec()
    keys = {
        recipe_key(base, "1.3.5"),
        recipe_key(base, "1.4.0"),
        recipe_key(BaseImageSpec(suite="trixie"), "1.3.5"),
        recipe_key(BaseImageSpec(packages=["vim"]), "1.3.5"),
        recipe_key(BaseImageSpec(size="5G"), "1.3.5"),
        recipe_key(BaseImageSpec(mirror="http://mirror.example/debian"), "1.3.5"),
    }
    assert len(keys) == 6
    assert recipe_key(BaseImageSpec(packages=["b", "a"]), "1") == recipe_key(BaseImageSpec(packages=["a", "b"]), "1")


def test_user_image_by_path_is_verified(tmp_path: Path) -> None:
    disk = tmp_path / "cloud.qcow2"
    disk.write_bytes(b"not really a disk")
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    got = ensure_base_image(BaseImageSpec(url=str(disk), checksum=f"sha256:{digest}"), tmp_path / "c", Reporter(quiet=True))
    assert got.path == disk and got.identity == f"sha256:{digest}"


def test_user_image_with_wrong_checksum(tmp_path: Path) -> None:
    disk = tmp_path / "cloud.qcow2"
    disk.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"base.checksum: .*cloud.qcow2 has sha256:"):
        ensure_base_image(BaseImageSpec(url=str(disk), checksum="sha256:" + "0" * 64), tmp_path, Reporter(quiet=True))


def test_user_image_missing_file_or_checksum(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        ensure_base_image(BaseImageSpec(url=str(tmp_path / "nope"), checksum="sha256:" + "0" * 64), tmp_path,
                          Reporter(quiet=True))
    with pytest.raises(ConfigError, match="checksum is missing"):
        ensure_base_image(BaseImageSpec(url=str(tmp_path / "nope")), tmp_path, Reporter(quiet=True))

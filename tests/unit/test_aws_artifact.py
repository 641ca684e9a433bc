"""Packer's amazon artifact id, read back into the AMIs a bake made."""

from __future__ import annotations

import pytest

from goldenimage.aws.target import parse_artifact
from goldenimage.errors import BuildFailed


@pytest.mark.parametrize(("artifact", "amis"), [
    ("us-east-1:ami-0123456789abcdef0", {"us-east-1": "ami-0123456789abcdef0"}),
    ("eu-west-1:ami-f2c4a6ef6c2cef2a7,us-east-1:ami-c2018b6fe3d99fed6",
     {"eu-west-1": "ami-f2c4a6ef6c2cef2a7", "us-east-1": "ami-c2018b6fe3d99fed6"}),
])
def test_artifact_ids_map_regions_to_amis(artifact: str, amis: dict[str, str]) -> None:
    assert parse_artifact(artifact) == amis


@pytest.mark.parametrize("artifact", ["", "ami-0123456789abcdef0", "us-east-1:snap-01234567", "us-east-1:ami-XYZ"])
def test_unexpected_artifact_ids_are_build_failures(artifact: str) -> None:
    with pytest.raises(BuildFailed, match="packer manifest"):
        parse_artifact(artifact)

"""Image families on target aws, against the moto server: a child AMI is built from its
parent's AMI, its tags record the ancestry, and revoke --cascade follows them."""

from __future__ import annotations

from typing import Any

import pytest

from goldenimage import commands
from goldenimage.aws.ami import packer_vars
from goldenimage.aws.context import registry_for
from goldenimage.aws.target import AwsTarget
from goldenimage.models import ImageRecord
from goldenimage.progress import Reporter
from goldenimage.settings import load_environment
from tests.integration.conftest import MotoAws

pytestmark = pytest.mark.integration


def test_a_child_ami_stands_on_its_parent_ami(moto_aws: MotoAws) -> None:
    def settings(doc: dict[str, Any]) -> None:
        doc["extra"]["aws"]["build"]["ssh_cidrs"] = ["203.0.113.7/32"]
        doc["extra"]["aws"]["deprecate_revoked"] = False  # moto has no EnableImageDeprecation
        doc["trust"] = {"unsigned": "allow"}  # the parent AMI is registered here, unsigned

    moto_aws.settings(settings)
    root, ami = moto_aws.root, moto_aws.ami
    reg = registry_for("aws")
    parent = reg.put(ImageRecord(id="base-1", name="base", env="aws", fingerprint="b" * 64,
                                 created="2026-11-30T01:00:00Z", status="validated", artifact=""),
                     {"ami_id": ami("goldenimage-base-1")})
    env = load_environment("aws", root)
    target = AwsTarget(env)
    base = target.resolve_base(Reporter(quiet=True), parent)
    assert base.details["id"] == parent.id
    assert base.identity == f"ami:us-east-1:{parent.id}" == target.parent_base_identity(parent, {})
    v = packer_vars(env, base.details, image="web", image_id="web-1", fingerprint="c" * 64)
    assert v["aws_source_ami"] == parent.id
    assert {k: v["tags"][f"goldenimage:parent-{k}"] for k in ("id", "name", "fingerprint")} == {
        "id": parent.id, "name": "base", "fingerprint": "b" * 64}

    child = reg.put(ImageRecord(id="web-1", name="web", env="aws", fingerprint="c" * 64,
                                created="2026-11-30T02:00:00Z", status="validated", artifact=""),
                    {"ami_id": ami("goldenimage-web-1"),
                     "parent": {"id": parent.id, "name": "base", "fingerprint": "b" * 64, "channel": None}})
    assert reg.get(child.id).extra["parent"]["id"] == parent.id

    listed = commands.images("aws", None, None, Reporter(quiet=True), root=root, tree=True)
    assert [(n["image"], n["images"]) for n in listed["tree"]] == [("base", [parent.id]), ("web", [child.id])]
    out = commands.revoke("aws", parent.id, "CVE-1", Reporter(quiet=True), root=root, cascade=True)
    assert [c["image_id"] for c in out["cascaded"]] == [child.id]
    assert reg.get(child.id).status == "revoked"

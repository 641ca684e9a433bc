"""The real Packer on the real templates: formatting, and `packer validate` of both sources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from goldenimage.adapters.packer import Packer
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def packer() -> Packer:
    return Packer.detect()


def test_templates_are_formatted(packer: Packer) -> None:
    for f in sorted((ROOT / "packer").glob("*.pkr.hcl")):
        res = subprocess.run([packer.path, "fmt", "-check", str(f)], capture_output=True, text=True)
        assert res.returncode == 0, f"{f.name} needs `packer fmt`: {res.stdout}"


def _vars(tmp_path: Path, **extra: object) -> Path:
    doc = {
        "image_name": "web", "image_id": "web-test", "fingerprint": "a" * 64,
        "playbook": str(ROOT / "playbooks/web.yml"), "inventory_directory": str(ROOT / "inventories/local"),
        "groups": ["web"], "extra_vars_file": str(tmp_path / "x.json"), "roles_path": str(ROOT / "roles"),
        "manifest_path": str(tmp_path / "m.json"), **extra,
    }
    path = tmp_path / "vars.pkrvars.json"
    path.write_text(json.dumps(doc))
    return path


def _validate(packer: Packer, tmp_path: Path, only: str, var_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    staged = packer.stage(ROOT / "packer", tmp_path / "staged")
    with packer.env(tmp_path) as penv:
        return subprocess.run([packer.path, "validate", f"-only={only}", f"-var-file={var_file}", str(staged)],
                              capture_output=True, text=True, env={**penv, **env})


def test_qemu_source_validates(packer: Packer, tmp_path: Path) -> None:
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"")
    res = _validate(packer, tmp_path, "qemu.local", _vars(
        tmp_path, base_image=str(base), base_image_checksum="sha256:" + "0" * 64,
        ssh_private_key_file=str(key), accelerator="tcg",
        extra_qemuargs=[["-blockdev", "driver=raw,node-name=gi-apt-in,read-only=on,file.driver=file,"
                                      f"file.filename={base}"],
                        ["-device", "virtio-blk-pci,drive=gi-apt-in,serial=gi-apt-in"]],
        disk_convert_args=["-o", "compression_type=zstd", "-m", "8", "-W"]))
    assert res.returncode == 0, res.stdout + res.stderr


def test_amazon_ebs_source_validates_offline(packer: Packer, tmp_path: Path) -> None:
    res = _validate(packer, tmp_path, "amazon-ebs.aws", _vars(
        tmp_path, aws_region="eu-west-1", aws_source_ami="ami-0123456789abcdef0", ssh_username="admin",
        aws_ami_regions=["eu-central-1"], tags={"goldenimage:fingerprint": "a" * 64}),
        AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(("var", "value", "message"), [
    ("accelerator", "hvf", "The accelerator must be kvm or tcg."),
    ("fingerprint", "xyz", "The fingerprint must be 64 lowercase hex digits."),
    ("disk_size", "4T", "The disk_size must be a size such as 4G or 4096M."),
    ("aws_source_ami", "i-123", "The aws_source_ami must be an AMI id"),
    ("base_image_checksum", "md5:00", "The base_image_checksum must be sha256:<64 hex digits>."),
])
def test_variable_validation_blocks(packer: Packer, tmp_path: Path, var: str, value: str, message: str) -> None:
    res = _validate(packer, tmp_path, "qemu.local", _vars(tmp_path, **{var: value}))
    assert res.returncode != 0
    assert message in " ".join((res.stdout + res.stderr).split())


def test_build_block_is_shared_by_both_sources() -> None:
    text = (ROOT / "packer/build.pkr.hcl").read_text()
    assert '"source.qemu.local"' in text and '"source.amazon-ebs.aws"' in text
    assert "use_proxy" in text and 'post-processor "manifest"' in text
    assert "required_plugins" not in "".join(
        p.read_text() for p in (ROOT / "packer").glob("*.pkr.hcl") if p.name != "plugins.pkr.hcl"
    )


def test_packer_env_puts_ansible_on_path(packer: Packer, tmp_path: Path) -> None:
    with packer.env(tmp_path) as env:
        first = env["PATH"].split(os.pathsep)[0]
        assert (Path(first) / "ansible-playbook").exists()
        tmp = Path(env["TMPDIR"])
        # Packer's plugin sockets live there: the path must stay far below 108 bytes
        assert tmp.is_dir() and len(str(tmp / "packer-plugin1234567890")) < 100
    assert not tmp.exists()


def test_packer_runs_from_a_deep_work_directory(packer: Packer, tmp_path: Path) -> None:
    deep = tmp_path / ("w" * 60) / ("x" * 60)
    deep.mkdir(parents=True)
    key = deep / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    res = _validate(packer, deep, "qemu.local", _vars(
        deep, base_image=str(deep / "base.qcow2"), base_image_checksum="sha256:" + "0" * 64,
        ssh_private_key_file=str(key)))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_bakes_template_check_passes_on_the_real_templates() -> None:
    from goldenimage.build import detect_tools
    from goldenimage.settings import load_environment
    from goldenimage.targets.local import check_templates

    env = load_environment("local", ROOT)
    check_templates(env, "web", detect_tools())  # raises TemplateError on any complaint


def test_amazon_ebs_source_requires_imdsv2_encrypts_and_admits_only_the_runner() -> None:
    import hcl2

    sources = hcl2.load((ROOT / "packer/sources.pkr.hcl").open())["source"]
    aws = next(s['"amazon-ebs"']['"aws"'] for s in sources if '"amazon-ebs"' in s)
    [imds] = aws["metadata_options"]
    assert imds["http_tokens"] == '"required"' and imds["http_put_response_hop_limit"] == 1
    assert aws["imds_support"] == '"v2.0"'
    assert aws["encrypt_boot"] == "${var.aws_encrypt_boot}" and aws["kms_key_id"] == "${var.aws_kms_key_id}"
    assert aws["temporary_security_group_source_cidrs"] == "${var.aws_ssh_cidrs}"
    assert aws["tags"] == aws["snapshot_tags"] == "${var.tags}"
    assert aws["ami_regions"] == "${var.aws_ami_regions}" and aws["ami_users"] == "${var.aws_ami_users}"


def test_amazon_ebs_source_validates_with_the_bakes_own_variables(packer: Packer, tmp_path: Path) -> None:
    """The variables an AMI bake writes (aws/ami.packer_vars) are exactly what the templates take."""
    from goldenimage.aws.ami import packer_vars
    from goldenimage.build import common_packer_vars
    from goldenimage.settings import load_environment

    project = tmp_path / "project"
    for part in ("inventories", "playbooks"):
        shutil.copytree(ROOT / part, project / part)
    settings = project / "inventories" / "aws" / "goldenimage.yml"
    settings.write_text(settings.read_text()
                        .replace("ssh_cidrs: []              # FILL IN", "ssh_cidrs: [203.0.113.7/32] #")
                        .replace("ami_users: []", "ami_users: ['111122223333']")
                        .replace("# kms_key_id: alias/goldenimage", "kms_key_id: alias/goldenimage")
                        .replace("ami_regions: []", "ami_regions: [eu-central-1]")
                        .replace("# region_kms_key_ids:", "region_kms_key_ids:"))
    env = load_environment("aws", project)
    values = packer_vars(env, {"id": "ami-0123456789abcdef0", "root_device_name": "/dev/xvda"},
                         image="web", image_id="web-20261126-120000-abcdef01", fingerprint="a" * 64)
    doc = common_packer_vars(env, "web", tmp_path, image_id="web-20261126-120000-abcdef01", fingerprint="a" * 64,
                       **values)
    (tmp_path / "inventory").mkdir()
    var_file = tmp_path / "aws.pkrvars.json"
    var_file.write_text(json.dumps(doc))
    res = _validate(packer, tmp_path, "amazon-ebs.aws", var_file, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    assert res.returncode == 0, res.stdout + res.stderr

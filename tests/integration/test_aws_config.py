"""`extra.aws` and `extra.sandbox` of an environment's settings: defaults and field errors.

Pure (no AWS API); kept with the AWS tests because it validates the AWS target's settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from goldenimage.errors import ConfigError
from goldenimage.settings import load_environment


def env_with(root: Path, extra: str, target: str = "aws") -> Path:
    (root / "playbooks").mkdir(exist_ok=True)
    (root / "playbooks" / "web.yml").write_text("- hosts: web\n  tasks: []\n")
    d = root / "inventories" / "e1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "goldenimage.yml").write_text(
        f"target: {target}\nimages: {{web: {{playbook: playbooks/web.yml}}}}\n{extra}"
    )
    return root


def test_defaults_when_absent(tmp_path: Path) -> None:
    env = load_environment("e1", env_with(tmp_path, ""))
    aws = env.aws
    assert aws.profile is None and aws.max_attempts == 5 and aws.parameter_prefix == "/goldenimage"
    assert aws.build.encrypt_boot is True and aws.build.ssh_cidrs == []
    sb = env.sandbox
    assert sb.port == 0 and sb.seed.zones == ["a", "b", "c"] and sb.seed.groups["web"].size == 6


def test_the_repository_sandbox_settings_are_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    root = repo if (repo / "playbooks" / "web.yml").is_file() else None
    if root is None:
        pytest.skip("playbooks/web.yml is not in this checkout yet")
    env = load_environment("sandbox", root)
    assert env.settings.target == "sandbox"
    assert env.sandbox.seed.channels == ["stable", "canary"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("extra: {aws: [1]}", "field extra.aws: expected a mapping"),
        ("extra: {aws: {profil: x}}", "field extra.aws.profil: Extra inputs are not permitted"),
        (
            "extra: {aws: {max_attempts: 0}}",
            "field extra.aws.max_attempts: Input should be greater",
        ),
        (
            "extra: {aws: {parameter_prefix: goldenimage}}",
            "field extra.aws.parameter_prefix: String should match",
        ),
        ("extra: {aws: {channel_data_type: json}}", "field extra.aws.channel_data_type"),
        (
            "extra: {aws: {subnets: [sub-1]}}",
            "field extra.aws.subnets: Value error, 'sub-1' is not a subnet id",
        ),
        (
            "extra: {aws: {build: {ami_users: ['12']}}}",
            "field extra.aws.build.ami_users: Value error, '12' is not a 12-digit",
        ),
        (
            "extra: {aws: {base_ami: {id: ami-x}}}",
            "field extra.aws.base_ami.id: String should match",
        ),
        ("extra: {sandbox: {host: 0.0.0.0}}", "field extra.sandbox.host: String should match"),
        (
            "extra: {sandbox: {seed: {channels: [Stable]}}}",
            "field extra.sandbox.seed.channels: Value error, channel 'Stable'",
        ),
        (
            "extra: {sandbox: {seed: {zones: [a, a]}}}",
            "field extra.sandbox.seed.zones: Value error, zones must be distinct",
        ),
    ],
)
def test_field_errors_name_the_file_and_field(tmp_path: Path, extra: str, message: str) -> None:
    env = load_environment("e1", env_with(tmp_path, extra))
    with pytest.raises(ConfigError) as err:
        assert env.aws and env.sandbox
    assert str(err.value).startswith("inventories/e1/goldenimage.yml: ")
    assert message in str(err.value)


def test_other_parts_own_the_rest_of_extra(tmp_path: Path) -> None:
    env = load_environment(
        "e1", env_with(tmp_path, "extra: {rotate: {anything: 1}, aws: {groups: {web: {batch: 2}}}}")
    )
    assert env.aws.groups == {"web": {"batch": 2}}


def test_the_rotation_section_is_the_rotation_policy_parser(tmp_path: Path) -> None:
    env = load_environment("e1", env_with(tmp_path, "extra: {rotation: {groups: {web: {image: web, batch_size: 2}}}}"))
    assert env.rotation["web"].asg == "web" and env.rotation["web"].image == "web"
    bad = load_environment("e1", env_with(tmp_path, "extra: {rotation: {groups: {web: {batch_size: x}}}}"))
    with pytest.raises(ConfigError, match=r"^inventories/e1/goldenimage.yml: field extra.rotation.groups.web.batch_size"):
        assert bad.rotation

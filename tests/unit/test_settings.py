from __future__ import annotations

from pathlib import Path

import pytest

from goldenimage.errors import ConfigError, NotFoundError
from goldenimage.settings import load_environment


def write(project: Path, text: str, env: str = "local") -> None:
    (project / "inventories" / env / "goldenimage.yml").write_text(text)


def test_local_environment_loads(project: Path) -> None:
    env = load_environment("local", project)
    assert env.settings.target == "local"
    assert "web" in env.settings.images
    assert env.image("web").playbook == "playbooks/web.yml"


@pytest.mark.parametrize("name", ["nope", "../local", "Local", ""])
def test_unknown_environment_names_the_value(project: Path, name: str) -> None:
    with pytest.raises(NotFoundError, match="unknown environment") as exc:
        load_environment(name, project)
    assert exc.value.exit_code == 2
    assert "known: aws, local, sandbox" in str(exc.value)


def test_unknown_image_lists_the_known_ones(project: Path) -> None:
    env = load_environment("local", project)
    with pytest.raises(NotFoundError, match=r"unknown image 'db' in inventories/local/goldenimage.yml \(known: base, cache, web\)"):
        env.image("db")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images: {web: {playbook: playbooks/web.yml}}\ntarget: gcp\n", "field target"),
        ("images: {web: {playbook: playbooks/web.yml}}\nqemu: {memory: 12}\n", "field qemu.memory"),
        ("images: {web: {playbook: playbooks/web.yml}}\nqemu: {acclerator: kvm}\n", "field qemu.acclerator"),
        ("images: {web: {playbook: playbooks/nope.yml}}\n", "field images.web.playbook: playbooks/nope.yml"),
        ("images: {Web: {playbook: playbooks/web.yml}}\n", "field images.Web"),
        ("images: {web: {playbook: playbooks/web.yml, disk_size: big}}\n", "field images.web.disk_size"),
        ("base: {checksum: md5:abc}\nimages: {web: {playbook: playbooks/web.yml}}\n", "field base.checksum"),
        ("target: local\n", "field images"),
        ("images: [web\n", "goldenimage.yml:2: invalid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_settings_name_file_and_field(project: Path, text: str, message: str) -> None:
    write(project, text)
    with pytest.raises(ConfigError) as exc:
        load_environment("local", project)
    assert exc.value.exit_code == 2
    assert str(exc.value).startswith("inventories/local/goldenimage.yml")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


RETENTION_BASE = "images: {web: {playbook: playbooks/web.yml}}\nextra:\n  retention:\n"


def test_retention_policy_defaults_and_values(project: Path) -> None:
    write(project, RETENTION_BASE + "    failed_logs_days: 3\n    images:\n      web: {keep: 5, min_age_days: 2,"
                   " revoked: {deprecate_after: 0, disable_after: 0, delete_after: 1}}\n")
    r = load_environment("local", project).retention
    assert r.failed_logs_days == 3
    web = r.images["web"]
    assert (web.keep, web.min_age_days, web.disable_after, web.delete_after) == (5, 2, 7, 14)
    assert web.graces("revoked").delete_after == 1
    assert web.graces("validated").disable_after == 7
    assert load_environment("aws", project).retention.images == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("    images: {web: {keep: -1}}\n", "field extra.retention.images.web.keep: Input should be greater than"),
        ("    images: {db: {keep: 2}}\n", "field extra.retention.images.db: unknown image 'db' (known: web)"),
        ("    images: {web: {delete_after: -3}}\n", "field extra.retention.images.web.delete_after:"),
        ("    images: {web: {quarantined: {disable_after: -1}}}\n",
         "field extra.retention.images.web.quarantined.disable_after:"),
        ("    images: {web: {keep_newest: 2}}\n", "field extra.retention.images.web.keep_newest: Extra inputs"),
        ("    failed_logs_days: -1\n", "field extra.retention.failed_logs_days"),
        ("    leftover_hours: -6\n", "field extra.retention.leftover_hours: Input should be greater than or equal to 0"),
        ("    leftover_hours: soon\n", "field extra.retention.leftover_hours: Input should be a valid integer"),
        ("    [1, 2]\n", "field extra.retention: expected a mapping"),
    ],
)
def test_bad_retention_policy_names_file_and_field(project: Path, text: str, message: str) -> None:
    write(project, RETENTION_BASE + text)
    env = load_environment("local", project)
    with pytest.raises(ConfigError) as exc:
        env.retention  # noqa: B018
    assert exc.value.exit_code == 2
    assert str(exc.value).startswith("inventories/local/goldenimage.yml: field extra.retention")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)

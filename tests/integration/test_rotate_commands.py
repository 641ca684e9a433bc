"""The task glue: environment settings -> policy, clients, channel -> rotate."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from goldenimage.aws.clients import Clients
from goldenimage.errors import ConfigError
from goldenimage.progress import Reporter
from goldenimage.rotation.commands import rollback_command, rotate_command
from tests.integration.rotate_conftest_fixtures import (  # noqa: F401 - fixtures
    aws_fixture,
    moto_url_fixture,
    seed_group,
)

pytestmark = pytest.mark.integration

SETTINGS = """\
target: sandbox
images:
  web: {playbook: playbooks/web.yml}
extra:
  rotation:
    groups:
      web:
        image: web
        channel: stable
        batch_size: %s
        poll_seconds: 0.01
"""


def _project(tmp: Path, batch: str) -> Path:
    (tmp / "packer").mkdir()
    (tmp / "playbooks").mkdir()
    (tmp / "playbooks" / "web.yml").write_text("- hosts: all\n")
    (tmp / "inventories" / "sandbox").mkdir(parents=True)
    (tmp / "inventories" / "sandbox" / "goldenimage.yml").write_text(SETTINGS % batch)
    return tmp


def _fake_context(clients: Clients, channel_image: str) -> types.ModuleType:
    mod = types.ModuleType("goldenimage.aws.context")

    class Registry:
        def require_usable(self, image_id: str) -> Any:
            return types.SimpleNamespace(id=image_id)

        def resolve_channel(self, name: str, channel: str) -> Any:
            assert (name, channel) == ("web", "stable")
            return types.SimpleNamespace(id=channel_image)

    mod.clients_for = lambda env: clients  # type: ignore[attr-defined]
    mod.registry_for = lambda env, clients=None: Registry()  # type: ignore[attr-defined]
    mod.verify_image = lambda env, image_id, registry: {  # type: ignore[attr-defined]
        "image_id": image_id, "verified": False, "admitted": "unsigned: allow"}  # (test_attest_aws: the real one)
    return mod


def test_rotate_from_channel_dry_run_then_rollback(
    aws: Clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = seed_group(aws, size=4)
    monkeypatch.setenv("GOLDENIMAGE_ROOT", str(_project(tmp_path, "50%")))
    monkeypatch.setitem(sys.modules, "goldenimage.aws.context", _fake_context(aws, s.new_ami))
    rep = Reporter(io.StringIO())
    dry = rotate_command(rep, env="sandbox", group="web", dry_run=True)
    assert dry["outcome"] == "planned" and dry["to_image"] == s.new_ami
    done = rotate_command(rep, env="sandbox", group="web")
    assert done["exit_code"] == 0 and done["replaced"] == 4
    back = rollback_command(rep, env="sandbox", group="web")
    assert back["exit_code"] == 0 and back["to_image"] == s.old_ami


def test_bad_policy_names_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDENIMAGE_ROOT", str(_project(tmp_path, "'0%'")))
    with pytest.raises(ConfigError) as exc:
        rotate_command(Reporter(io.StringIO()), env="sandbox", group="web", image_id="ami-1")
    assert str(exc.value).startswith(
        "inventories/sandbox/goldenimage.yml: field extra.rotation.groups.web.batch_size: "
    )


def test_resume_after_a_scale_out_while_stopped_keeps_it(aws: Clients) -> None:
    """Stopped mid-batch, then a scheduled scale-out from 4 to 10 before the resume: the
    resumed rotation replaces what is outdated and keeps the 10 (it used to take the 6 for
    its own surge and retire them)."""
    from goldenimage.errors import Interrupted
    from goldenimage.rotation.executor import StopFlag, rotate
    from goldenimage.rotation.policy import GroupPolicy
    from goldenimage.rotation.state import tag_map
    from tests.integration.rotate_conftest_fixtures import instance_images

    s = seed_group(aws, size=4)
    aws.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web", MaxSize=10)
    pol = GroupPolicy(asg="web", batch_size=2, max_surge_percent=50, poll_seconds=0.01, lock_settle_seconds=0)
    stop = StopFlag()

    def after_launch(**kw: object) -> None:
        stop.requested = True  # Ctrl-C right after the first batch's launch

    event = "after-call.auto-scaling.SetDesiredCapacity"
    aws.autoscaling.meta.events.register(event, after_launch)
    try:
        with pytest.raises(Interrupted):
            rotate(aws, pol, s.new_ami, reporter=Reporter(io.StringIO()), stop=stop)
    finally:
        aws.autoscaling.meta.events.unregister(event, after_launch)
    group = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 4 and tag_map(group).get("goldenimage:rotation-surge", "0") == "0"
    aws.autoscaling.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=10)  # someone else
    res = rotate(aws, pol, None, reporter=Reporter(io.StringIO()), resume=True)
    assert res["outcome"] == "done", res
    group = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 10
    images = instance_images(aws, "web")
    assert len(images) == 10 and set(images.values()) == {s.new_ami}

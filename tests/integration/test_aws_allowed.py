"""`invoke allowed-amis`: EC2 Allowed AMIs criteria for the environment's images.

Gathered against the moto server (sts GetCallerIdentity, the AMIs and channels). moto 5.2.5
serves none of the Allowed AMIs calls (ReplaceImageCriteriaInAllowedImagesSettings,
EnableAllowedImagesSettings, GetAllowedImagesSettings: HTTP 500), so the printed criteria
and the audit-mode call are checked against the real service model through botocore
Stubber -- exactly those two calls.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from goldenimage import cli
from goldenimage.aws import allowed
from goldenimage.aws.ami import ami_name
from goldenimage.aws.clients import AwsContext, Clients
from goldenimage.aws.registry import local_ami_name
from goldenimage.aws.target import AwsTarget
from goldenimage.build import NewImage
from goldenimage.progress import Reporter
from goldenimage.sandbox.target import SandboxTarget
from goldenimage.sections import ImageRetention, RetentionSettings
from goldenimage.settings import Environment, load_environment
from goldenimage.targets import Target
from tests.conftest import ROOT
from tests.integration.test_aws_errors import no_aws_config  # noqa: F401 (a fixture)
from tests.integration.test_aws_references import validated_tags

NOW = datetime(2026, 2, 15, tzinfo=UTC)


def _ec2_wildcards(pattern: str) -> re.Pattern[str]:
    """EC2's name wildcards: `?` one character, `*` any."""
    return re.compile("".join("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern) + r"\Z")


@pytest.fixture
def target(aws_clients: Clients, monkeypatch: pytest.MonkeyPatch) -> AwsTarget:
    t = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    monkeypatch.setattr("goldenimage.targets.target_for", lambda env: t)
    monkeypatch.setattr(Environment, "retention", property(lambda self: RetentionSettings(images={
        "web": ImageRetention(max_age_days=30, disable_after=7)})))
    return t


def test_criteria_admit_the_environments_images_by_owner_name_and_age(
        target: AwsTarget, moto_client: Callable[[str], Any]) -> None:
    ec2 = moto_client("ec2")
    old = ec2.register_image(Name="goldenimage-web-old", RootDeviceName="/dev/sda1")["ImageId"]
    ec2.create_tags(Resources=[old], Tags=validated_tags(1))  # 45 days before NOW
    target.registry().promote(old, "stable")
    r = allowed.allowed_amis("aws", Reporter(io.StringIO()), root=ROOT, now=NOW)
    assert r["account"] == "123456789012" and r["regions"] == ["us-east-1"]
    assert r["criteria"] == {"ImageCriteria": [
        {"ImageProviders": ["123456789012"], "ImageNames": ["goldenimage-base-????????-??????-????????"],
         "DeprecationTimeCondition": {"MaximumDaysSinceDeprecated": 0}},
        {"ImageProviders": ["123456789012"], "ImageNames": ["goldenimage-web-????????-??????-????????"],
         "CreationDateCondition": {"MaximumDaysSinceCreated": 30},
         "DeprecationTimeCondition": {"MaximumDaysSinceDeprecated": 7}}]}
    assert r["commands"][-1] == ("aws ec2 enable-allowed-images-settings --region us-east-1 "
                                 "--allowed-images-settings-state audit-mode")
    assert any(n.startswith(f"{old} (web, on stable) is 45 days old") for n in r["notes"])
    lines = allowed.human_allowed(r)
    assert lines[0].startswith("# EC2 Allowed AMIs for environment aws (account 123456789012")

    # what the real API takes: the criteria as printed, then audit mode (Stubber: moto lacks both)
    real = Clients(AwsContext(region="us-east-1", credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))
    with Stubber(real.ec2) as stub:
        stub.add_response("replace_image_criteria_in_allowed_images_settings", {"ReturnValue": True}, r["criteria"])
        stub.add_response("enable_allowed_images_settings", {"AllowedImagesSettingsState": "audit-mode"},
                          {"AllowedImagesSettingsState": "audit-mode"})
        real.ec2.replace_image_criteria_in_allowed_images_settings(**r["criteria"])
        real.ec2.enable_allowed_images_settings(AllowedImagesSettingsState="audit-mode")
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("target_cls", [AwsTarget, SandboxTarget])
def test_name_patterns_match_exactly_the_names_each_target_gives(target_cls: type[Target]) -> None:
    env = load_environment("sandbox" if target_cls is SandboxTarget else "aws", ROOT)
    t = target_cls(env)
    img = NewImage.start("web", "0123456789abcdef" * 4)
    name = local_ami_name("web", img.id) if target_cls is SandboxTarget else ami_name(img.id)
    web = _ec2_wildcards(t.ami_name_pattern("web"))
    assert web.match(name)
    other = NewImage.start("web2", "f" * 64)
    for wrong in (ami_name(other.id), local_ami_name("web2", other.id), name + "x", name.replace("web", "base")):
        assert not web.match(wrong), wrong
    assert 3 <= len(t.ami_name_pattern("web")) <= 128


def test_bad_input_is_one_error_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                no_aws_config: None) -> None:  # noqa: F811
    for env, want in (("nope", "error: "), ("local", "error: "), ("aws", "error: no AWS credentials")):
        with pytest.raises(SystemExit) as exit_:
            cli.run(lambda r, env=env: allowed.allowed_amis(env, r, root=ROOT), json_out=False)  # type: ignore[misc]
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (env, err)
        assert err.startswith(want) and err.count("\n") == 1, (env, err)
    with pytest.raises(SystemExit):
        cli.run(lambda r: allowed.allowed_amis("local", r, root=ROOT), json_out=False)
    assert "AWS commands need target 'aws' or 'sandbox'" in capsys.readouterr().err

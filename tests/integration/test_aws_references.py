"""What uses an AMI, gathered from the moto server page by page (`aws.references`)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from goldenimage.aws import references
from goldenimage.aws.clients import Clients
from goldenimage.models import CURRENT_IMAGE_TAG, PREVIOUS_IMAGE_TAG
from tests.aws_faults import CallRecorder


def world(moto_client: Callable[[str], Any]) -> dict[str, str]:
    """AMIs used in every way gc must see, and two nothing uses."""
    ec2, asg, ssm = moto_client("ec2"), moto_client("autoscaling"), moto_client("ssm")
    ec2.register_image(Name="seed", RootDeviceName="/dev/sda1")  # moto: a base AMI for run_instances
    names = ["running", "stopped", "terminated", "lt_old", "lt_default", "lt_latest", "lc", "mixed",
             "previous", "current", "ssm_any", "ssm_channel", "unused1", "unused2"]
    base = ec2.describe_images(Owners=["self"])["Images"][0]["ImageId"]
    amis = {}
    for n in names:
        inst = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        amis[n] = ec2.create_image(InstanceId=inst, Name=f"gc-{n}")["ImageId"]
        ec2.terminate_instances(InstanceIds=[inst])
    amis["base"] = base
    for state in ("running", "stopped", "terminated"):
        i = ec2.run_instances(ImageId=amis[state], MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        if state == "stopped":
            ec2.stop_instances(InstanceIds=[i])
        if state == "terminated":
            ec2.terminate_instances(InstanceIds=[i])
    data = {"InstanceType": "t3.micro", "UserData": base64.b64encode(b"#!/bin/sh\n").decode()}
    lt = ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={**data, "ImageId": amis["lt_old"]})
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={**data, "ImageId": amis["lt_default"]})
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={**data, "ImageId": amis["lt_latest"]})
    ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion="2")
    mixed = ec2.create_launch_template(LaunchTemplateName="mixed", LaunchTemplateData={**data, "ImageId": amis["mixed"]})
    asg.create_launch_configuration(LaunchConfigurationName="old-lc", ImageId=amis["lc"], InstanceType="t3.micro")
    zones = ["us-east-1a"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web", MinSize=0, MaxSize=1, DesiredCapacity=0, AvailabilityZones=zones,
        LaunchTemplate={"LaunchTemplateId": lt_id, "Version": "1"},  # an old, non-default version
        Tags=[{"Key": PREVIOUS_IMAGE_TAG, "Value": amis["previous"], "PropagateAtLaunch": False,
               "ResourceId": "web", "ResourceType": "auto-scaling-group"},
              {"Key": CURRENT_IMAGE_TAG, "Value": amis["current"], "PropagateAtLaunch": False,
               "ResourceId": "web", "ResourceType": "auto-scaling-group"}])
    asg.create_auto_scaling_group(
        AutoScalingGroupName="batch", MinSize=0, MaxSize=1, DesiredCapacity=0, AvailabilityZones=zones,
        MixedInstancesPolicy={"LaunchTemplate": {
            "LaunchTemplateSpecification": {"LaunchTemplateName": "mixed", "Version": "$Latest"},
            "Overrides": [{"InstanceType": "t3.small"}]}})
    assert mixed
    ssm.put_parameter(Name="/team/app/ami", Value=amis["ssm_any"], Type="String")
    ssm.put_parameter(Name="/goldenimage/web/stable", Value=amis["ssm_channel"], Type="String")
    ssm.put_parameter(Name="/team/app/not-an-ami", Value="hello", Type="String")
    return {**amis, "lt_id": lt_id}


def validated_tags(day: int, *, env: str = "aws", local_id: str | None = None) -> list[dict[str, str]]:
    """The tags the registry gives a validated `web` image created on 2026-01-`day`."""
    from goldenimage.models import CREATED_TAG, ENV_TAG, FINGERPRINT_TAG, NAME_TAG, STATUS_TAG, TAG

    tags = [{"Key": NAME_TAG, "Value": "web"}, {"Key": ENV_TAG, "Value": env},
            {"Key": STATUS_TAG, "Value": "validated"}, {"Key": FINGERPRINT_TAG, "Value": "sha256:" + "0" * 64},
            {"Key": CREATED_TAG, "Value": f"2026-01-{day:02d}T00:00:00Z"}]
    return tags + ([{"Key": TAG + "local-id", "Value": local_id}] if local_id else [])


def test_every_kind_of_use_is_found_and_nothing_else(aws_clients: Clients,
                                                     moto_client: Callable[[str], Any]) -> None:
    amis = world(moto_client)
    with CallRecorder() as rec:
        refs = references.gather(aws_clients)
    used = {r.image_id for r in refs}
    expected_used = {"running", "stopped", "lt_old", "lt_default", "lt_latest", "lc", "mixed", "previous",
                     "current", "ssm_any", "ssm_channel"}
    assert used == {amis[n] for n in expected_used}
    for n in ("terminated", "unused1", "unused2", "base"):  # base: its instances are all terminated
        assert amis[n] not in used
    why = {(r.image_id, r.reason()) for r in refs}
    lt_id = amis["lt_id"]
    assert (amis["lt_old"], f"{lt_id} v1 (web)") in why
    assert (amis["lt_latest"], f"{lt_id} v3 (web)") in why
    assert (amis["lc"], "launch configuration old-lc") in why
    assert (amis["previous"], "rotation state (asg web, previous image)") in why
    assert (amis["ssm_any"], "ssm parameter /team/app/ami v1") in why
    assert any(i == amis["mixed"] and r.startswith("mixed-instances template lt-") and r.endswith("(asg batch)")
               for i, r in why)
    assert any(i == amis["stopped"] and r.endswith("(stopped)") for i, r in why)
    # listings page by page: no call names an image
    assert set(rec.calls) == {"ec2:DescribeInstances", "ec2:DescribeLaunchTemplates",
                              "ec2:DescribeLaunchTemplateVersions", "autoscaling:DescribeLaunchConfigurations",
                              "autoscaling:DescribeAutoScalingGroups", "ssm:GetParametersByPath",
                              "ssm:GetParameterHistory"}  # once per parameter holding an AMI


def test_the_aws_plan_keeps_every_used_ami(aws_clients: Clients, moto_client: Callable[[str], Any]) -> None:
    """The aws target's gc world on the moto server, planned: exactly the unused, old-enough
    AMIs move a stage; a disabled one (moto has DisableImage) is in its `disabled` stage."""
    from datetime import UTC, datetime

    from goldenimage import retention
    from goldenimage.aws.target import AwsTarget
    from goldenimage.sections import ImageRetention
    from goldenimage.settings import load_environment
    from tests.conftest import ROOT

    amis = world(moto_client)
    ec2 = moto_client("ec2")
    order = ["running", "stopped", "terminated", "lt_old", "lt_default", "lt_latest", "lc", "mixed",
             "previous", "current", "ssm_any", "ssm_channel", "unused1", "unused2"]
    for day, n in enumerate(order, start=1):
        ec2.create_tags(Resources=[amis[n]], Tags=validated_tags(day))
    ec2.disable_image(ImageId=amis["unused1"])
    target = AwsTarget(load_environment("aws", ROOT), clients=aws_clients)
    w = target.gc_world()
    assert {i.id for i in w.images} == {amis[n] for n in order}
    assert w.channels["web"]["stable"][-1]["image_id"] == amis["ssm_channel"]
    policy = {"web": ImageRetention(keep=1, min_age_days=0, deprecate_after=0, disable_after=0, delete_after=0)}
    plan = retention.plan(w.images, w.references, w.channels, policy, datetime(2026, 6, 1, tzinfo=UTC))
    by = {d.image_id: d for d in plan.decisions}
    assert by[amis["unused2"]].reason == "keep: among the newest 1 validated"
    assert by[amis["ssm_channel"]].reason == "keep: channel stable"
    assert by[amis["lt_old"]].reason == f"keep: {amis['lt_id']} v1 (web)"
    assert by[amis["unused1"]].action == "delete" and by[amis["unused1"]].stage == "disabled"
    assert by[amis["terminated"]].action == "deprecate"
    changed = {i for i, d in by.items() if d.action != "keep"}
    assert changed == {amis["unused1"], amis["terminated"]}
    assert by[amis["unused1"]].reclaim > 0 and by[amis["unused1"]].reclaim % (1 << 30) == 0  # snapshot GiB


def _amis(moto_client: Callable[[str], Any], *names: str) -> dict[str, str]:
    ec2 = moto_client("ec2")
    ec2.register_image(Name="seed", RootDeviceName="/dev/sda1")
    base = ec2.describe_images(Owners=["self"])["Images"][0]["ImageId"]
    out = {}
    for n in names:
        inst = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        out[n] = ec2.create_image(InstanceId=inst, Name=f"gc-{n}")["ImageId"]
        ec2.terminate_instances(InstanceIds=[inst])
    return out


def test_pinned_parameter_versions_and_templates_that_resolve_a_parameter(
        aws_clients: Clients, moto_client: Callable[[str], Any]) -> None:
    """An older version of a parameter still pinned by a label, and launch templates naming
    a parameter (`resolve:ssm:name`, `:N`, `:label`: moto leaves them unresolved, so gc
    reads the parameter's history itself) protect the AMIs they reach; an older version
    nothing pins does not."""
    amis = _amis(moto_client, "v1_labeled", "v2_unpinned", "v3_current", "lt_v1", "lt_cur", "lt_label",
                 "lt_label_v1", "unused")
    ssm, ec2 = moto_client("ssm"), moto_client("ec2")
    name = "/team/app/ami"
    for n in ("v1_labeled", "v2_unpinned", "v3_current"):
        ssm.put_parameter(Name=name, Value=amis[n], Type="String", Overwrite=True, DataType="text")
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["golden"])
    # parameters only launch templates name (no AMI-valued current version of their own matter)
    for n in ("lt_v1", "lt_cur"):
        ssm.put_parameter(Name="/lt/ami", Value=amis[n], Type="String", Overwrite=True)
    for n in ("lt_label_v1", "lt_label"):
        ssm.put_parameter(Name="lt-label-ami", Value=amis[n], Type="String", Overwrite=True)
    ssm.label_parameter_version(Name="lt-label-ami", ParameterVersion=1, Labels=["pinned"])
    data = {"InstanceType": "t3.micro"}
    lt = ec2.create_launch_template(LaunchTemplateName="ssm", LaunchTemplateData={**data, "ImageId": "resolve:ssm:/lt/ami:1"})
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={**data, "ImageId": "resolve:ssm:/lt/ami"})
    ec2.create_launch_template_version(LaunchTemplateId=lt_id,
                                       LaunchTemplateData={**data, "ImageId": "resolve:ssm:lt-label-ami:pinned"})
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={**data, "ImageId": "resolve:ssm:/gone"})

    refs = references.gather(aws_clients)
    why = {(r.image_id, r.reason()) for r in refs}
    used = {r.image_id for r in refs}
    assert (amis["v1_labeled"], f"ssm parameter {name}:1 (label golden)") in why
    assert (amis["v3_current"], f"ssm parameter {name} v3") in why
    assert (amis["lt_v1"], f"{lt_id} v1 (ssm, resolve:ssm:/lt/ami:1)") in why
    assert (amis["lt_cur"], f"{lt_id} v2 (ssm, resolve:ssm:/lt/ami)") in why
    assert (amis["lt_label_v1"], f"{lt_id} v3 (ssm, resolve:ssm:lt-label-ami:pinned)") in why
    assert amis["v2_unpinned"] not in used and amis["unused"] not in used
    # lt-label-ami's current version holds an AMI, so it is a parameter use as well
    assert amis["lt_label"] in used


def test_a_copy_in_another_region_keeps_the_image(aws_clients: Clients, moto_client: Callable[[str], Any]) -> None:
    """extra.aws ami_regions: an image whose copy in another region is used is kept, with the
    use and the region in its reason; an image whose copies are all unused moves on."""
    from datetime import UTC, datetime

    import boto3
    from botocore.config import Config

    from goldenimage import retention
    from goldenimage.aws.target import AwsTarget
    from goldenimage.sections import ImageRetention
    from goldenimage.settings import load_environment
    from tests.conftest import ROOT
    from tests.integration.conftest import CREDENTIALS

    env = load_environment("aws", ROOT)
    env.aws.build.ami_regions[:] = ["us-east-1", "eu-west-1"]
    amis = _amis(moto_client, "used_copy", "no_use", "newest")
    west = boto3.session.Session(region_name="eu-west-1", **CREDENTIALS).client(
        "ec2", endpoint_url=aws_clients.ctx.endpoint_url, config=Config(retries={"max_attempts": 1}))
    ec2 = moto_client("ec2")
    copies = {}
    for day, n in enumerate(amis, start=1):
        tags = validated_tags(day, local_id=f"web-{n}")
        ec2.create_tags(Resources=[amis[n]], Tags=tags)
        copies[n] = west.copy_image(SourceImageId=amis[n], SourceRegion="us-east-1", Name=f"gc-{n}")["ImageId"]
        west.create_tags(Resources=[copies[n]], Tags=tags)
    west.run_instances(ImageId=copies["used_copy"], MinCount=1, MaxCount=1)
    target = AwsTarget(env, clients=aws_clients)
    w = target.gc_world()
    assert w.where["copy_regions"] == ["eu-west-1"]
    policy = {"web": ImageRetention(keep=1, min_age_days=0, deprecate_after=0, disable_after=0, delete_after=0)}
    plan = retention.plan(w.images, w.references, w.channels, policy, datetime(2026, 6, 1, tzinfo=UTC))
    by = {d.image_id: d for d in plan.decisions}
    assert by[amis["used_copy"]].action == "keep"
    assert "in eu-west-1" in by[amis["used_copy"]].reason and copies["used_copy"] in by[amis["used_copy"]].reason
    assert by[amis["no_use"]].action == "deprecate"


def test_describe_image_references_is_asked_at_full_depth_on_real_aws() -> None:
    """moto lacks DescribeImageReferences: a botocore Stubber stands for real AWS. gc asks it
    for every launch-template version (depth 10,000, not the default 10), instances in any
    state but terminated, 10 AMIs per request (its limit) and page by page; the sandbox endpoint is never asked."""
    from botocore.stub import Stubber

    from goldenimage.aws.clients import AwsContext

    clients = Clients(AwsContext(region="us-east-1", credentials={"aws_access_key_id": "x",
                                                                  "aws_secret_access_key": "x"}))
    ids = [f"ami-{i:017x}" for i in range(15)]
    stub = Stubber(clients.ec2)
    types = [{"ResourceType": "ec2:Instance", "ResourceTypeOptions": [
                 {"OptionName": "state-name", "OptionValues": references.LIVE_STATES}]},
             {"ResourceType": "ec2:LaunchTemplate", "ResourceTypeOptions": [
                 {"OptionName": "version-depth", "OptionValues": ["10000"]}]},
             {"ResourceType": "ssm:Parameter"}, {"ResourceType": "imagebuilder:ImageRecipe"},
             {"ResourceType": "imagebuilder:ContainerRecipe"}]
    arn = "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-0abc"
    stub.add_response("describe_image_references",
                      {"ImageReferences": [{"ImageId": ids[3], "ResourceType": "ec2:LaunchTemplate", "Arn": arn}],
                       "NextToken": "t"}, {"ImageIds": ids[:10], "ResourceTypes": types})
    stub.add_response("describe_image_references",
                      {"ImageReferences": [{"ImageId": ids[7], "ResourceType": "ec2:Instance", "Arn": "arn:i"}]},
                      {"ImageIds": ids[:10], "ResourceTypes": types, "NextToken": "t"})
    stub.add_response("describe_image_references", {"ImageReferences": []},
                      {"ImageIds": ids[10:], "ResourceTypes": types})
    with stub:
        refs = references.second_opinion(clients, list(reversed(ids)))
    stub.assert_no_pending_responses()
    assert [(r.image_id, r.reason()) for r in refs] == [
        (ids[3], f"image reference ec2:LaunchTemplate {arn}"), (ids[7], "image reference ec2:Instance arn:i")]
    sandbox = Clients(AwsContext(region="us-east-1", endpoint_url="http://127.0.0.1:1",
                                 credentials={"aws_access_key_id": "x", "aws_secret_access_key": "x"}))
    assert references.second_opinion(sandbox, ids) == []


def test_templates_and_versions_past_a_moto_page_are_all_seen(aws_clients: Clients,
                                                               moto_client: Callable[[str], Any]) -> None:
    """moto cuts DescribeLaunchTemplates and DescribeLaunchTemplateVersions at 15 without a
    NextToken: the sandbox asks for one page holding them all, so the 20th template and a
    template's 20th version still protect their AMIs."""
    ec2 = moto_client("ec2")
    ec2.register_image(Name="seed", RootDeviceName="/dev/sda1")
    amis = [ec2.register_image(Name=f"gc-{n}", RootDeviceName="/dev/sda1")["ImageId"] for n in range(40)]
    for n in range(20):
        ec2.create_launch_template(LaunchTemplateName=f"t{n:02d}", LaunchTemplateData={"ImageId": amis[n]})
    deep = ec2.describe_launch_templates(LaunchTemplateNames=["t00"])["LaunchTemplates"][0]["LaunchTemplateId"]
    for n in range(20, 40):
        ec2.create_launch_template_version(LaunchTemplateId=deep, LaunchTemplateData={"ImageId": amis[n]})
    assert len(ec2.describe_launch_templates()["LaunchTemplates"]) == 15  # moto's cut
    used = {r.image_id for r in references.gather(aws_clients)}
    assert used == set(amis)

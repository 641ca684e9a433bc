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
                              "autoscaling:DescribeAutoScalingGroups", "ssm:GetParametersByPath"}

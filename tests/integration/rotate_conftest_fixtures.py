"""A moto server for the rotation tests, until the shared integration fixture lands.

Kept small on purpose: `moto_url` (one server per session), `aws` (reset per test, returns
`Clients`) and `seed_group` (a group spread evenly over zones, a target group, an alarm,
two validated AMIs). Swap `moto_url`/`aws` for the shared fixture when it exists.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from goldenimage.aws.clients import AwsContext, Clients

CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="session", name="moto_url")
def moto_url_fixture() -> Iterator[str]:
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def make_clients(url: str, max_attempts: int = 1) -> Clients:
    return Clients(
        AwsContext(
            region="us-east-1", endpoint_url=url, credentials=dict(CREDS), max_attempts=max_attempts
        )
    )


@pytest.fixture(name="aws")
def aws_fixture(moto_url: str) -> Clients:
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req).close()
    return make_clients(moto_url)


@dataclass
class Seeded:
    group: str
    lt_id: str
    old_ami: str
    new_ami: str
    tg_arn: str
    alarm: str
    azs: tuple[str, ...]


def seed_group(
    clients: Clients,
    *,
    size: int = 12,
    azs: tuple[str, ...] = ("us-east-1a", "us-east-1b", "us-east-1c"),
    imdsv2: bool = True,
    name: str = "web",
) -> Seeded:
    ec2, asg = clients.ec2, clients.autoscaling

    def ami(n: str, status: str = "validated") -> str:
        iid = ec2.register_image(Name=n, RootDeviceName="/dev/sda1")["ImageId"]
        ec2.create_tags(
            Resources=[iid],
            Tags=[
                {"Key": "goldenimage:status", "Value": status},
                {"Key": "goldenimage:fingerprint", "Value": f"fp-{n}"},
            ],
        )
        return str(iid)

    old, new = ami(f"{name}-old"), ami(f"{name}-new")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    data: dict[str, Any] = {
        "ImageId": old,
        "InstanceType": "t3.micro",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": "role", "Value": name}]}
        ],
    }
    if imdsv2:
        data["MetadataOptions"] = {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    lt = ec2.create_launch_template(LaunchTemplateName=f"{name}-lt", LaunchTemplateData=data)
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    tg = clients.elbv2.create_target_group(Name=f"{name}-tg", Protocol="HTTP", Port=80, VpcId=vpc)
    tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": lt_id, "Version": "1"},
        MinSize=0,
        MaxSize=size,
        DesiredCapacity=0,
        AvailabilityZones=list(azs),
        TargetGroupARNs=[tg_arn],
    )
    # moto launches a whole scaling step in one zone: place the fleet evenly by hand
    for k, az in enumerate(azs):
        count = size // len(azs) + (1 if k < size % len(azs) else 0)
        if not count:
            continue
        run = ec2.run_instances(
            LaunchTemplate={"LaunchTemplateId": lt_id, "Version": "1"},
            MinCount=count,
            MaxCount=count,
            Placement={"AvailabilityZone": az},
        )
        asg.attach_instances(
            AutoScalingGroupName=name, InstanceIds=[i["InstanceId"] for i in run["Instances"]]
        )
    asg.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=max(1, size // 2))
    alarm = f"{name}-5xx"
    clients.cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        MetricName="HTTPCode_Target_5XX_Count",
        Namespace="AWS/ApplicationELB",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=10,
        ComparisonOperator="GreaterThanThreshold",
    )
    return Seeded(name, lt_id, old, new, tg_arn, alarm, azs)


def instance_images(clients: Clients, group: str) -> dict[str, str]:
    g = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    ids = [i["InstanceId"] for i in g["AutoScalingGroups"][0]["Instances"]]
    if not ids:
        return {}
    res = clients.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["ImageId"] for r in res for i in r["Instances"]}

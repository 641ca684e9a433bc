"""Seed an (empty) AWS API with a small fleet: the sandbox's starting world.

`seed_fleet(clients, ...)` creates, from `SeedSettings`: a VPC with one subnet per zone,
a security group, an ALB with a target group per group, a base AMI per image (registered
through `AwsRegistry.put`, status validated, promoted to every seed channel), a launch
template per group on that AMI with IMDSv2 required, an auto-scaling group on the template
behind the target group, and a CloudWatch alarm on the target group's unhealthy hosts.
The rotator's tests seed their moto server with it too.

`vendor_amis()` are the public base AMIs the sandbox's server starts with (moto's
`MOTO_AMIS_PATH`): Debian 12 as Debian's account publishes it, EBS-backed, so that base
AMI resolution (`extra.aws.base_ami`) and a real `amazon-ebs` Packer build work there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

from ..aws.clients import Clients
from ..aws.registry import AwsRegistry, iso
from ..models import ImageRecord
from ..progress import Reporter
from ..sections import SeedSettings

SEED_TAG = {"Key": "goldenimage:sandbox", "Value": "seed"}
DEBIAN_OWNER = "136693071363"


def vendor_amis() -> list[dict[str, Any]]:
    """Debian 12 base AMIs (amd64, arm64) in moto's `MOTO_AMIS_PATH` format."""
    return [
        {
            "ami_id": ami_id,
            "name": f"debian-12-{arch}-20261101-1900",
            "description": f"Debian 12 (20261101-1900) {arch}",
            "owner_id": DEBIAN_OWNER,
            "public": True,
            "virtualization_type": "hvm",
            "architecture": machine,
            "state": "available",
            "root_device_type": "ebs",
            "root_device_name": "/dev/xvda",
            "sriov": "simple",
            "hypervisor": "xen",
            "creation_date": "2026-11-01T19:00:00.000Z",
        }
        for ami_id, arch, machine in (
            ("ami-0deb12a0d6400c0de", "amd64", "x86_64"),
            ("ami-0deb12a0a6400c0de", "arm64", "arm64"),
        )
    ]


def _tags(resource: str, name: str) -> list[dict[str, Any]]:
    return [{"ResourceType": resource, "Tags": [{"Key": "Name", "Value": name}, SEED_TAG]}]


def base_record(image: str, env: str, now: dt.datetime) -> ImageRecord:
    fp = "sha256:" + hashlib.sha256(f"goldenimage sandbox base {image}".encode()).hexdigest()
    return ImageRecord(
        id=f"{image}-base",
        name=image,
        env=env,
        fingerprint=fp,
        created=iso(now),
        status="validated",
        artifact="",
        extra={"base_ami": "", "git_commit": ""},
    )


def seed_manifest(rec: ImageRecord) -> dict[str, Any]:
    """What a seeded AMI's attestation says of it: a stand-in for an image baked and
    validated before the sandbox existed, with no inputs, no base and no checks recorded."""
    return {"id": rec.id, "name": rec.name, "env": rec.env, "fingerprint": rec.fingerprint, "created": rec.created,
            "status": "validated", "base": {"source": "sandbox seed", "identity": None},
            "validation": {"status": "validated", "suites": [], "passed": 0, "failed": 0, "errors": 0, "skipped": 0}}


Sign = Callable[[AwsRegistry, ImageRecord], None]  # signs a seeded AMI's attestation


def seed_fleet(clients: Clients, seed: SeedSettings, *, env: str, reporter: Reporter | None = None,
               registry: AwsRegistry | None = None, now: dt.datetime | None = None,
               sign: Sign | None = None) -> dict[str, Any]:
    """Create the fleet; returns the ids of what it made. `sign`: each base AMI is signed
    before it is put in its channels (as promote requires of an AMI)."""
    rep = reporter or Reporter(quiet=True)
    now = now or dt.datetime.now(dt.UTC)
    reg = registry or AwsRegistry(clients, env)
    ec2, elbv2, asg, cw = clients.ec2, clients.elbv2, clients.autoscaling, clients.cloudwatch
    region = clients.ctx.region
    out: dict[str, Any] = {"region": region}

    rep.step("network: VPC, subnets, security group")
    vpc = ec2.create_vpc(
        CidrBlock=seed.vpc_cidr, TagSpecifications=_tags("vpc", f"goldenimage-{env}")
    )
    vpc_id = vpc["Vpc"]["VpcId"]
    base = seed.vpc_cidr.split("/")[0].split(".")
    subnets = []
    for i, zone in enumerate(seed.zones):
        cidr = f"{base[0]}.{base[1]}.{i * 16}.0/20"
        sn = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=cidr,
            AvailabilityZone=f"{region}{zone}",
            TagSpecifications=_tags("subnet", f"goldenimage-{env}-{zone}"),
        )
        subnets.append(sn["Subnet"]["SubnetId"])
    sg = ec2.create_security_group(
        GroupName=f"goldenimage-{env}-fleet",
        Description="goldenimage sandbox fleet",
        VpcId=vpc_id,
        TagSpecifications=_tags("security-group", f"goldenimage-{env}-fleet"),
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "IpRanges": [{"CidrIp": seed.vpc_cidr}],
            }
        ],
    )
    out.update(vpc=vpc_id, subnets=subnets, security_group=sg)

    rep.step("load balancer")
    lb = elbv2.create_load_balancer(
        Name=f"goldenimage-{env}"[:32],
        Subnets=subnets,
        SecurityGroups=[sg],
        Scheme="internal",
        Type="application",
        Tags=[{"Key": "goldenimage:sandbox", "Value": "seed"}],
    )["LoadBalancers"][0]
    out["load_balancer"] = lb["LoadBalancerArn"]

    images: dict[str, str] = {}
    for image in sorted({g.image for g in seed.groups.values()}):
        rep.step(f"base AMI for image {image}")
        rec = reg.put(base_record(image, env, now), {"note": "sandbox seed base image"})
        if sign is not None:
            sign(reg, rec)
        images[image] = rec.id
        for channel in seed.channels:
            reg.promote(rec.id, channel)
    out["images"] = images
    out["channels"] = {
        image: {ch: reg.channel_parameter(image, ch) for ch in seed.channels} for image in images
    }

    groups: dict[str, Any] = {}
    for gname, g in sorted(seed.groups.items()):
        rep.step(f"group {gname}: target group, launch template, auto-scaling group, alarm")
        tg = elbv2.create_target_group(
            Name=f"gi-{env}-{gname}"[:32],
            Protocol="HTTP",
            Port=80,
            VpcId=vpc_id,
            HealthCheckPath="/",
            TargetType="instance",
        )["TargetGroups"][0]
        tg_arn = tg["TargetGroupArn"]
        elbv2.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80 + len(groups),
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
        )
        lt = ec2.create_launch_template(
            LaunchTemplateName=f"goldenimage-{env}-{gname}",
            VersionDescription=f"seed: {g.image} {images[g.image]}",
            LaunchTemplateData={
                "ImageId": images[g.image],
                "InstanceType": g.instance_type,
                "SecurityGroupIds": [sg],
                "MetadataOptions": {
                    "HttpTokens": "required",
                    "HttpEndpoint": "enabled",
                    "HttpPutResponseHopLimit": 1,
                },
                "TagSpecifications": [
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            {"Key": "Name", "Value": f"goldenimage-{env}-{gname}"},
                            {"Key": "goldenimage:group", "Value": gname},
                        ],
                    }
                ],
            },
            TagSpecifications=_tags("launch-template", f"goldenimage-{env}-{gname}"),
        )["LaunchTemplate"]
        asg.create_auto_scaling_group(
            AutoScalingGroupName=gname,
            LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"], "Version": "$Default"},
            MinSize=g.size,
            MaxSize=g.max_size if g.max_size is not None else max(1, g.size * 2),
            DesiredCapacity=g.size,
            VPCZoneIdentifier=",".join(subnets),
            TargetGroupARNs=[tg_arn],
            HealthCheckType="ELB",
            HealthCheckGracePeriod=g.health_check_grace,
            Tags=[
                {"Key": "goldenimage:image", "Value": g.image, "PropagateAtLaunch": False},
                {"Key": "goldenimage:env", "Value": env, "PropagateAtLaunch": False},
            ],
        )
        alarm = None
        if g.alarm:
            alarm = f"goldenimage-{env}-{gname}-unhealthy"
            cw.put_metric_alarm(
                AlarmName=alarm,
                AlarmDescription=f"unhealthy targets behind group {gname}",
                Namespace="AWS/ApplicationELB",
                MetricName="UnHealthyHostCount",
                Dimensions=[
                    {"Name": "TargetGroup", "Value": tg_arn.split(":", 5)[-1]},
                    {
                        "Name": "LoadBalancer",
                        "Value": lb["LoadBalancerArn"].split("loadbalancer/", 1)[-1],
                    },
                ],
                Statistic="Maximum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=0.0,
                ComparisonOperator="GreaterThanThreshold",
                TreatMissingData="notBreaching",
            )
        groups[gname] = {
            "image": g.image,
            "launch_template": lt["LaunchTemplateId"],
            "target_group": tg_arn,
            "alarm": alarm,
            "size": g.size,
        }
    out["groups"] = groups
    return out


def fleet_counts(clients: Clients) -> dict[str, Any]:
    """Per auto-scaling group: desired, instances, in service, healthy, and AMIs in use."""
    pages = clients.autoscaling.get_paginator("describe_auto_scaling_groups").paginate()
    groups = [g for page in pages for g in page.get("AutoScalingGroups", [])]
    ids = [i["InstanceId"] for g in groups for i in g.get("Instances", [])]
    amis: dict[str, str] = {}
    for i in range(0, len(ids), 100):
        chunk = ids[i : i + 100]
        for page in clients.ec2.get_paginator("describe_instances").paginate(InstanceIds=chunk):
            for r in page.get("Reservations", []):
                for inst in r.get("Instances", []):
                    amis[inst["InstanceId"]] = inst.get("ImageId", "")
    out: dict[str, Any] = {}
    for g in groups:
        inst = g.get("Instances", [])
        by_ami: dict[str, int] = {}
        for i in inst:
            ami = amis.get(i["InstanceId"], "")
            by_ami[ami] = by_ami.get(ami, 0) + 1
        out[g["AutoScalingGroupName"]] = {
            "desired": g.get("DesiredCapacity", 0),
            "instances": len(inst),
            "in_service": sum(1 for i in inst if i.get("LifecycleState") == "InService"),
            "healthy": sum(1 for i in inst if i.get("HealthStatus") == "Healthy"),
            "amis": by_ami,
        }
    return out

"""What uses an AMI in one region, gathered once per `invoke gc` run with paginators.

Each source is listed page by page, never one call per image: instances in any state but
terminated; every version of every launch template (all versions, not only the default and
latest); launch configurations; the launch templates of every group's mixed-instances
overrides (their versions are listed with the rest, and a template an override names is
reported even when no other source does); a group's rotation state (the images it ran before and
after the last rotation, in its tags); SSM parameters whose value is an AMI id (channels and any
other parameter). The result is plain data (`retention.Reference`) for the pure planner.

Not covered yet (see README, Retention): older SSM parameter versions pinned as `name:N`,
launch templates that name an SSM parameter instead of an AMI (`resolve:ssm:`; real AWS
resolves them with `ResolveAlias`), and `DescribeImageReferences` as a second opinion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ..models import CURRENT_IMAGE_TAG, PREVIOUS_IMAGE_TAG
from ..retention import Reference
from .clients import Clients

ROTATION_TAGS = {PREVIOUS_IMAGE_TAG: "previous image", CURRENT_IMAGE_TAG: "current image"}

AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]  # all but terminated


def _pages(client: Any, operation: str, key: str, **kw: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kw):
        yield from page.get(key, [])


def instances(clients: Clients) -> list[Reference]:
    out = []
    filters = [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    for reservation in _pages(clients.ec2, "describe_instances", "Reservations", Filters=filters):
        for inst in reservation.get("Instances", []):
            state = inst.get("State", {}).get("Name", "")
            if inst.get("ImageId") and state != "terminated":
                out.append(Reference(inst["ImageId"], "instance", f"{inst['InstanceId']} ({state})"))
    return out


def launch_templates(clients: Clients) -> tuple[list[Reference], dict[str, list[str]]]:
    """Every version of every launch template (one paginated listing per template), and
    {template id and name: the AMIs of its versions} for the groups' overrides."""
    out = []
    by_template: dict[str, list[str]] = {}
    for lt in _pages(clients.ec2, "describe_launch_templates", "LaunchTemplates"):
        lt_id, lt_name = lt["LaunchTemplateId"], lt.get("LaunchTemplateName", "")
        for v in _pages(clients.ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                        LaunchTemplateId=lt_id):
            image = v.get("LaunchTemplateData", {}).get("ImageId", "")
            if AMI_RE.match(image):
                out.append(Reference(image, f"{lt_id} v{v['VersionNumber']}", f"({lt_name})"))
                for key in (lt_id, lt_name):
                    by_template.setdefault(key, []).append(image)
    return out, by_template


def launch_configurations(clients: Clients) -> list[Reference]:
    return [Reference(lc["ImageId"], "launch configuration", lc["LaunchConfigurationName"])
            for lc in _pages(clients.autoscaling, "describe_launch_configurations", "LaunchConfigurations")
            if lc.get("ImageId")]


def groups(clients: Clients, template_images: dict[str, list[str]]) -> list[Reference]:
    """Per group: its rotation state (the previous image) and the templates its
    mixed-instances overrides name (`template_images`: template id/name -> its AMIs)."""
    out = []
    for g in _pages(clients.autoscaling, "describe_auto_scaling_groups", "AutoScalingGroups"):
        name = g["AutoScalingGroupName"]
        for tag in g.get("Tags", []):
            what = ROTATION_TAGS.get(tag.get("Key", ""))
            if what and AMI_RE.match(str(tag.get("Value", ""))):
                out.append(Reference(tag["Value"], "rotation state", f"(asg {name}, {what})"))
        mixed = g.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
        specs = [mixed.get("LaunchTemplateSpecification", {})]
        specs += [o.get("LaunchTemplateSpecification", {}) for o in mixed.get("Overrides", [])]
        for spec in specs:
            key = spec.get("LaunchTemplateId") or spec.get("LaunchTemplateName")
            for image in template_images.get(key or "", []):
                out.append(Reference(image, "mixed-instances template", f"{key} (asg {name})"))
    return out


def parameters(clients: Clients) -> list[Reference]:
    """SSM parameters (any path) whose current value is an AMI id."""
    return [Reference(p["Value"], "ssm parameter", f"{p['Name']} v{p.get('Version', '?')}")
            for p in _pages(clients.ssm, "get_parameters_by_path", "Parameters", Path="/", Recursive=True)
            if AMI_RE.match(str(p.get("Value", "")))]


def gather(clients: Clients) -> list[Reference]:
    """Every reference to an AMI in the clients' region, each source listed once."""
    templates, by_template = launch_templates(clients)
    return [*instances(clients), *templates, *launch_configurations(clients),
            *groups(clients, by_template), *parameters(clients)]

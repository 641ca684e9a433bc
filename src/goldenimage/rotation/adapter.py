"""The rotation's one door to AWS: every read and write the rotator makes, over injected
boto3 clients (`clients.autoscaling`, `.ec2`, `.cloudwatch`, `.elbv2`).

Retries are botocore's (`standard` mode, set where the clients are made); list calls use
paginators. A botocore error leaves this module as `AwsCallFailed`, which names the IAM
action that failed (`autoscaling:SetDesiredCapacity`), so whoever stops the rotation can
say which call went wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
)
from botocore.parsers import (  # type: ignore[import-untyped, unused-ignore]
    ResponseParserError,
)

from ..aws.errors import ACCESS_DENIED, error_code, error_message
from ..errors import ConfigError, NotFoundError, OperationFailed
from .plan import GroupState, Instance

# what a call can raise besides our own errors: an AWS error answer, an SDK error, and an
# answer botocore could not parse (moto's HTML error pages; a proxy's)
AWS_ERRORS = (ClientError, BotoCoreError, ResponseParserError)

# EC2 instance states that still run (anything else cannot serve, whatever the ASG says)
RUNNING = frozenset({"pending", "running"})


class AwsCallFailed(OperationFailed):
    """An AWS call failed after botocore's retries; `action` is its IAM action."""

    def __init__(self, action: str, detail: str, *, code: str = "", exit_code: int = 1) -> None:
        super().__init__(f"{action} failed: {detail}")
        self.action = action
        self.detail = detail
        self.code = code
        self.exit_code = exit_code
        self.not_done = False  # known not to have happened (set by whoever checked)


def _iam_prefix(service: str) -> str:
    return "elasticloadbalancing" if service == "elbv2" else service


def _failure(client: Any, method: str, exc: Exception) -> AwsCallFailed:
    meta = getattr(client, "meta", None)
    service = meta.service_model.service_name if meta else "aws"
    op = meta.method_to_api_mapping.get(method, method) if meta else method
    action = f"{_iam_prefix(service)}:{op}"
    if isinstance(exc, ClientError):
        code, msg = error_code(exc), error_message(exc)
        if code in ACCESS_DENIED:
            return AwsCallFailed(
                action,
                f"access denied ({code}); grant it (see `invoke iam-policy`): {msg}",
                code=code,
                exit_code=2,
            )
        return AwsCallFailed(action, f"{code}: {msg}" if msg else code, code=code)
    text = " ".join(str(exc).split())[:300]
    return AwsCallFailed(action, f"{type(exc).__name__}: {text}", code=type(exc).__name__)


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for k in range(0, len(items), n):
        yield items[k : k + n]


@dataclass
class Ec2Facts:
    image_id: str
    state: str


@dataclass
class RotationAws:
    """The AWS reads and writes of one rotation of group `name`."""

    clients: Any
    name: str
    # an instance's AMI never changes: remember it; its state is read again when asked
    _facts: dict[str, Ec2Facts] = field(default_factory=dict)
    writes: int = 0  # calls that change something (every call but Describe*/Get*/List*)

    # ---- plumbing ----------------------------------------------------------------------

    def _client(self, service: str) -> Any:
        return getattr(self.clients, service)

    def call(self, service: str, method: str, **kw: Any) -> Any:
        client = self._client(service)
        if not method.startswith(("describe_", "get_", "list_")):
            self.writes += 1
        try:
            return getattr(client, method)(**kw)
        except AWS_ERRORS as exc:
            raise _failure(client, method, exc) from exc

    def pages(self, service: str, method: str, **kw: Any) -> Iterator[Any]:
        client = self._client(service)
        try:
            yield from client.get_paginator(method).paginate(**kw)
        except AWS_ERRORS as exc:
            raise _failure(client, method, exc) from exc

    # ---- the group -----------------------------------------------------------------------

    def group(self) -> dict[str, Any]:
        for page in self.pages(
            "autoscaling", "describe_auto_scaling_groups", AutoScalingGroupNames=[self.name]
        ):
            for g in page.get("AutoScalingGroups", []):
                return dict(g)
        raise NotFoundError(f"auto-scaling group {self.name!r} not found")

    def ec2_facts(self, ids: list[str], *, refresh: bool) -> dict[str, Ec2Facts]:
        """AMI and EC2 state of each instance, from EC2 (not the ASG's view of the template).

        `refresh`: read every id again (the state may have changed); else only unknown ids.
        """
        todo = sorted(set(ids) if refresh else {i for i in ids if i not in self._facts})
        for chunk in _chunks(todo, 500):
            for page in self.pages("ec2", "describe_instances", InstanceIds=chunk):
                for res in page["Reservations"]:
                    for inst in res["Instances"]:
                        self._facts[inst["InstanceId"]] = Ec2Facts(
                            inst.get("ImageId", ""), inst.get("State", {}).get("Name", "")
                        )
        return {i: self._facts[i] for i in ids if i in self._facts}

    def images_of(self, ids: list[str]) -> dict[str, str]:
        return {i: f.image_id for i, f in self.ec2_facts(ids, refresh=False).items()}

    def observe(self, *, refresh: bool = False) -> tuple[GroupState, dict[str, Any]]:
        """The group as it is now: desired/min/max, every instance with its lifecycle,
        health (ASG health and EC2 state), launch-template version and real AMI; and the
        raw description. AMIs are read once per instance; `refresh`: EC2 states again."""
        raw = self.group()
        ids = [i["InstanceId"] for i in raw.get("Instances", [])]
        facts = self.ec2_facts(ids, refresh=refresh) if ids else {}
        return group_state(raw, facts), raw

    def terminate(self, instance_id: str, *, decrement: bool = True) -> None:
        self.call(
            "autoscaling",
            "terminate_instance_in_auto_scaling_group",
            InstanceId=instance_id,
            ShouldDecrementDesiredCapacity=decrement,
        )

    def set_capacity(self, desired: int, max_size: int | None = None) -> None:
        """Desired capacity (and max size, when it must change) in one call."""
        if max_size is None:
            self.call(
                "autoscaling",
                "set_desired_capacity",
                AutoScalingGroupName=self.name,
                DesiredCapacity=desired,
                HonorCooldown=False,
            )
        else:
            self.call(
                "autoscaling",
                "update_auto_scaling_group",
                AutoScalingGroupName=self.name,
                MaxSize=max_size,
                DesiredCapacity=desired,
            )

    def set_max(self, max_size: int) -> None:
        self.call(
            "autoscaling", "update_auto_scaling_group", AutoScalingGroupName=self.name, MaxSize=max_size
        )

    def pin(self, lt_id: str, version: str, max_size: int | None = None) -> None:
        kw: dict[str, Any] = {} if max_size is None else {"MaxSize": max_size}
        self.call(
            "autoscaling",
            "update_auto_scaling_group",
            AutoScalingGroupName=self.name,
            LaunchTemplate={"LaunchTemplateId": lt_id, "Version": version},
            **kw,
        )

    def suspend(self, processes: list[str]) -> None:
        self.call(
            "autoscaling",
            "suspend_processes",
            AutoScalingGroupName=self.name,
            ScalingProcesses=processes,
        )

    def resume(self, processes: list[str]) -> None:
        self.call(
            "autoscaling", "resume_processes", AutoScalingGroupName=self.name, ScalingProcesses=processes
        )

    def put_tags(self, values: dict[str, str]) -> None:
        if values:
            self.call(
                "autoscaling",
                "create_or_update_tags",
                Tags=[
                    {
                        "ResourceId": self.name,
                        "ResourceType": "auto-scaling-group",
                        "Key": k,
                        "Value": v,
                        "PropagateAtLaunch": False,
                    }
                    for k, v in values.items()
                ],
            )

    def remove_tags(self, keys: list[str]) -> None:
        if keys:
            self.call(
                "autoscaling",
                "delete_tags",
                Tags=[
                    {"ResourceId": self.name, "ResourceType": "auto-scaling-group", "Key": k} for k in keys
                ],
            )

    # ---- launch templates and images -----------------------------------------------------

    def template_version(self, lt_id: str, version: str) -> dict[str, Any]:
        vs = self.call(
            "ec2", "describe_launch_template_versions", LaunchTemplateId=lt_id, Versions=[version]
        )["LaunchTemplateVersions"]
        if not vs:
            raise NotFoundError(f"launch template {lt_id} has no version {version}")
        return dict(vs[0])

    def new_template_version(self, lt_id: str, data: dict[str, Any], description: str) -> str:
        made = self.call(
            "ec2",
            "create_launch_template_version",
            LaunchTemplateId=lt_id,
            LaunchTemplateData=data,
            VersionDescription=description[:255],
        )
        return str(made["LaunchTemplateVersion"]["VersionNumber"])

    def image(self, image_id: str) -> dict[str, Any] | None:
        try:
            imgs = self.call("ec2", "describe_images", ImageIds=[image_id])["Images"]
        except AwsCallFailed as exc:
            if exc.code.startswith("InvalidAMIID"):
                return None
            raise
        return dict(imgs[0]) if imgs else None

    # ---- health ------------------------------------------------------------------------

    def alarms_in_alarm(self, names: list[str]) -> list[str]:
        if not names:
            return []
        found: dict[str, str] = {}
        for page in self.pages("cloudwatch", "describe_alarms", AlarmNames=names):
            for a in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
                found[a["AlarmName"]] = a["StateValue"]
        missing = [n for n in names if n not in found]
        if missing:
            raise ConfigError(f"abort alarm(s) not found: {', '.join(missing)}")
        return [n for n in names if found[n] == "ALARM"]

    def unhealthy_targets(self, arns: list[str], ids: list[str]) -> list[str]:
        bad: list[str] = []
        for arn in arns:
            for chunk in _chunks(ids, 200):
                descs = self.call(
                    "elbv2",
                    "describe_target_health",
                    TargetGroupArn=arn,
                    Targets=[{"Id": i} for i in chunk],
                )["TargetHealthDescriptions"]
                states = {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in descs}
                bad += [i for i in chunk if states.get(i) != "healthy"]
        return sorted(set(bad))

    # ---- instance refresh ----------------------------------------------------------------

    def start_refresh(self, request: dict[str, Any]) -> str:
        return str(self.call("autoscaling", "start_instance_refresh", **request)["InstanceRefreshId"])

    def refresh_status(self, refresh_id: str) -> dict[str, Any]:
        refreshes = self.call(
            "autoscaling",
            "describe_instance_refreshes",
            AutoScalingGroupName=self.name,
            InstanceRefreshIds=[refresh_id],
        )["InstanceRefreshes"]
        return dict(refreshes[0]) if refreshes else {"Status": "Failed", "StatusReason": "vanished"}

    def cancel_refresh(self) -> None:
        self.call("autoscaling", "cancel_instance_refresh", AutoScalingGroupName=self.name)


def group_state(raw: dict[str, Any], facts: dict[str, Ec2Facts] | dict[str, str]) -> GroupState:
    """The planner's view of a described group; `facts`: EC2 facts (or bare AMI ids)."""

    def fact(iid: str) -> Ec2Facts:
        f = facts.get(iid)
        if isinstance(f, Ec2Facts):
            return f
        return Ec2Facts(f or "", "running")

    def member(i: dict[str, Any]) -> Instance:
        f = fact(i["InstanceId"])
        return Instance(
            id=i["InstanceId"],
            az=i["AvailabilityZone"],
            image_id=f.image_id,
            lifecycle=i["LifecycleState"],
            healthy=i.get("HealthStatus", "Healthy") == "Healthy" and (f.state in RUNNING or not f.state),
            protected=bool(i.get("ProtectedFromScaleIn", False)),
            version=str((i.get("LaunchTemplate") or {}).get("Version", "")),
        )

    return GroupState(
        name=raw["AutoScalingGroupName"],
        desired=int(raw["DesiredCapacity"]),
        min_size=int(raw["MinSize"]),
        max_size=int(raw["MaxSize"]),
        instances=tuple(member(i) for i in raw.get("Instances", [])),
    )

"""The `refresh` strategy: AWS Instance Refresh with the policy's preferences.

The launch-template version is created and pinned by the executor (same lock and state as
the rolling strategy); this module starts the refresh with that explicit version, polls it
to a terminal status and cancels it on Ctrl-C.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .policy import GroupPolicy

if TYPE_CHECKING:
    from .executor import Rotator

TERMINAL = frozenset({"Successful", "Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed"})
_PROTECTED = {"ignore": "Ignore", "replace": "Refresh", "wait": "Wait"}
_STANDBY = {"ignore": "Ignore", "terminate": "Terminate", "wait": "Wait"}


def preferences(policy: GroupPolicy) -> dict[str, Any]:
    """Instance Refresh Preferences from a group policy."""
    prefs: dict[str, Any] = {
        "MinHealthyPercentage": policy.min_healthy_percent,
        "MaxHealthyPercentage": min(200, 100 + policy.max_surge_percent),
        "InstanceWarmup": int(policy.warmup_seconds),
        "SkipMatching": True,
        "ScaleInProtectedInstances": _PROTECTED[policy.protected],
        "StandbyInstances": _STANDBY[policy.standby],
    }
    if prefs["MaxHealthyPercentage"] - prefs["MinHealthyPercentage"] > 100:
        prefs["MinHealthyPercentage"] = prefs["MaxHealthyPercentage"] - 100
    if policy.checkpoints:
        cps = list(policy.checkpoints)
        prefs["CheckpointPercentages"] = cps if cps[-1] == 100 else [*cps, 100]
        prefs["CheckpointDelay"] = int(policy.checkpoint_pause_seconds)
    if policy.abort_alarms:
        prefs["AutoRollback"] = True
        prefs["AlarmSpecification"] = {"Alarms": list(policy.abort_alarms)}
    if policy.bake_seconds:
        prefs["BakeTime"] = int(policy.bake_seconds)
    return prefs


def start_request(group: str, lt_id: str, version: str, policy: GroupPolicy) -> dict[str, Any]:
    return {
        "AutoScalingGroupName": group,
        "Strategy": "Rolling",
        "DesiredConfiguration": {"LaunchTemplate": {"LaunchTemplateId": lt_id, "Version": version}},
        "Preferences": preferences(policy),
    }


def drive_refresh(rot: Rotator, lt_id: str, version: str) -> str:
    """Start the refresh, poll it to a terminal status (returned); cancel on Ctrl-C."""
    asg = rot.clients.autoscaling
    rid = asg.start_instance_refresh(**start_request(rot.name, lt_id, version, rot.policy))[
        "InstanceRefreshId"
    ]
    rot.reporter.info(f"{rot.name}: instance refresh {rid} started (version {version})")
    if rot.st is not None:
        rot._save(progress=f"instance refresh {rid}")
    try:
        while True:
            rot._safe_point()
            refreshes = asg.describe_instance_refreshes(
                AutoScalingGroupName=rot.name, InstanceRefreshIds=[rid]
            )["InstanceRefreshes"]
            ref = refreshes[0] if refreshes else {"Status": "Failed", "StatusReason": "vanished"}
            status = str(ref["Status"])
            if status in TERMINAL:
                if status != "Successful":
                    rot.warn(f"instance refresh {rid}: {status}: {ref.get('StatusReason', '')}")
                return status
            pct = ref.get("PercentageComplete", 0)
            left = ref.get("InstancesToUpdate", "?")
            rot.reporter.step(f"instance refresh {rid}: {status} {pct}% ({left} to update)")
            rot._beat()
            rot.clock.sleep(rot.policy.poll_seconds)
    except BaseException:
        try:
            asg.cancel_instance_refresh(AutoScalingGroupName=rot.name)
            rot.reporter.warn(f"instance refresh {rid} cancelled")
        except Exception as exc:  # already finished, or the API is gone
            rot.reporter.warn(f"could not cancel instance refresh {rid}: {exc}")
        raise

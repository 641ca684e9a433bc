"""The `refresh` strategy: AWS Instance Refresh with the policy's preferences.

The launch-template version is created and pinned by the executor (same lock and state as
the rolling strategy); `RefreshStrategy` implements the run loop's hooks (loop.py): it
starts the refresh with that explicit version, polls it to a terminal status and cancels
it when the run stops (Ctrl-C, an AWS error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .policy import GroupPolicy

if TYPE_CHECKING:
    from .loop import RunLoop

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


@dataclass
class RefreshStrategy:
    """The run loop's hooks for AWS Instance Refresh: start it with the pinned version,
    poll it to a terminal status (the outcome), cancel it when the run stops."""

    lt_id: str
    version: str
    refresh_id: str = ""
    status: str = ""

    @property
    def surge(self) -> int:
        return 0  # AWS does the surging; desired capacity is never the rotation's

    def begin(self, loop: RunLoop) -> None:
        request = start_request(loop.name, self.lt_id, self.version, loop.policy)
        self.refresh_id = loop.aws.start_refresh(request)
        loop.reporter.info(
            f"{loop.name}: instance refresh {self.refresh_id} started (version {self.version})"
        )
        if loop.st is not None:
            loop.save(progress=f"instance refresh {self.refresh_id}")

    def step(self, loop: RunLoop) -> str | None:
        loop.safe_point()
        ref = loop.aws.refresh_status(self.refresh_id)
        self.status = str(ref["Status"])
        if self.status in TERMINAL:
            if self.status != "Successful":
                loop.warn(f"instance refresh {self.refresh_id}: {self.status}: {ref.get('StatusReason', '')}")
            return self.status
        pct = ref.get("PercentageComplete", 0)
        left = ref.get("InstancesToUpdate", "?")
        loop.reporter.step(f"instance refresh {self.refresh_id}: {self.status} {pct}% ({left} to update)")
        loop.beat()
        loop.clock.sleep(loop.policy.poll_seconds)
        return None

    def on_stop(self, loop: RunLoop, exc: BaseException) -> None:
        if not self.refresh_id or self.status in TERMINAL:
            return
        try:
            loop.aws.cancel_refresh()
            loop.reporter.warn(f"instance refresh {self.refresh_id} cancelled")
        except Exception as err:  # already finished, or the API is gone
            loop.reporter.warn(f"could not cancel instance refresh {self.refresh_id}: {err}")

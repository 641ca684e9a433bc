"""The refresh strategy against botocore's Stubber (moto has no Instance Refresh)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from goldenimage.progress import Reporter
from goldenimage.rotation.adapter import RotationAws
from goldenimage.rotation.clock import SimClock, StopFlag, Stopped
from goldenimage.rotation.loop import RunLoop
from goldenimage.rotation.policy import GroupPolicy
from goldenimage.rotation.refresh import RefreshStrategy, preferences, start_request


@dataclass
class FakeClients:
    autoscaling: Any


def _client() -> Any:
    return boto3.client(
        "autoscaling",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


POLICY = GroupPolicy(
    asg="web",
    strategy="refresh",
    min_healthy_percent=90,
    max_surge_percent=25,
    warmup_seconds=120,
    checkpoints=[25, 50],
    checkpoint_pause_seconds=600,
    abort_alarms=["web-5xx"],
    protected="replace",
    standby="terminate",
    bake_seconds=300,
    poll_seconds=15,
)


def _refresh(status: str, pct: int = 0) -> dict[str, Any]:
    return {
        "InstanceRefreshes": [
            {
                "InstanceRefreshId": "ir-1",
                "AutoScalingGroupName": "web",
                "Status": status,
                "PercentageComplete": pct,
                "InstancesToUpdate": 12 - pct * 12 // 100,
            }
        ]
    }


def _rotator(client: Any, stop: StopFlag | None = None) -> RunLoop:
    return RunLoop(
        RotationAws(FakeClients(client), "web"),
        POLICY,
        Reporter(io.StringIO()),
        clock=SimClock(0.0),
        stop=stop or StopFlag(),
    )


def drive_refresh(loop: RunLoop, lt_id: str, version: str) -> str:
    """The run loop with the refresh strategy's hooks; on a stop, its `on_stop` hook."""
    strategy = RefreshStrategy(lt_id, version)
    try:
        return loop.run(strategy)
    except BaseException as exc:
        strategy.on_stop(loop, exc)
        raise


def test_preferences_from_policy() -> None:
    assert preferences(POLICY) == {
        "MinHealthyPercentage": 90,
        "MaxHealthyPercentage": 125,
        "InstanceWarmup": 120,
        "SkipMatching": True,
        "ScaleInProtectedInstances": "Refresh",
        "StandbyInstances": "Terminate",
        "CheckpointPercentages": [25, 50, 100],
        "CheckpointDelay": 600,
        "AutoRollback": True,
        "AlarmSpecification": {"Alarms": ["web-5xx"]},
        "BakeTime": 300,
    }


DESCRIBE = {"AutoScalingGroupName": "web", "InstanceRefreshIds": ["ir-1"]}


def test_refresh_polls_to_success_with_explicit_version() -> None:
    client = _client()
    with Stubber(client) as stub:
        req = start_request("web", "lt-0123456789abcdef0", "7", POLICY)
        assert req["DesiredConfiguration"]["LaunchTemplate"]["Version"] == "7"
        stub.add_response("start_instance_refresh", {"InstanceRefreshId": "ir-1"}, req)
        stub.add_response("describe_instance_refreshes", _refresh("Pending"), DESCRIBE)
        stub.add_response("describe_instance_refreshes", _refresh("InProgress", 50), DESCRIBE)
        stub.add_response("describe_instance_refreshes", _refresh("Successful", 100), DESCRIBE)
        rot = _rotator(client)
        assert drive_refresh(rot, "lt-0123456789abcdef0", "7") == "Successful"
        stub.assert_no_pending_responses()
    assert rot.clock.now() == 30.0  # two polls of 15 s


@pytest.mark.parametrize("status", ["Failed", "Cancelled", "RollbackSuccessful"])
def test_refresh_terminal_failures_are_reported(status: str) -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("start_instance_refresh", {"InstanceRefreshId": "ir-1"})
        stub.add_response("describe_instance_refreshes", _refresh(status), DESCRIBE)
        rot = _rotator(client)
        assert drive_refresh(rot, "lt-0123456789abcdef0", "7") == status
    assert any(status in w for w in rot.warnings)


def test_ctrl_c_cancels_the_refresh() -> None:
    client = _client()
    stop = StopFlag()
    with Stubber(client) as stub:
        stub.add_response("start_instance_refresh", {"InstanceRefreshId": "ir-1"})
        stub.add_response("describe_instance_refreshes", _refresh("InProgress", 10), DESCRIBE)
        stub.add_response(
            "cancel_instance_refresh",
            {"InstanceRefreshId": "ir-1"},
            {"AutoScalingGroupName": "web"},
        )
        rot = _rotator(client, stop)
        real_sleep = rot.clock.sleep

        def sleep_then_sigint(s: float) -> None:
            real_sleep(s)
            stop.requested = True

        rot.clock.sleep = sleep_then_sigint  # type: ignore[method-assign]
        with pytest.raises(Stopped):
            drive_refresh(rot, "lt-0123456789abcdef0", "7")
        stub.assert_no_pending_responses()

"""`rotate(strategy="refresh")` end to end: lock, version and pin on moto; the Instance
Refresh calls (missing in moto) answered by a `before-call` hook after botocore validated
their parameters against the service model."""

from __future__ import annotations

import io
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from goldenimage.aws.clients import Clients
from goldenimage.progress import Reporter
from goldenimage.rotation.executor import SimClock, rotate
from goldenimage.rotation.policy import GroupPolicy
from goldenimage.rotation.state import tag_map
from tests.integration.rotate_conftest_fixtures import (  # noqa: F401 - fixtures
    aws_fixture,
    moto_url_fixture,
    seed_group,
)

pytestmark = pytest.mark.integration


def _answer(parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    return AWSResponse("http://stub", 200, {}, None), parsed


@pytest.mark.parametrize(("final", "code"), [("Successful", 0), ("RollbackSuccessful", 1)])
def test_refresh_strategy_end_to_end(aws: Clients, final: str, code: int) -> None:
    s = seed_group(aws, size=6)
    seen: dict[str, Any] = {"polls": 0}

    def record(params: dict[str, Any], **kw: Any) -> None:
        seen["start"] = params  # the API parameters, before serialisation

    def start(**kw: Any) -> Any:
        return _answer({"InstanceRefreshId": "ir-9"})

    def describe(**kw: Any) -> Any:
        seen["polls"] += 1
        status = final if seen["polls"] >= 3 else "InProgress"
        return _answer(
            {
                "InstanceRefreshes": [
                    {"InstanceRefreshId": "ir-9", "Status": status, "PercentageComplete": 40}
                ]
            }
        )

    ev = aws.autoscaling.meta.events
    ev.register("before-parameter-build.auto-scaling.StartInstanceRefresh", record)
    ev.register("before-call.auto-scaling.StartInstanceRefresh", start)
    ev.register("before-call.auto-scaling.DescribeInstanceRefreshes", describe)
    pol = GroupPolicy(asg="web", strategy="refresh", abort_alarms=[s.alarm], poll_seconds=30)
    res = rotate(aws, pol, s.new_ami, reporter=Reporter(io.StringIO()), clock=SimClock())
    assert res["exit_code"] == code, res
    lt = seen["start"]["DesiredConfiguration"]["LaunchTemplate"]
    assert lt == {"LaunchTemplateId": s.lt_id, "Version": "2"}
    assert seen["start"]["Preferences"]["AlarmSpecification"] == {"Alarms": [s.alarm]}
    g = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    g0 = g["AutoScalingGroups"][0]
    assert g0["LaunchTemplate"]["Version"] == ("2" if code == 0 else "1")
    t = tag_map(g0)
    assert not [k for k in t if k.startswith("goldenimage:rotation-")]
    assert t.get("goldenimage:current-image") == (s.new_ami if code == 0 else None)

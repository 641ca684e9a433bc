"""An unexpected error in the run loop ends in the same safe stop as Ctrl-C.

Injected: a botocore ClientError from one AWS call (answered by a `before-call` hook, so
botocore raises it as AWS would), a ResponseParserError (what moto's HTML 500 pages turn
into), a bug in the rotator (the adapter wrapped to raise TypeError); and, through the
command line in a subprocess, a ClientError from one call. Each time: scaling processes
resumed, desired and max restored, state `failed` (resumable at once), one `error:` line
naming the AWS action and what to run next; `--resume` (or rollback) then completes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.parsers import ResponseParserError

from goldenimage.aws.clients import Clients
from goldenimage.errors import ConfigError
from goldenimage.progress import Reporter
from goldenimage.rotation import loop as loop_module
from goldenimage.rotation.adapter import RotationAws
from goldenimage.rotation.commands import rotate_command
from goldenimage.rotation.executor import RotationFailed, rollback, rotate
from goldenimage.rotation.policy import GroupPolicy
from goldenimage.rotation.state import tag_map
from tests.integration.rotate_conftest_fixtures import (  # noqa: F401 - fixtures
    aws_fixture,
    instance_images,
    moto_url_fixture,
    seed_group,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
POLICY: dict[str, Any] = {
    "batch_size": 2,
    "max_surge_percent": 34,
    "poll_seconds": 0.02,
    "lock_settle_seconds": 0.0,
}


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def group(aws: Clients) -> dict[str, Any]:
    g = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    return dict(g["AutoScalingGroups"][0])


def error_answer(code: str, message: str, status: int = 400) -> Any:
    return AWSResponse("http://injected", status, {}, None), {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


def assert_safe_stop(aws: Clients, desired: int = 6, max_size: int = 6) -> dict[str, str]:
    g = group(aws)
    tags = tag_map(g)
    assert tags["goldenimage:rotation-status"] == "failed", tags
    assert g["SuspendedProcesses"] == [], g["SuspendedProcesses"]
    assert (g["DesiredCapacity"], g["MaxSize"]) == (desired, max_size)
    live = [i for i in g["Instances"] if i["LifecycleState"] == "InService"]
    assert len(live) == desired
    return tags


def assert_done(aws: Clients, new_ami: str) -> None:
    g = group(aws)
    assert set(instance_images(aws, "web").values()) == {new_ami}
    assert (g["DesiredCapacity"], g["MaxSize"]) == (6, 6)
    assert g["SuspendedProcesses"] == []
    assert not [k for k in tag_map(g) if k.startswith("goldenimage:rotation-")]


@pytest.mark.parametrize("nth", [1, 2])
def test_client_error_from_one_call_stops_safely_then_resumes(aws: Clients, nth: int) -> None:
    """SetDesiredCapacity fails once (batch 1 or 2): the surge of batch 1 or what was
    launched is handed back; --resume finishes the job."""
    s = seed_group(aws, size=6)
    pol = GroupPolicy(asg="web", **POLICY)
    calls = {"n": 0}

    def fail_once(**kw: Any) -> Any:
        calls["n"] += 1
        return error_answer("ValidationError", "injected refusal") if calls["n"] == nth else None

    aws.autoscaling.meta.events.register("before-call.auto-scaling.SetDesiredCapacity", fail_once)
    with pytest.raises(RotationFailed) as exc:
        rotate(aws, pol, s.new_ami, reporter=quiet())
    msg = str(exc.value)
    assert "\n" not in msg and "internal error" not in msg
    assert "autoscaling:SetDesiredCapacity failed: ValidationError: injected refusal" in msg
    assert "--resume" in msg and "rollback" in msg
    tags = assert_safe_stop(aws)
    assert "autoscaling:SetDesiredCapacity" in tags["goldenimage:rotation-error"]
    # resumable at once: no heartbeat to wait out
    res = rotate(aws, pol, None, reporter=quiet(), resume=True)
    assert res["exit_code"] == 0 and res["outcome"] == "done", res
    assert_done(aws, s.new_ami)


def test_response_parser_error_mid_batch_stops_safely_then_rolls_back(aws: Clients) -> None:
    """A garbled answer (ResponseParserError) while batch 2's new instances are awaited:
    the surge is handed back, and rollback returns the group exactly."""
    s = seed_group(aws, size=6)
    pol = GroupPolicy(asg="web", **POLICY)
    seen = {"desired": 0, "raised": False}

    def after_desired(**kw: Any) -> None:
        seen["desired"] += 1

    def garble(**kw: Any) -> None:
        if seen["desired"] == 2 and not seen["raised"]:
            seen["raised"] = True
            raise ResponseParserError("Unable to parse response (not well-formed), invalid XML")

    ev = aws.autoscaling.meta.events
    ev.register("after-call.auto-scaling.SetDesiredCapacity", after_desired)
    ev.register("before-call.auto-scaling.DescribeAutoScalingGroups", garble)
    with pytest.raises(RotationFailed) as exc:
        rotate(aws, pol, s.new_ami, reporter=quiet())
    msg = str(exc.value)
    assert "autoscaling:DescribeAutoScalingGroups failed: ResponseParserError" in msg, msg
    assert_safe_stop(aws)
    assert "batch 2/" in tag_map(group(aws))["goldenimage:rotation-progress"]
    back = rollback(aws, pol, reporter=quiet())
    assert back["exit_code"] == 0 and back["to_image"] == s.old_ami
    g = group(aws)
    assert set(instance_images(aws, "web").values()) == {s.old_ami}
    assert g["LaunchTemplate"]["Version"] == "1"
    assert (g["DesiredCapacity"], g["MaxSize"], g["SuspendedProcesses"]) == (6, 6, [])


def test_a_bug_in_the_rotator_stops_safely(aws: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter wrapped to raise a TypeError on the third observation: no internal
    error, the same safe stop; --resume completes."""
    s = seed_group(aws, size=6)
    pol = GroupPolicy(asg="web", **POLICY)
    real = RotationAws.observe
    n = {"calls": 0}

    def buggy(self: RotationAws, *, refresh: bool = True) -> Any:
        n["calls"] += 1
        if n["calls"] == 3:
            raise TypeError("unsupported operand type(s) for -: 'int' and 'NoneType'")
        return real(self, refresh=refresh)

    monkeypatch.setattr(RotationAws, "observe", buggy)
    with pytest.raises(RotationFailed) as exc:
        rotate(aws, pol, s.new_ami, reporter=quiet())
    msg = str(exc.value)
    assert "unexpected TypeError" in msg and "internal error" not in msg
    assert_safe_stop(aws)
    monkeypatch.setattr(RotationAws, "observe", real)
    res = rotate(aws, pol, None, reporter=quiet(), resume=True)
    assert res["exit_code"] == 0, res
    assert_done(aws, s.new_ami)


def test_decide_raising_mid_rollback_keeps_the_rollback_resumable(
    aws: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alarm rolls the group back; the rollback meets a bug: state stays `failed` with
    its reason, so `rollback` again finishes it."""
    s = seed_group(aws, size=6)
    pol = GroupPolicy(asg="web", abort_alarms=[s.alarm], **POLICY)
    real = loop_module.decide
    state = {"desired": 0, "broken": False}

    def fire(**kw: Any) -> None:
        state["desired"] += 1
        if state["desired"] == 2:
            aws.cloudwatch.set_alarm_state(AlarmName=s.alarm, StateValue="ALARM", StateReason="t")

    def flaky(*a: Any, **kw: Any) -> Any:
        st = a[0]
        target = a[1]
        if target == s.old_ami and not state["broken"]:  # the rollback's first decision
            state["broken"] = True
            raise KeyError(st.name)
        return real(*a, **kw)

    aws.autoscaling.meta.events.register("after-call.auto-scaling.SetDesiredCapacity", fire)
    monkeypatch.setattr(loop_module, "decide", flaky)
    with pytest.raises(RotationFailed) as exc:
        rotate(aws, pol, s.new_ami, reporter=quiet())
    assert "rollback" in str(exc.value) and "internal error" not in str(exc.value)
    tags = tag_map(group(aws))
    assert tags["goldenimage:rotation-status"] == "failed"
    assert "web-5xx in ALARM" in tags["goldenimage:rotation-reason"]
    assert group(aws)["SuspendedProcesses"] == []
    aws.cloudwatch.set_alarm_state(AlarmName=s.alarm, StateValue="OK", StateReason="t")
    back = rollback(aws, pol, reporter=quiet())
    assert back["exit_code"] == 0
    assert set(instance_images(aws, "web").values()) == {s.old_ami}
    g = group(aws)
    assert (g["DesiredCapacity"], g["MaxSize"], g["LaunchTemplate"]["Version"]) == (6, 6, "1")


# ---- through the command line, in a subprocess ------------------------------------------

INJECT = """
import os
from botocore.awsrequest import AWSResponse
from goldenimage.aws.clients import register_hook

_op = os.environ["GOLDENIMAGE_TEST_FAIL_OP"]
_nth = int(os.environ["GOLDENIMAGE_TEST_FAIL_NTH"])
_seen = {"n": 0}

def _fail(**kw):
    _seen["n"] += 1
    if _seen["n"] == _nth:
        return AWSResponse("http://injected", 400, {}, None), {
            "Error": {"Code": "ServiceUnavailable", "Message": "injected outage"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
    return None

register_hook("before-call." + _op, _fail)
"""


def _cli(url: str, tmp: Path, *extra: str, fail: str = "", nth: int = 0) -> subprocess.CompletedProcess[str]:
    paths = [str(ROOT / "src"), str(ROOT)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOLDENIMAGE_TEST_")}
    if fail:
        hook = tmp / "inject"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(INJECT)
        paths.insert(0, str(hook))
        env.update(GOLDENIMAGE_TEST_FAIL_OP=fail, GOLDENIMAGE_TEST_FAIL_NTH=str(nth))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "goldenimage.rotation",
            "rotate",
            "--group",
            "web",
            "--endpoint-url",
            url,
            "--dummy-credentials",
            "--max-attempts",
            "1",
            "--policy",
            json.dumps(POLICY),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_aws_error_one_error_line_then_resume(aws: Clients, moto_url: str, tmp_path: Path) -> None:
    s = seed_group(aws, size=6)
    op = "auto-scaling.TerminateInstanceInAutoScalingGroup"
    run = _cli(moto_url, tmp_path, "--image-id", s.new_ami, fail=op, nth=3)
    assert run.returncode == 1, (run.stdout, run.stderr)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    line = errors[0]
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
    assert (
        "autoscaling:TerminateInstanceInAutoScalingGroup failed: ServiceUnavailable: injected outage" in line
    ), line
    assert "invoke rotate --group web --resume" in line and "invoke rollback --group web" in line
    assert_safe_stop(aws)
    again = _cli(moto_url, tmp_path, "--resume", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outcome"] == "done"
    assert_done(aws, s.new_ami)


def test_image_id_with_channel_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"--image-id ami-1 and --channel stable: give one"):
        rotate_command(quiet(), env="sandbox", group="web", image_id="ami-1", channel="stable")
    # and through invoke: exit 2, one line, nothing touched (no environment needed)
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "invoke"),
            "--search-root",
            str(ROOT),
            "rotate",
            "--group",
            "web",
            "--image-id",
            "ami-1",
            "--channel",
            "stable",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GOLDENIMAGE_ROOT": str(tmp_path)},
    )
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stderr.strip().splitlines() == [
        "error: --image-id ami-1 and --channel stable: give one of them, not both"
    ]


def test_a_bad_strategy_is_named_before_the_sandbox_is_asked(tmp_path: Path) -> None:
    """The options are checked before anything is contacted: on a stopped sandbox, a bad
    --strategy is the one error line, not "sandbox is not running"."""
    run = subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), "--search-root", str(ROOT),
         "rotate", "--env", "sandbox", "--group", "web", "--strategy", "yolo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "GOLDENIMAGE_ROOT": str(ROOT), "GOLDENIMAGE_HOME": str(tmp_path / "home")},
    )
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stderr.strip().splitlines() == ["error: --strategy: 'yolo' is not one of rolling, refresh"]


def test_refresh_strategy_aws_error_cancels_the_refresh_and_stops_safely(aws: Clients) -> None:
    """The refresh strategy's `on_stop` hook: an error while polling cancels the instance
    refresh (moto has none: answered by hooks after botocore validated the parameters)."""
    s = seed_group(aws, size=4)
    seen: dict[str, Any] = {"polls": 0, "cancelled": 0}

    def ok(parsed: dict[str, Any]) -> Any:
        return AWSResponse("http://stub", 200, {}, None), parsed

    def start(**kw: Any) -> Any:
        return ok({"InstanceRefreshId": "ir-7"})

    def describe(**kw: Any) -> Any:
        seen["polls"] += 1
        if seen["polls"] == 2:
            return error_answer("InternalFailure", "injected", 500)
        return ok({"InstanceRefreshes": [{"InstanceRefreshId": "ir-7", "Status": "InProgress"}]})

    def cancel(**kw: Any) -> Any:
        seen["cancelled"] += 1
        return ok({"InstanceRefreshId": "ir-7"})

    ev = aws.autoscaling.meta.events
    ev.register("before-call.auto-scaling.StartInstanceRefresh", start)
    ev.register("before-call.auto-scaling.DescribeInstanceRefreshes", describe)
    ev.register("before-call.auto-scaling.CancelInstanceRefresh", cancel)
    pol = GroupPolicy(asg="web", strategy="refresh", **POLICY)
    with pytest.raises(RotationFailed) as exc:
        rotate(aws, pol, s.new_ami, reporter=quiet())
    assert "autoscaling:DescribeInstanceRefreshes failed: InternalFailure: injected" in str(exc.value)
    assert seen["cancelled"] == 1
    assert_safe_stop(aws, desired=4, max_size=4)
    back = rollback(aws, pol, reporter=quiet())
    assert back["exit_code"] == 0
    g = group(aws)
    assert g["LaunchTemplate"]["Version"] == "1" and g["SuspendedProcesses"] == []

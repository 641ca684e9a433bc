"""The promise of `invoke gc`, as an invariant over random worlds and interleavings: the real
planner and the real apply loop (`gc.gc`, its batches, `AwsTarget`'s fresh look per batch
and cheap check per step) against the moto server.

Any world of AMIs (in any stage) and any sequence of: a new use of an AMI (an instance, a
launch-template version, a new launch template, a share with another account, the public,
an SSM parameter, a channel, a group's rotation tag, an image built on it), a plan, an
apply -- with new uses arriving between the plan and the apply and between two of the
apply's steps --, a restore. Invariants, after every step:

- an AMI used before the apply's fresh look of its batch is never moved a stage further
  (not deprecated, disabled or deleted);
- an AMI whose use arrived between two steps of a batch -- the kinds the check right
  before a destructive step looks at: instances, launch-template versions, launch
  permissions -- is never disabled or deleted after that (deprecating it leaves it
  launchable, and the next plan keeps it and names `--restore`);
- a plan keeps every used AMI;
- the AMI that `promote` (the real registry) last put on channel `stable` is never moved a
  stage further, deleted or unprotected: its deregistration protection (recorded in its tag:
  moto has no protection calls) stays on.
"""

from __future__ import annotations

import io
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from goldenimage import gc, retention
from goldenimage.aws import protection
from goldenimage.aws.clients import AwsContext, Clients
from goldenimage.aws.collect import GC_STAGE_AT_TAG, GC_STAGE_TAG
from goldenimage.aws.target import AwsTarget
from goldenimage.errors import GoldenImageError
from goldenimage.models import CURRENT_IMAGE_TAG, NAME_TAG, PARENT_ID_TAG
from goldenimage.progress import Reporter
from goldenimage.sections import ImageRetention, RetentionSettings
from goldenimage.settings import Environment, load_environment
from tests.conftest import ROOT
from tests.integration.conftest import CREDENTIALS, REGION
from tests.integration.test_aws_references import validated_tags

RANK = {None: 0, "deprecated": 1, "disabled": 2, "deleted": 3}
STAGES = [None, "deprecated", "disabled"]
KINDS = ["instance", "lt version", "new lt", "account", "public", "ssm", "channel", "rotation tag", "child"]
STEP_KINDS = ["instance", "lt version", "new lt", "account"]  # what the check right before a disable looks at
LIVE_ONLY = {"instance", "account", "public"}  # a disabled AMI can be neither launched nor shared
START = datetime(2026, 3, 1, tzinfo=UTC)


class GcWorld(RuleBasedStateMachine):
    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        req = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).close()
        self.clients = Clients(AwsContext(region=REGION, endpoint_url=url, max_attempts=1,
                                          credentials=dict(CREDENTIALS)))
        self.ec2 = boto3.session.Session(region_name=REGION, **CREDENTIALS).client(
            "ec2", endpoint_url=url, config=Config(retries={"max_attempts": 1}))
        self.ssm = self.clients.ssm
        self.asg = self.clients.autoscaling
        self.target = AwsTarget(load_environment("aws", ROOT), clients=self.clients)
        monkeypatch.setattr(gc, "target_for", lambda env: self.target)
        monkeypatch.setattr(Environment, "retention", property(lambda s: RetentionSettings(images={
            "web": ImageRetention(keep=1, min_age_days=0, deprecate_after=0, disable_after=0, delete_after=0)})))
        self.amis: list[str] = []
        self.used: dict[str, int] = {}  # AMI -> its rank when its use arrived (before a batch's look)
        self.late: dict[str, int] = {}  # AMI -> its rank when its use arrived between two steps
        self.now = START
        self.stable: tuple[str, int] | None = None  # (AMI promote put on channel stable, its rank then)
        self.lt_id = ""
        self.n = 0

    @initialize(stages=st.lists(st.sampled_from(STAGES), min_size=2, max_size=4),
                uses=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 9)), max_size=3))
    def world(self, stages: list[str | None], uses: list[tuple[str, int]] = ()) -> None:  # type: ignore[assignment]
        for day, stage in enumerate(stages, start=1):
            ami = self.ec2.register_image(Name=f"web-{day:03d}", RootDeviceName="/dev/sda1")["ImageId"]
            tags = validated_tags(day)
            if stage:
                tags += [{"Key": GC_STAGE_TAG, "Value": stage}, {"Key": GC_STAGE_AT_TAG, "Value": "2026-02-01T00:00:00Z"}]
            self.ec2.create_tags(Resources=[ami], Tags=tags)
            if stage == "disabled":
                self.ec2.disable_image(ImageId=ami)
            self.amis.append(ami)
        lt = self.ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"InstanceType": "t3.micro"})
        self.lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
        for kind, pick in uses:
            self.new_use(kind, pick)

    # -- the world ------------------------------------------------------------------------
    def stage(self, ami: str) -> str | None:
        imgs = self.ec2.describe_images(Filters=[{"Name": "image-id", "Values": [ami]}], IncludeDisabled=True)["Images"]
        if not imgs:
            return "deleted"
        if imgs[0].get("State") == "disabled":
            return "disabled"
        return {t["Key"]: t["Value"] for t in imgs[0].get("Tags", [])}.get(GC_STAGE_TAG) or None

    def use(self, kind: str, ami: str) -> bool:
        """Make a use of `kind` of `ami`; False when this kind cannot use it now."""
        stage = self.stage(ami)
        if stage == "deleted" or (kind in LIVE_ONLY and stage == "disabled"):
            return False
        self.n += 1
        if kind == "instance":
            self.ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)
        elif kind == "lt version":
            self.ec2.create_launch_template_version(LaunchTemplateId=self.lt_id, LaunchTemplateData={"ImageId": ami})
        elif kind == "new lt":
            self.ec2.create_launch_template(LaunchTemplateName=f"lt-{self.n}", LaunchTemplateData={"ImageId": ami})
        elif kind == "account":
            self.ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": "111122223333"}]})
        elif kind == "public":
            self.ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
        elif kind == "ssm":
            self.ssm.put_parameter(Name=f"/team/app{self.n}/ami", Value=ami, Type="String")
        elif kind == "channel":  # a channel of its own: a channel moved twice no longer protects its first
            self.ssm.put_parameter(Name=f"/goldenimage/web/c{self.n}", Value=ami, Type="String")
        elif kind == "rotation tag":
            self.asg.create_auto_scaling_group(
                AutoScalingGroupName=f"g-{self.n}", MinSize=0, MaxSize=1, DesiredCapacity=0,
                AvailabilityZones=[f"{REGION}a"], LaunchTemplate={"LaunchTemplateId": self.lt_id},
                Tags=[{"Key": CURRENT_IMAGE_TAG, "Value": ami, "PropagateAtLaunch": False,
                       "ResourceId": f"g-{self.n}", "ResourceType": "auto-scaling-group"}])
        else:  # an image built on it, of a name gc never collects (no retention policy)
            child = self.ec2.register_image(Name=f"child-{self.n}", RootDeviceName="/dev/sda1")["ImageId"]
            tags = [t if t["Key"] != NAME_TAG else {"Key": NAME_TAG, "Value": "base"} for t in validated_tags(1)]
            self.ec2.create_tags(Resources=[child], Tags=[*tags, {"Key": PARENT_ID_TAG, "Value": ami}])
        return True

    def note(self, table: dict[str, int], ami: str) -> None:
        table[ami] = min(table.get(ami, 9), RANK[self.stage(ami)])

    # -- rules ----------------------------------------------------------------------------
    @rule(kind=st.sampled_from(KINDS), pick=st.integers(0, 9))
    def new_use(self, kind: str, pick: int) -> None:
        ami = self.amis[pick % len(self.amis)]
        if self.use(kind, ami):
            self.note(self.used, ami)

    @rule(pick=st.integers(0, 9))
    def promote(self, pick: int) -> None:
        """`invoke promote` through the real registry (a disabled AMI is refused: skipped)."""
        ami = self.amis[pick % len(self.amis)]
        if self.stage(ami) in ("deleted", "disabled"):
            return
        try:
            self.target.registry().promote(ami, "stable")
        except GoldenImageError:
            return
        self.stable = (ami, RANK[self.stage(ami)])

    @rule()
    def plan(self) -> None:
        r = gc.gc("aws", False, Reporter(io.StringIO()), root=ROOT, now=self.now)
        decisions = {d["image_id"]: d for d in r["decisions"]}
        for ami in [*self.used, *self.late]:  # a fresh gathering sees every use
            if ami in decisions:
                assert decisions[ami]["action"] == "keep", decisions[ami]

    @rule(before=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 9)), max_size=2),
          between=st.lists(st.tuples(st.integers(1, 4), st.sampled_from(STEP_KINDS), st.integers(0, 9)), max_size=3))
    def apply(self, before: list[tuple[str, int]], between: list[tuple[int, str, int]]) -> None:
        """gc --apply, with uses arriving after the plan, before the first batch's look
        (`before`), and after the k-th step (`between`)."""
        self.now += timedelta(days=1)
        real_apply = self.target.gc_apply
        steps = [0]
        arrived = [False]

        def arrive_before() -> None:
            if not arrived[0]:
                arrived[0] = True
                for kind, pick in before:
                    ami = self.amis[pick % len(self.amis)]
                    if self.use(kind, ami):
                        self.note(self.used, ami)

        def step(d: retention.Decision, now: datetime, *more: Any) -> Any:
            arrive_before()  # (a target without gc_recheck looks again in gc_apply)
            out = real_apply(d, now, *more)
            steps[0] += 1
            for k, kind, pick in between:
                if k == steps[0]:
                    ami = self.amis[pick % len(self.amis)]
                    if self.use(kind, ami):
                        self.note(self.late, ami)
            return out

        if hasattr(self.target, "gc_recheck"):
            real_recheck = self.target.gc_recheck

            def recheck(decisions: list[retention.Decision]) -> Any:
                arrive_before()
                return real_recheck(decisions)

            self.target.gc_recheck = recheck  # type: ignore[method-assign]
        self.target.gc_apply = step  # type: ignore[method-assign]
        try:
            r = gc.gc("aws", True, Reporter(io.StringIO()), root=ROOT, now=self.now)
        finally:
            self.target.__dict__.pop("gc_recheck", None)
            self.target.__dict__.pop("gc_apply", None)
        assert all(a["outcome"] != "failed" for a in r["applied"]), r["applied"]

    @rule(pick=st.integers(0, 9))
    def restore(self, pick: int) -> None:
        ami = self.amis[pick % len(self.amis)]
        if self.stage(ami) != "deleted":
            gc.gc("aws", False, Reporter(io.StringIO()), root=ROOT, restore=ami)
            for table in (self.used, self.late):
                if ami in table:
                    table[ami] = 0

    # -- the promise ----------------------------------------------------------------------
    @invariant()
    def the_channels_ami_stays_protected(self) -> None:
        if self.stable is None:
            return
        ami, rank = self.stable
        assert RANK[self.stage(ami)] <= rank, f"{ami} is on channel stable, yet now {self.stage(ami)}"
        img = self.ec2.describe_images(ImageIds=[ami], IncludeDisabled=True)["Images"][0]
        assert protection.protected(img), f"{ami} is on channel stable, yet {protection.state(img)}"

    @invariant()
    def no_used_ami_moved_on(self) -> None:
        for ami, rank in self.used.items():
            now = RANK[self.stage(ami)]
            assert now <= rank, f"{ami} was used at stage rank {rank}, now {now}"
        for ami, rank in self.late.items():
            now = RANK[self.stage(ami)]
            assert now <= max(rank, RANK["deprecated"]), f"{ami} was used (between steps) at rank {rank}, now {now}"


def test_gc_never_moves_a_used_ami_on(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run_state_machine_as_test(lambda: GcWorld(moto_server, monkeypatch), settings=settings(
        max_examples=10, stateful_step_count=4, derandomize=True, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))



def _replay(url: str, monkeypatch: pytest.MonkeyPatch, stages: list[str | None],
            steps: list[tuple[str, tuple[Any, ...]]]) -> None:
    """One example of the machine, step by step, the invariant after each."""
    m = GcWorld(url, monkeypatch)
    m.world(stages)
    m.no_used_ami_moved_on()
    for name, args in steps:
        getattr(m, name)(*args)
        m.no_used_ami_moved_on()
        m.the_channels_ami_stays_protected()


@pytest.mark.parametrize(("stages", "steps"), [
    # shared with another account, then an apply: main deprecated, disabled and deleted it
    ([None, None], [("new_use", ("account", 0)), ("apply", ([], []))]),
    ([None, None], [("new_use", ("public", 0)), ("apply", ([], []))]),
    # shared after the plan, before the disable: main disabled it (and took the access away)
    (["deprecated", None], [("apply", ([("account", 0)], []))]),
    # shared after the plan, before the batch's look, before a deprecate (found by the machine:
    # the batch's look did not ask for launch permissions)
    ([None, None, None], [("apply", ([("instance", 0), ("account", 1)], []))]),
    # a launch-template version made between two steps of one batch, before a delete
    (["disabled", "disabled", None], [("apply", ([], [(1, "lt version", 1)]))]),
    # an instance launched between two steps, before a disable
    (["deprecated", "deprecated", None], [("apply", ([], [(1, "instance", 1)]))]),
    # promoted while deprecated, then moved on by another promotion (rollback target) and back
    (["deprecated", None, None], [("promote", (0,)), ("apply", ([], [])), ("promote", (1,)),
                                  ("promote", (2,)), ("apply", ([], [])), ("promote", (0,)), ("apply", ([], []))]),
])
def test_gc_regressions(moto_server: str, monkeypatch: pytest.MonkeyPatch, stages: list[str | None],
                        steps: list[tuple[str, tuple[Any, ...]]]) -> None:
    _replay(moto_server, monkeypatch, stages, steps)

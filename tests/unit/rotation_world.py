"""A model of one auto-scaling group, answering the rotator's boto3 calls in memory.

The rotator (`rotate`, `rollback`: executor, lifecycle, loop, the rolling strategy) runs
for real against it: `World.clients()` stands in for the boto3 clients that
`rotation.adapter.RotationAws` calls, so nothing of the rotation's own code is replaced.

The model behaves like an ASG where the rotator can tell: desired/min/max (a change
outside min..max is a ValidationError), instances launched from the pinned launch-template
version as `Pending` that become `InService` once `launch_seconds` have passed on the
clock, a scale-in that picks a victim when live instances exceed desired, a replacement
for an instance terminated or detached without decrementing, Standby, unhealthy instances
replaced, tags, suspended processes. Time only moves when somebody sleeps (`WorldClock`).

What it also does, for the tests:
- `schedule(at, fn)`: run `fn` (a crash) right before the rotator's `at`-th AWS call
  from now; `schedule(at, fn, on_read=True)` (someone else's action): before the first
  group read from then on. ASG has no compare-and-set: a change landing between the
  rotator's last read and its next write is not modelled (the rotator reads the group
  again right before each termination);
- it keeps the truth the rotator cannot see: `own`, the capacity the rotator itself added
  to desired (negative: capacity it took and owes), and `ext_desired = desired - own`,
  the group's own desired capacity;
- it records `violations`: a rotator call that took healthy in-service capacity below the
  policy's minimum of the group's own desired capacity, raised desired by more than the
  policy's surge, or a run of polls with no sleep and no change in between (a busy loop).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError

from goldenimage.rotation.clock import SimClock
from goldenimage.rotation.policy import GroupPolicy

LEAVING = ("Terminating", "Detaching")
BUSY_POLLS = 25  # group descriptions in a row with neither a sleep nor a change


class Killed(BaseException):
    """The rotator's process died (SIGKILL): nothing of it runs any more."""


class NoEnd(BaseException):
    """The run made more calls than `max_calls`: it does not terminate."""


class BusyLoop(BaseException):
    """The rotator polls the group again and again without sleeping: stop it here."""


def _error(op: str, message: str, code: str = "ValidationError") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


@dataclass
class Inst:
    id: str
    az: str
    image: str
    version: str
    lifecycle: str = "Pending"
    healthy: bool = True  # the ASG's view
    ec2_state: str = "running"
    protected: bool = False
    ready_at: float = 0.0


class WorldClock(SimClock):
    def __init__(self, world: World, start: float) -> None:
        super().__init__(start)
        self.world = world

    def sleep(self, seconds: float) -> None:
        self.world.sleeps += 1
        self.world.idle_polls = 0
        super().sleep(seconds)
        self.world.tick()


@dataclass
class World:
    desired: int
    min_size: int
    max_size: int
    policy: GroupPolicy
    image: str = "ami-old"
    images: tuple[str, ...] = ("ami-old", "ami-new")
    azs: tuple[str, ...] = ("us-east-1a", "us-east-1b", "us-east-1c")
    launch_seconds: float = 3.0
    seed: int = 0
    name: str = "web"
    instances: dict[str, Inst] = field(default_factory=dict)
    gone: dict[str, Inst] = field(default_factory=dict)  # terminated or detached (EC2 knows them)
    versions: dict[int, str] = field(default_factory=dict)
    pinned: str = "1"
    tags: dict[str, str] = field(default_factory=dict)
    suspended: set[str] = field(default_factory=set)
    own: int = 0
    calls: int = 0
    polls: int = 0
    sleeps: int = 0
    idle_polls: int = 0
    max_calls: int = 0  # 0: no bound
    violations: list[str] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)  # the rotator's changes, for a failure's message
    retired_by_rotator: list[str] = field(default_factory=list)
    schedule_: list[tuple[int, bool, Callable[[], None]]] = field(default_factory=list)
    watches: list[tuple[Callable[[World], bool], bool, Callable[[], None]]] = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.clock = WorldClock(self, 1_800_000_000.0)
        self.versions = {1: self.image}
        for _ in range(self.desired):
            self._launch(ready=True)

    # ---- the group's own behaviour ------------------------------------------------------

    @property
    def ext_desired(self) -> int:
        return self.desired - self.own

    def live(self) -> list[Inst]:
        return [i for i in self.instances.values() if i.lifecycle not in (*LEAVING, "Standby")]

    def serving(self) -> int:
        return sum(1 for i in self.instances.values() if i.lifecycle == "InService" and i.healthy)

    def _version_image(self, version: str) -> tuple[str, str]:
        n = max(self.versions) if version in ("$Latest", "$Default") else int(version)
        return str(n), self.versions[n]

    def _launch(self, *, ready: bool = False) -> Inst:
        self._n += 1
        version, image = self._version_image(self.pinned)
        counts = {az: 0 for az in self.azs}
        for i in self.live():
            counts[i.az] = counts.get(i.az, 0) + 1
        az = min(self.azs, key=lambda z: (counts[z], z))
        inst = Inst(
            f"i-{self._n:04d}",
            az,
            image,
            version,
            lifecycle="InService" if ready else "Pending",
            ready_at=self.clock.now() + self.launch_seconds,
        )
        self.instances[inst.id] = inst
        return inst

    def _remove(self, inst: Inst, lifecycle: str = "Terminating") -> None:
        inst.lifecycle = lifecycle

    def reconcile(self) -> None:
        """What the ASG does on its own: replace unhealthy instances, launch or scale in."""
        for inst in list(self.instances.values()):
            if inst.lifecycle == "InService" and not inst.healthy:
                self._remove(inst)
        live = self.live()
        for _ in range(self.desired - len(live)):
            self._launch()
        if len(live) > self.desired:
            pool = sorted((i for i in live if not i.protected), key=lambda i: i.id)
            self.rng.shuffle(pool)
            for inst in pool[: len(live) - self.desired]:
                self._remove(inst)

    def tick(self) -> None:
        now = self.clock.now()
        for inst in list(self.instances.values()):
            if inst.lifecycle in LEAVING:
                self.gone[inst.id] = self.instances.pop(inst.id)
                if inst.lifecycle == "Terminating":
                    inst.ec2_state = "terminated"
            elif inst.lifecycle == "Pending" and inst.ready_at <= now:
                inst.lifecycle = "InService"
        self.reconcile()

    def settle(self) -> None:
        """Let time pass until every instance is InService (someone waits between runs)."""
        for _ in range(20):
            if (
                all(i.lifecycle in ("InService", "Standby") and i.healthy for i in self.instances.values())
                and len(self.live()) == self.desired
            ):
                return
            self.clock.t += self.launch_seconds
            self.tick()

    def _set_desired(self, d: int, *, rotator: bool, op: str) -> None:
        if not self.min_size <= d <= self.max_size:
            raise _error(
                op, f"New SetDesiredCapacity value {d} is outside the range {self.min_size}..{self.max_size}"
            )
        if rotator:
            self.own += d - self.desired
            if d > self.max_size:  # (unreachable: refused above) never above max
                self.violations.append(f"desired {d} above max size {self.max_size}")
        self.desired = d

    def absorbed(self, surge: int) -> int:
        """What is left of a rotation's `surge` in the group as it is now (see `_absorb`)."""
        if surge <= 0:
            return surge
        keep = max(self.min_size, 1) if self.desired > 0 else 0
        return min(surge, max(0, self.desired - keep))

    def _absorb(self) -> None:
        """Someone lowered desired below the rotator's surge: the part of the surge their
        scale-in took is no longer the rotator's (the group keeps at least one instance,
        and never less than its min size). Applied when the rotator reads the group: it
        counts capacity, it cannot see history, so a scale-in to 0 and out again while it
        is stopped looks to it like no change (a known limit of a count-based record)."""
        self.own = self.absorbed(self.own)

    # ---- someone else's actions ---------------------------------------------------------

    def pick(self, k: int, *, lifecycle: str = "InService") -> Inst | None:
        pool = sorted((i for i in self.instances.values() if i.lifecycle == lifecycle), key=lambda i: i.id)
        return pool[k % len(pool)] if pool else None

    def ext_scale(self, d: int) -> str:
        d = max(self.min_size, min(self.max_size, d))
        self._set_desired(d, rotator=False, op="SetDesiredCapacity")
        self.reconcile()
        return f"desired -> {d}"

    def ext_scale_in(self, k: int) -> str:
        inst = self.pick(k)
        if inst is None or self.desired - 1 < self.min_size:
            return "no scale-in"
        self._remove(inst)
        self.desired -= 1
        self.reconcile()
        return f"scale-in {inst.id}"

    def ext_standby(self, k: int) -> str:
        inst = self.pick(k)
        if inst is None or self.desired - 1 < self.min_size:
            return "no standby"
        inst.lifecycle = "Standby"
        self.desired -= 1
        self.reconcile()
        return f"standby {inst.id}"

    def ext_exit_standby(self, k: int) -> str:
        inst = self.pick(k, lifecycle="Standby")
        if inst is None or self.desired + 1 > self.max_size:
            return "no exit-standby"
        inst.lifecycle = "InService"
        self.desired += 1
        return f"exit-standby {inst.id}"

    def ext_detach(self, k: int) -> str:
        inst = self.pick(k)
        if inst is None:
            return "no detach"
        self._remove(inst, "Detaching")
        self.reconcile()
        return f"detach {inst.id}"

    def ext_terminate(self, k: int) -> str:
        inst = self.pick(k)
        if inst is None:
            return "no terminate"
        inst.ec2_state = "terminated"
        inst.healthy = False
        return f"terminate {inst.id}"

    def when(self, pred: Callable[[World], bool], fn: Callable[[], None], *, on_read: bool = True) -> None:
        """Run `fn` once, right before the first rotator group read (`on_read=False`: any
        call) at which `pred(world)` holds."""
        self.watches.append((pred, on_read, fn))

    def schedule(self, at: int, fn: Callable[[], None], *, on_read: bool = False) -> None:
        """Run `fn` right before the rotator's `at`-th AWS call from now (`on_read`: before
        the first group read from then on)."""
        self.schedule_.append((self.calls + at, on_read, fn))

    # ---- the rotator's calls ---------------------------------------------------------------

    def _enter(self, *, read: bool = False) -> None:
        self.calls += 1
        if self.max_calls and self.calls > self.max_calls:
            self.violations.append(f"no end: more than {self.max_calls} calls")
            raise NoEnd(self.violations[-1])
        due = [e for e in self.schedule_ if e[0] <= self.calls and (read or not e[1])]
        self.schedule_ = [e for e in self.schedule_ if e not in due]
        for _, _, fn in due:
            fn()
        for watch in list(self.watches):
            pred, on_read, fn = watch
            if (read or not on_read) and pred(self):
                self.watches.remove(watch)
                fn()

    def _changed(self, what: str = "") -> None:
        self.idle_polls = 0
        if what:
            self.trace.append(
                f"#{self.calls} {what}: desired {self.desired}, own {self.own}, serving {self.serving()}"
            )

    def _check_floor(self, before: int, what: str) -> None:
        floor = self.policy.min_healthy(max(self.ext_desired, 0))
        after = self.serving()
        if after < before and after < floor:
            self.violations.append(
                f"{what}: healthy in-service {before} -> {after}, below the minimum {floor} "
                f"of the group's own desired {self.ext_desired}"
            )

    def raw(self) -> dict[str, Any]:
        return {
            "AutoScalingGroupName": self.name,
            "DesiredCapacity": self.desired,
            "MinSize": self.min_size,
            "MaxSize": self.max_size,
            "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": self.pinned},
            "Instances": [
                {
                    "InstanceId": i.id,
                    "AvailabilityZone": i.az,
                    "LifecycleState": "Terminating" if i.lifecycle == "Detaching" else i.lifecycle,
                    "HealthStatus": "Healthy" if i.healthy else "Unhealthy",
                    "ProtectedFromScaleIn": i.protected,
                    "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": i.version},
                }
                for i in sorted(self.instances.values(), key=lambda i: i.id)
            ],
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(self.tags.items())],
            "SuspendedProcesses": [{"ProcessName": p} for p in sorted(self.suspended)],
            "TargetGroupARNs": [],
        }

    def clients(self) -> Any:
        return SimpleNamespace(autoscaling=_Asg(self), ec2=_Ec2(self), cloudwatch=None, elbv2=None)


class _Pages:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def paginate(self, **kw: Any) -> Any:
        yield self.fn(**kw)


class _Client:
    def __init__(self, world: World) -> None:
        self.w = world

    def get_paginator(self, method: str) -> _Pages:
        return _Pages(getattr(self, method))


class _Asg(_Client):
    def describe_auto_scaling_groups(self, AutoScalingGroupNames: list[str]) -> dict[str, Any]:
        w = self.w
        w._enter(read=True)
        w._absorb()  # what the rotator sees of someone's scale-in (see `_absorb`)
        w.polls += 1
        w.idle_polls += 1
        if w.idle_polls > BUSY_POLLS:
            w.violations.append(f"busy loop: {w.idle_polls} group reads with no sleep and no change")
            raise BusyLoop(w.violations[-1])
        return {"AutoScalingGroups": [w.raw()] if w.name in AutoScalingGroupNames else []}

    def terminate_instance_in_auto_scaling_group(
        self, InstanceId: str, ShouldDecrementDesiredCapacity: bool
    ) -> dict[str, Any]:
        w = self.w
        w._enter()
        op = "TerminateInstanceInAutoScalingGroup"
        inst = w.instances.get(InstanceId)
        if inst is None or inst.lifecycle in LEAVING:
            raise _error(
                op, f"Instance Id not found - No managed instance found for instance ID: {InstanceId}"
            )
        standby = inst.lifecycle == "Standby"
        if ShouldDecrementDesiredCapacity and not standby and w.desired - 1 < w.min_size:
            raise _error(
                op, "Terminating instance without replacement will violate group's min size constraint."
            )
        before = w.serving()
        if standby and w.policy.standby != "terminate":
            w.violations.append(f"terminated {InstanceId}, in Standby (policy standby: {w.policy.standby})")
        if inst.protected and w.policy.protected == "ignore":
            w.violations.append(f"terminated {InstanceId}, protected (policy protected: ignore)")
        w._remove(inst)
        w.retired_by_rotator.append(InstanceId)
        if ShouldDecrementDesiredCapacity and not standby:
            w.desired -= 1
            w.own -= 1
        w._check_floor(before, f"terminate {InstanceId}")
        w.reconcile()
        w._changed(f"terminate {InstanceId} decrement={ShouldDecrementDesiredCapacity}")
        return {"Activity": {"ActivityId": f"a-{w.calls}"}}

    def _capacity(self, desired: int, max_size: int | None, op: str) -> None:
        w = self.w
        if max_size is not None:
            if max_size < w.min_size or max_size < (desired if desired >= 0 else w.desired):
                raise _error(op, f"max size {max_size} below desired or min size")
            w.max_size = max_size
        if desired >= 0 and desired != w.desired:
            before = w.serving()
            up = desired > w.desired
            w._set_desired(desired, rotator=True, op=op)
            w.reconcile()
            if up and w.own > w.policy.surge(max(w.ext_desired, 0)):
                w.violations.append(
                    f"desired raised to {desired}: the rotator's own share {w.own} is above the "
                    f"policy's surge {w.policy.surge(max(w.ext_desired, 0))} of {w.ext_desired}"
                )
            w._check_floor(before, f"desired -> {desired}")
        w.reconcile()
        w._changed(f"{op} desired={desired} max={max_size}")

    def set_desired_capacity(
        self, AutoScalingGroupName: str, DesiredCapacity: int, HonorCooldown: bool = False
    ) -> None:
        self.w._enter()
        self._capacity(DesiredCapacity, None, "SetDesiredCapacity")

    def update_auto_scaling_group(self, AutoScalingGroupName: str, **kw: Any) -> None:
        w = self.w
        w._enter()
        if "LaunchTemplate" in kw:
            w.pinned = str(kw["LaunchTemplate"]["Version"])
        self._capacity(int(kw.get("DesiredCapacity", -1)), kw.get("MaxSize"), "UpdateAutoScalingGroup")

    def suspend_processes(self, AutoScalingGroupName: str, ScalingProcesses: list[str]) -> None:
        self.w._enter()
        self.w.suspended |= set(ScalingProcesses)
        self.w._changed()

    def resume_processes(self, AutoScalingGroupName: str, ScalingProcesses: list[str]) -> None:
        self.w._enter()
        self.w.suspended -= set(ScalingProcesses)
        self.w._changed()

    def create_or_update_tags(self, Tags: list[dict[str, Any]]) -> None:
        self.w._enter()
        for t in Tags:
            self.w.tags[t["Key"]] = t["Value"]
        self.w._changed()

    def delete_tags(self, Tags: list[dict[str, Any]]) -> None:
        self.w._enter()
        for t in Tags:
            self.w.tags.pop(t["Key"], None)
        self.w._changed()


class _Ec2(_Client):
    def describe_instances(self, InstanceIds: list[str]) -> dict[str, Any]:
        w = self.w
        w._enter()
        known = {**w.gone, **w.instances}
        return {
            "Reservations": [
                {
                    "Instances": [
                        {"InstanceId": i, "ImageId": known[i].image, "State": {"Name": known[i].ec2_state}}
                        for i in InstanceIds
                        if i in known
                    ]
                }
            ]
        }

    def describe_launch_template_versions(self, LaunchTemplateId: str, Versions: list[str]) -> dict[str, Any]:
        w = self.w
        w._enter()
        n, image = w._version_image(Versions[0])
        data = {"ImageId": image, "MetadataOptions": {"HttpTokens": "required"}}
        return {"LaunchTemplateVersions": [{"VersionNumber": int(n), "LaunchTemplateData": data}]}

    def create_launch_template_version(
        self, LaunchTemplateId: str, LaunchTemplateData: dict[str, Any], VersionDescription: str
    ) -> dict[str, Any]:
        w = self.w
        w._enter()
        n = max(w.versions) + 1
        w.versions[n] = LaunchTemplateData["ImageId"]
        w._changed()
        return {"LaunchTemplateVersion": {"VersionNumber": n}}

    def describe_images(self, ImageIds: list[str]) -> dict[str, Any]:
        self.w._enter()
        tags = [{"Key": "goldenimage:status", "Value": "validated"}]
        return {
            "Images": [
                {
                    "ImageId": i,
                    "State": "available",
                    "Tags": [*tags, {"Key": "goldenimage:fingerprint", "Value": f"fp-{i}"}],
                }
                for i in ImageIds
                if i in self.w.images
            ]
        }

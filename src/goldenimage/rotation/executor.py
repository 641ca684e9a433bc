"""The rolling executor: applies a plan to an auto-scaling group through injected clients.

preflight -> lock (ASG tags) -> launch-template version (full data + new ImageId), pinned
by number -> per batch: surge, wait InService + healthy + warm, verify every new
instance's real ImageId, terminate the old ones with decrement -> checkpoint / alarms ->
restore capacity, record the previous image, clear the state.

An alarm in ALARM, a health time-out or a wrong ImageId rolls the group back with the same
engine: previous launch-template version pinned, surge instances removed, new-image
instances replaced, capacity restored; the result says why (exit code 1).

Waits poll through an injectable `Clock` (the benchmark runs on a simulated one).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ..errors import ConfigError, GoldenImageError, Interrupted, NotFoundError, OperationFailed
from ..models import FINGERPRINT_TAG, STATUS_TAG
from ..progress import Reporter
from .plan import (
    LEAVING,
    STANDBY,
    Batch,
    GroupState,
    Instance,
    Plan,
    PlanError,
    describe_plan,
    plan_rotation,
)
from .policy import GroupPolicy
from .state import (
    CURRENT_IMAGE,
    CURRENT_VERSION,
    LAST_ROTATION,
    PREVIOUS_IMAGE,
    PREVIOUS_VERSION,
    GroupTags,
    RotationState,
    clear_keys,
    default_owner,
    iso,
    tag_map,
)

Result = dict[str, Any]
NOT_COUNTED = LEAVING | STANDBY  # not part of desired capacity
# paused while a rotation runs (and resumed after, unless they were paused before)
SUSPEND = ("AZRebalance", "AlarmNotification", "ScheduledActions")


class Clock:
    """Wall clock; the benchmark and tests pass a simulated one."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimClock(Clock):
    """A clock that only moves when somebody sleeps."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class Abort(Exception):
    """Health says no: roll back. `reason` is the one-line why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RotationFailed(OperationFailed):
    def __init__(self, message: str, result: Result | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class _Stop(Exception):
    """SIGINT arrived; raised at the next safe point."""


class StopFlag:
    """SIGINT sets a flag (checked at safe points); a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.requested = True
            signal.signal(signal.SIGINT, previous)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for k in range(0, len(items), n):
        yield items[k : k + n]


@dataclass
class Aws:
    """The few AWS reads and writes the rotator needs, over injected boto3 clients."""

    clients: Any

    @property
    def asg(self) -> Any:
        return self.clients.autoscaling

    @property
    def ec2(self) -> Any:
        return self.clients.ec2

    def group(self, name: str) -> dict[str, Any]:
        groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
            "AutoScalingGroups"
        ]
        if not groups:
            raise NotFoundError(f"auto-scaling group {name!r} not found")
        return dict(groups[0])

    def images_of(self, ids: list[str]) -> dict[str, str]:
        """Each instance's real ImageId, from EC2 (not the ASG's view of the template)."""
        out: dict[str, str] = {}
        pages = self.ec2.get_paginator("describe_instances")
        for chunk in _chunks(sorted(ids), 500):
            for page in pages.paginate(InstanceIds=chunk):
                for res in page["Reservations"]:
                    for inst in res["Instances"]:
                        out[inst["InstanceId"]] = inst.get("ImageId", "")
        return out

    def template_version(self, lt_id: str, version: str) -> dict[str, Any]:
        vs = self.ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=[version])[
            "LaunchTemplateVersions"
        ]
        if not vs:
            raise NotFoundError(f"launch template {lt_id} has no version {version}")
        return dict(vs[0])

    def terminate(self, instance_id: str) -> None:
        self.asg.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
        )

    def set_desired(self, group: str, desired: int) -> None:
        self.asg.set_desired_capacity(
            AutoScalingGroupName=group, DesiredCapacity=desired, HonorCooldown=False
        )

    def alarms_in_alarm(self, names: list[str]) -> list[str]:
        if not names:
            return []
        found: dict[str, str] = {}
        for page in self.clients.cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNames=names
        ):
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
                descs = self.clients.elbv2.describe_target_health(
                    TargetGroupArn=arn, Targets=[{"Id": i} for i in chunk]
                )["TargetHealthDescriptions"]
                states = {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in descs}
                bad += [i for i in chunk if states.get(i) != "healthy"]
        return sorted(set(bad))


def group_state(raw: dict[str, Any], images: dict[str, str]) -> GroupState:
    return GroupState(
        name=raw["AutoScalingGroupName"],
        desired=int(raw["DesiredCapacity"]),
        min_size=int(raw["MinSize"]),
        max_size=int(raw["MaxSize"]),
        instances=tuple(
            Instance(
                id=i["InstanceId"],
                az=i["AvailabilityZone"],
                image_id=images.get(i["InstanceId"], ""),
                lifecycle=i["LifecycleState"],
                healthy=i.get("HealthStatus", "Healthy") == "Healthy",
                protected=bool(i.get("ProtectedFromScaleIn", False)),
            )
            for i in raw.get("Instances", [])
        ),
    )


def http_fingerprint_check(url: str, expect_status: int, fingerprint: str, timeout: float) -> str:
    """'' when the URL answers as expected, else what is wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read(65536).decode("utf-8", "replace")
    except Exception as exc:
        return f"{url}: {exc}"
    if status != expect_status:
        return f"{url}: HTTP {status}"
    if fingerprint and fingerprint not in body:
        return f"{url}: does not serve fingerprint {fingerprint[:16]}"
    return ""


@dataclass
class Rotator:
    clients: Any
    policy: GroupPolicy
    reporter: Reporter
    clock: Clock = field(default_factory=Clock)
    owner: str = field(default_factory=default_owner)
    stop: StopFlag = field(default_factory=StopFlag)
    http_check: Callable[[str, int, str, float], str] = http_fingerprint_check
    # filled while running
    warnings: list[str] = field(default_factory=list)
    st: RotationState | None = None
    replaced: int = 0
    rolled_back: int = 0
    _last_beat: float = 0.0
    _fingerprint: str = ""
    _known: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.aws = Aws(self.clients)
        self.name = self.policy.asg
        self.tags = GroupTags(self.clients.autoscaling, self.name)

    # ---- small helpers -------------------------------------------------------------

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)

    def _safe_point(self) -> None:
        if self.stop.requested:
            raise _Stop()

    def _save(self, **changes: Any) -> None:
        assert self.st is not None
        for k, v in changes.items():
            setattr(self.st, k, v)
        self.st.heartbeat = iso(self.clock.now())
        self._last_beat = self.clock.now()
        self.tags.put(self.st.tags())

    def _beat(self) -> None:
        if (
            self.st is not None
            and self.clock.now() - self._last_beat >= self.policy.heartbeat_ttl_seconds / 3
        ):
            self._save()

    def _check_alarms(self, enabled: bool = True) -> None:
        if enabled and self.policy.abort_alarms:
            firing = self.aws.alarms_in_alarm(self.policy.abort_alarms)
            if firing:
                raise Abort(f"alarm {', '.join(firing)} in ALARM")

    def _pause(self, seconds: float, label: str, alarms: bool) -> None:
        end = self.clock.now() + seconds
        while (left := end - self.clock.now()) > 0:
            self._safe_point()
            self.reporter.step(f"{label} ({left:.0f}s left)")
            self.clock.sleep(min(self.policy.poll_seconds, left))
            self._beat()
            self._check_alarms(alarms)

    def _images(self, raw: dict[str, Any]) -> dict[str, str]:
        ids = [i["InstanceId"] for i in raw.get("Instances", [])]
        return self.aws.images_of(ids) if ids else {}

    # ---- preflight -----------------------------------------------------------------

    def _template_of(self, raw: dict[str, Any]) -> dict[str, str]:
        lt = raw.get("LaunchTemplate")
        if not lt:
            what = "mixed instances policy" if raw.get("MixedInstancesPolicy") else "launch config"
            raise ConfigError(
                f"group {self.name}: uses a {what}; the rotator needs a launch template"
            )
        return {"id": lt["LaunchTemplateId"], "version": str(lt.get("Version", "$Default"))}

    def _check_image(self, image_id: str, *, require_validated: bool) -> None:
        try:
            imgs = self.clients.ec2.describe_images(ImageIds=[image_id])["Images"]
        except Exception as exc:  # InvalidAMIID.* from AWS
            if "InvalidAMIID" in str(exc):
                imgs = []
            else:
                raise
        if not imgs:
            raise NotFoundError(
                f"image {image_id} not found in region {self.clients.ctx.region}"
                if hasattr(self.clients, "ctx")
                else f"image {image_id} not found"
            )
        img = imgs[0]
        if img.get("State", "available") != "available":
            raise ConfigError(f"image {image_id} is {img.get('State')}, not available")
        tags = {t["Key"]: t["Value"] for t in img.get("Tags", [])}
        status = tags.get(STATUS_TAG)
        self._fingerprint = tags.get(FINGERPRINT_TAG, "")
        if require_validated and status != "validated":
            why = f"is {status}" if status else f"has no {STATUS_TAG} tag (not a registered image)"
            raise ConfigError(f"image {image_id} {why}: only validated images may be rotated in")

    def _check_lock(self, tags: dict[str, str], resume: bool) -> RotationState | None:
        st = RotationState.from_tags(tags)
        if st is None:
            return None
        now = self.clock.now()
        if not st.stale(now, self.policy.heartbeat_ttl_seconds):
            raise RotationFailed(
                f"group {self.name} is being rotated: {st.describe(now)}",
                {"group": self.name, "owner": st.owner, "since": st.since, "rotation_id": st.id},
            )
        if not resume:
            raise RotationFailed(
                f"group {self.name} has an unfinished {st.describe(now)}; "
                "resume it (--resume) or roll it back (rollback)",
                {"group": self.name, "owner": st.owner, "since": st.since, "rotation_id": st.id},
            )
        return st

    def _acquire(self, st: RotationState) -> None:
        self.st = st
        self._save()
        if self.policy.lock_settle_seconds:
            self.clock.sleep(self.policy.lock_settle_seconds)
        seen = RotationState.from_tags(tag_map(self.aws.group(self.name)))
        if seen is None or seen.id != st.id or seen.owner != st.owner:
            other = seen.describe(self.clock.now()) if seen else "someone cleared the lock"
            self.st = None
            raise RotationFailed(f"group {self.name}: lost the lock to {other}")

    def _preflight_health(self, raw: dict[str, Any]) -> None:
        bad = [
            f"{i['InstanceId']} {i['LifecycleState']}/{i.get('HealthStatus')}"
            for i in raw["Instances"]
            if i["LifecycleState"] not in ("InService", "Standby")
            or i.get("HealthStatus", "Healthy") != "Healthy"
        ]
        live = [i for i in raw["Instances"] if i["LifecycleState"] not in NOT_COUNTED]
        if bad or len(live) != raw["DesiredCapacity"]:
            raise PlanError(
                f"group {self.name} is not steady: desired {raw['DesiredCapacity']}, "
                f"{len(live)} instances; {', '.join(bad[:5]) or 'capacity mismatch'}"
            )

    # ---- launch template -----------------------------------------------------------

    def _new_version(self, lt_id: str, from_version: str, image_id: str, rid: str) -> str:
        cur = self.aws.template_version(lt_id, from_version)
        data = dict(cur["LaunchTemplateData"])
        data["ImageId"] = image_id
        if data.get("MetadataOptions", {}).get("HttpTokens") != "required":
            self.warn(
                f"launch template {lt_id} does not require IMDSv2 "
                "(MetadataOptions.HttpTokens != required)"
            )
        made = self.clients.ec2.create_launch_template_version(
            LaunchTemplateId=lt_id,
            LaunchTemplateData=data,
            VersionDescription=f"goldenimage rotation {rid}: {image_id}"[:255],
        )
        return str(made["LaunchTemplateVersion"]["VersionNumber"])

    def _suspend(self, raw: dict[str, Any]) -> None:
        """Pause the processes that would fight the rotation; remember which we paused."""
        assert self.st is not None
        if self.st.suspended:
            return
        already = {p["ProcessName"] for p in raw.get("SuspendedProcesses", [])}
        todo = [p for p in SUSPEND if p not in already]
        if todo:
            self.clients.autoscaling.suspend_processes(
                AutoScalingGroupName=self.name, ScalingProcesses=todo
            )
        self._save(suspended=",".join(todo) or "-")

    def _resume_processes(self) -> None:
        assert self.st is not None
        todo = [p for p in self.st.suspended.split(",") if p and p != "-"]
        if todo:
            self.clients.autoscaling.resume_processes(
                AutoScalingGroupName=self.name, ScalingProcesses=todo
            )

    def _pin(self, lt_id: str, version: str, max_size: int | None = None) -> None:
        kw: dict[str, Any] = {}
        if max_size is not None:
            kw["MaxSize"] = max_size
        self.clients.autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=self.name,
            LaunchTemplate={"LaunchTemplateId": lt_id, "Version": version},
            **kw,
        )

    # ---- waiting for new instances -------------------------------------------------

    def _ready(self, raw: dict[str, Any], ids: list[str]) -> str:
        """'' when every id is InService and healthy on every source, else what is missing."""
        by_id = {i["InstanceId"]: i for i in raw["Instances"]}
        not_in = [i for i in ids if by_id.get(i, {}).get("LifecycleState") != "InService"]
        if not_in:
            return f"{len(ids) - len(not_in)}/{len(ids)} InService"
        if self.policy.health.asg:
            sick = [i for i in ids if by_id[i].get("HealthStatus") != "Healthy"]
            if sick:
                return f"{len(ids) - len(sick)}/{len(ids)} healthy (ASG)"
        if self.policy.health.elb and raw.get("TargetGroupARNs"):
            bad = self.aws.unhealthy_targets(list(raw["TargetGroupARNs"]), ids)
            if bad:
                return f"{len(ids) - len(bad)}/{len(ids)} healthy in target groups"
        http = self.policy.health.http
        if http is not None:
            fp = self._fingerprint if http.expect_fingerprint else ""
            why = self.http_check(http.url, http.expect_status, fp, http.timeout_seconds)
            if why:
                return why
        return ""

    def _wait_new(
        self, before: set[str], count: int, label: str, alarms: bool
    ) -> tuple[list[str], dict[str, Any]]:
        start = self.clock.now()
        while True:
            self._safe_point()
            raw = self.aws.group(self.name)
            live = [i for i in raw["Instances"] if i["LifecycleState"] not in NOT_COUNTED]
            new = sorted(i["InstanceId"] for i in live if i["InstanceId"] not in before)
            if len(new) < count:
                why = f"{len(new)}/{count} launched"
            else:
                why = self._ready(raw, new)
                if not why:
                    return new, raw
            elapsed = self.clock.now() - start
            if elapsed >= self.policy.health_timeout_seconds:
                raise Abort(
                    f"health timeout: {label}: {why} after {self.policy.health_timeout_seconds:g}s"
                )
            self.reporter.step(f"{label}: waiting for {count} InService + healthy: {why}")
            self._beat()
            self._check_alarms(alarms)
            self.clock.sleep(self.policy.poll_seconds)

    def _verify(self, ids: list[str], image_id: str) -> None:
        images = self.aws.images_of(ids)
        wrong = [f"{i} runs {images.get(i) or 'nothing'}" for i in ids if images.get(i) != image_id]
        if wrong:
            raise Abort(f"wrong image: {', '.join(wrong[:3])}, expected {image_id}")

    # ---- one batch -----------------------------------------------------------------

    def _batch(self, b: Batch, n: int, total: int, target: str, desired: int, alarms: bool) -> None:
        label = f"batch {b.index}/{n}"
        self._save(progress=f"{self.replaced}/{total} replaced, {label}")
        self._check_alarms(alarms)
        self._safe_point()
        before = self._known - set(b.terminate_first)
        for iid in b.terminate_first:
            self.aws.terminate(iid)
        zones = ", ".join(f"{z} x{k}" for z, k in sorted(Counter(b.out_azs).items()))
        self.reporter.step(f"{label}: launching {b.launch} new; retiring {len(b.out)} ({zones})")
        self.aws.set_desired(self.name, desired - len(b.terminate_first) + b.launch)
        new, raw = self._wait_new(before, b.launch, label, alarms)
        self._verify(new, target)
        if self.policy.warmup_seconds:
            self._pause(self.policy.warmup_seconds, f"{label}: warm-up", alarms)
        for iid in b.terminate_after:
            self.aws.terminate(iid)
        self._known = {i["InstanceId"] for i in raw["Instances"]} - set(b.out)
        self.replaced += len(b.out)
        self.reporter.step(f"{label}: done, {self.replaced}/{total} replaced")
        if b.checkpoint is not None:
            self.reporter.info(
                f"checkpoint {b.checkpoint}%: {self.replaced}/{total} replaced; "
                f"pausing {self.policy.checkpoint_pause_seconds:g}s"
            )
            self._save(progress=f"{self.replaced}/{total} replaced, checkpoint {b.checkpoint}%")
            self._pause(self.policy.checkpoint_pause_seconds, f"checkpoint {b.checkpoint}%", alarms)
        self._safe_point()

    def _run_plan(self, plan: Plan, alarms: bool) -> None:
        n = len(plan.batches)
        self.replaced = 0
        raw = self.aws.group(self.name)
        self._known = {i["InstanceId"] for i in raw["Instances"]}
        for b in plan.batches:
            self._batch(b, n, plan.total, plan.target_image, plan.desired, alarms)
        self._check_alarms(alarms)

    # ---- reconcile (resume / rollback from the middle of a batch) ------------------

    def _reconcile(self, target: str, *, wait_first: bool, alarms: bool) -> None:
        """Bring the group back to its recorded desired capacity, keeping `target` ones."""
        assert self.st is not None
        want = self.st.orig_desired
        raw = self.aws.group(self.name)
        live = [i for i in raw["Instances"] if i["LifecycleState"] not in NOT_COUNTED]
        if wait_first and live:
            ids = [i["InstanceId"] for i in live]
            start = self.clock.now()
            while why := self._ready(raw, ids):
                if self.clock.now() - start >= self.policy.health_timeout_seconds:
                    raise Abort(f"health timeout while resuming: {why}")
                self.reporter.step(f"resume: waiting for the group: {why}")
                self._beat()
                self.clock.sleep(self.policy.poll_seconds)
                self._safe_point()
                raw = self.aws.group(self.name)
                live = [i for i in raw["Instances"] if i["LifecycleState"] not in NOT_COUNTED]
                ids = [i["InstanceId"] for i in live]
        images = self.aws.images_of([i["InstanceId"] for i in live]) if live else {}
        extra = len(live) - want
        if extra > 0:
            order = sorted(
                live,
                key=lambda i: (
                    images.get(i["InstanceId"]) == target,
                    i["LifecycleState"] == "InService" and i.get("HealthStatus") == "Healthy",
                    i["InstanceId"],
                ),
            )
            for i in order[:extra]:
                self.aws.terminate(i["InstanceId"])
            self.reporter.info(f"{self.name}: removed {extra} surplus instance(s)")
        elif extra < 0 or raw["DesiredCapacity"] != want:
            before = {i["InstanceId"] for i in live}
            self.aws.set_desired(self.name, want)
            if extra < 0:
                new, _ = self._wait_new(before, -extra, "restoring capacity", alarms)
                self._verify(new, target)

    # ---- finish --------------------------------------------------------------------

    def _finish(self, outcome: str, *, keep_current: bool) -> None:
        assert self.st is not None
        raw = self.aws.group(self.name)
        st = self.st
        if raw["MaxSize"] != st.orig_max or raw["DesiredCapacity"] != st.orig_desired:
            self.clients.autoscaling.update_auto_scaling_group(
                AutoScalingGroupName=self.name,
                MaxSize=st.orig_max,
                DesiredCapacity=st.orig_desired,
            )
        self._resume_processes()
        done: dict[str, str] = {LAST_ROTATION: f"{st.id} {outcome} {iso(self.clock.now())}"[:256]}
        if not keep_current:
            done.update(
                {
                    PREVIOUS_IMAGE: st.from_image,
                    PREVIOUS_VERSION: st.from_version,
                    CURRENT_IMAGE: st.to_image,
                    CURRENT_VERSION: st.to_version,
                }
            )
        self.tags.put(done)
        self.tags.remove(clear_keys(tag_map(raw)) or list(st.tags()))
        self.st = None

    # ---- rollback after an abort ---------------------------------------------------

    def _roll_back(self, lt_id: str, reason: str) -> None:
        assert self.st is not None
        st = self.st
        self.reporter.warn(f"{self.name}: rolling back to {st.from_image}: {reason}")
        self._save(status="running", reason=reason, progress="rolling back")
        forward = self.replaced
        self._pin(lt_id, st.from_version)
        self._reconcile(st.from_image, wait_first=False, alarms=False)
        raw = self.aws.group(self.name)
        plan = plan_rotation(group_state(raw, self._images(raw)), st.from_image, self.policy)
        self._run_plan(plan, alarms=False)
        self.rolled_back, self.replaced = self.replaced, forward
        self._finish(f"rolled back: {reason}", keep_current=True)


def _result(rot: Rotator, plan: Plan | None, **kw: Any) -> Result:
    out: Result = {
        "group": rot.name,
        "warnings": rot.warnings,
        "plan": plan.to_dict() if plan else None,
        "replaced": rot.replaced,
        "rolled_back": rot.rolled_back,
        "total": plan.total if plan else 0,
    }
    out.update(kw)
    return out


def _new_id(clock: Clock) -> str:
    return f"r{time.strftime('%Y%m%dT%H%M%S', time.gmtime(clock.now()))}-{uuid.uuid4().hex[:6]}"


def _drive(
    rot: Rotator,
    *,
    mode: str,
    image_id: str | None,
    to_version: str | None,
    strategy: str,
    dry_run: bool,
    resume: bool,
    require_validated: bool,
) -> Result:
    """Shared by rotate and rollback: preflight, plan, lock, apply, roll back on Abort."""
    raw = rot.aws.group(rot.name)
    tmpl = rot._template_of(raw)
    tags = tag_map(raw)
    existing = rot._check_lock(tags, resume)
    if existing is not None:
        if image_id and image_id != existing.to_image and not existing.reason:
            raise ConfigError(
                f"group {rot.name}: the unfinished rotation {existing.id} targets "
                f"{existing.to_image}, not {image_id}; resume without --image-id or roll it back"
            )
        image_id = existing.to_image
    if not image_id:
        raise ConfigError(f"group {rot.name}: no target image (give --image-id or --channel)")
    lt_id = tmpl["id"]
    cur = rot.aws.template_version(lt_id, tmpl["version"])
    from_version = str(cur["VersionNumber"])
    from_image = str(cur["LaunchTemplateData"].get("ImageId", ""))
    rot._check_image(image_id, require_validated=require_validated)
    if to_version is not None:
        pinned = rot.aws.template_version(lt_id, to_version)
        if pinned["LaunchTemplateData"].get("ImageId") != image_id:
            raise ConfigError(
                f"launch template {lt_id} version {to_version} runs "
                f"{pinned['LaunchTemplateData'].get('ImageId')}, not {image_id}"
            )
    images = rot._images(raw)
    state = group_state(raw, images)
    if existing is None:
        rot._preflight_health(raw)
        try:
            rot._check_alarms()
        except Abort as abort:
            raise RotationFailed(f"group {rot.name}: not starting: {abort.reason}") from None
    if existing is None:
        plan = plan_rotation(state, image_id, rot.policy)
    else:  # mid-batch: the plan is made again once the group is reconciled
        strategy = existing.strategy or strategy
        try:
            plan = plan_rotation(state, image_id, rot.policy)
        except PlanError:
            plan = Plan(
                rot.name,
                image_id,
                state.desired,
                state.min_size,
                state.max_size,
                0,
                0,
                0,
                state.max_size,
                (),
                (),
            )
    base = {
        "strategy": strategy,
        "mode": mode,
        "dry_run": dry_run,
        "from_image": from_image if existing is None else existing.from_image,
        "to_image": image_id,
        "from_version": from_version if existing is None else existing.from_version,
        "launch_template": lt_id,
    }
    if dry_run:
        new_v = to_version or "(new version)"
        return _result(
            rot,
            plan,
            outcome="planned",
            to_version=new_v,
            plan_text=describe_plan(plan),
            exit_code=0,
            **base,
        )
    if existing is None and not plan.batches and from_image == image_id:
        rot.reporter.info(f"{rot.name}: every instance already runs {image_id}")
        return _result(
            rot, plan, outcome="nothing to do", to_version=from_version, exit_code=0, **base
        )

    now = rot.clock.now()
    if existing is not None:
        st = existing
        rot.reporter.info(f"{rot.name}: taking over {st.describe(now)}")
        st.owner, st.since, st.status = rot.owner, iso(now), "running"
    else:
        st = RotationState(
            id=_new_id(rot.clock),
            owner=rot.owner,
            since=iso(now),
            heartbeat=iso(now),
            mode=mode,
            strategy=strategy,
            from_image=from_image,
            from_version=from_version,
            to_image=image_id,
            to_version=to_version or "",
            orig_desired=int(raw["DesiredCapacity"]),
            orig_max=int(raw["MaxSize"]),
        )
    rot._acquire(st)
    base.update(rotation_id=st.id)
    try:
        with rot.stop.installed():
            try:
                rot._suspend(raw)
                if st.reason:  # an aborted rotation was being rolled back
                    rot._roll_back(lt_id, st.reason or "resumed rollback")
                    return _result(
                        rot, plan, outcome="rolled back", reason=st.reason, exit_code=1, **base
                    )
                if not st.to_version:
                    rot._save(to_version=rot._new_version(lt_id, st.from_version, image_id, st.id))
                surge = rot.policy.surge(st.orig_desired)
                max_during = max(st.orig_max, plan.max_during, st.orig_desired + surge)
                rot._pin(lt_id, st.to_version, max_during)
                base["to_version"] = st.to_version
                if strategy == "refresh":
                    from .refresh import drive_refresh

                    outcome = drive_refresh(rot, lt_id, st.to_version)
                    if outcome != "Successful":
                        rot._pin(lt_id, st.from_version)
                        rot._finish(f"refresh {outcome}", keep_current=True)
                        return _result(rot, plan, outcome=f"refresh {outcome}", exit_code=1, **base)
                else:
                    if existing is not None:
                        rot._reconcile(image_id, wait_first=True, alarms=True)
                        raw = rot.aws.group(rot.name)
                        plan = plan_rotation(
                            group_state(raw, rot._images(raw)), image_id, rot.policy
                        )
                    rot._run_plan(plan, alarms=True)
                rot._finish("done", keep_current=False)
                return _result(rot, plan, outcome="done", exit_code=0, **base)
            except Abort as abort:
                try:
                    rot._roll_back(lt_id, abort.reason)
                except (Abort, PlanError) as again:
                    why = again.reason if isinstance(again, Abort) else again.message
                    rot._save(status="failed", reason=f"{abort.reason}; rollback: {why}"[:256])
                    raise RotationFailed(
                        f"group {rot.name}: {abort.reason}; the rollback failed too: "
                        f"{why}; state kept in the group's tags",
                        _result(rot, plan, outcome="rollback failed", **base),
                    ) from None
                return _result(
                    rot, plan, outcome="rolled back", reason=abort.reason, exit_code=1, **base
                )
    except (_Stop, KeyboardInterrupt):
        if rot.st is not None:
            with contextlib.suppress(Exception):
                rot._save(status="interrupted")
        raise Interrupted(
            f"interrupted at a safe point ({st.progress or 'before the first batch'}); group "
            f"{rot.name} keeps its state: resume with --resume or roll back with rollback"
        ) from None
    except GoldenImageError:
        raise


def rotate(
    clients: Any,
    policy: GroupPolicy,
    image_id: str | None,
    *,
    reporter: Reporter,
    strategy: str | None = None,
    dry_run: bool = False,
    resume: bool = False,
    clock: Clock | None = None,
    owner: str | None = None,
    require_validated: bool = True,
    stop: StopFlag | None = None,
) -> Result:
    """Replace the instances of `policy.asg` with ones born from `image_id`.

    Returns a result dict with `exit_code` 0 (done / nothing to do / planned) or 1 (rolled
    back, with `reason`). Raises ConfigError (exit 2) for bad input, RotationFailed when
    the group is locked or unsteady, Interrupted on SIGINT (state kept for --resume).
    """
    rot = Rotator(clients, policy, reporter, clock=clock or Clock(), owner=owner or default_owner())
    if stop is not None:
        rot.stop = stop
    strat = strategy or policy.strategy
    if strat not in ("rolling", "refresh"):
        raise ConfigError(f"--strategy: {strat!r} is not one of rolling, refresh")
    with reporter.phase("rotate", f"{policy.asg} -> {image_id or 'resume'} ({strat})"):
        return _drive(
            rot,
            mode="rotate",
            image_id=image_id,
            to_version=None,
            strategy=strat,
            dry_run=dry_run,
            resume=resume,
            require_validated=require_validated,
        )


def rollback(
    clients: Any,
    policy: GroupPolicy,
    *,
    reporter: Reporter,
    dry_run: bool = False,
    clock: Clock | None = None,
    owner: str | None = None,
    stop: StopFlag | None = None,
) -> Result:
    """Return the group to the image it ran before the last rotation (exact AMI + version).

    An unfinished rotation whose owner is gone is rolled back to where it started.
    """
    rot = Rotator(clients, policy, reporter, clock=clock or Clock(), owner=owner or default_owner())
    if stop is not None:
        rot.stop = stop
    raw = rot.aws.group(rot.name)
    tags = tag_map(raw)
    with reporter.phase("rollback", policy.asg):
        st = RotationState.from_tags(tags)
        if st is not None:
            rot._check_lock(tags, resume=True)  # refuses a live owner
            if dry_run:
                return _result(
                    rot,
                    None,
                    outcome="planned",
                    dry_run=True,
                    mode="rollback",
                    to_image=st.from_image,
                    to_version=st.from_version,
                    exit_code=0,
                )
            st.status, st.reason = "running", st.reason or "rollback requested"
            st.owner = rot.owner
            rot._acquire(st)
            rot._suspend(raw)
            lt_id = rot._template_of(raw)["id"]
            with rot.stop.installed():
                try:
                    rot._roll_back(lt_id, st.reason)
                except (_Stop, KeyboardInterrupt):
                    with contextlib.suppress(Exception):
                        rot._save(status="interrupted")
                    raise Interrupted(
                        f"rollback of {rot.name} interrupted at a safe point; run rollback again"
                    ) from None
                except (Abort, PlanError) as again:
                    why = again.reason if isinstance(again, Abort) else again.message
                    rot._save(status="failed", reason=why[:256])
                    raise RotationFailed(f"rollback of {rot.name} failed: {why}") from None
            return _result(
                rot,
                None,
                outcome="rolled back",
                mode="rollback",
                rotation_id=st.id,
                to_image=st.from_image,
                to_version=st.from_version,
                exit_code=0,
            )
        prev_image, prev_version = tags.get(PREVIOUS_IMAGE), tags.get(PREVIOUS_VERSION)
        if not prev_image or not prev_version:
            raise ConfigError(
                f"group {rot.name}: no previous image recorded (no finished rotation to undo)"
            )
        return _drive(
            rot,
            mode="rollback",
            image_id=prev_image,
            to_version=prev_version,
            strategy="rolling",
            dry_run=dry_run,
            resume=False,
            require_validated=False,
        )


def human_rotate(result: Result) -> list[str]:
    """Human lines for a rotate/rollback result."""
    g = result.get("group", "?")
    outcome = result.get("outcome", "?")
    lines: list[str] = []
    if outcome == "planned":
        lines.extend(result.get("plan_text") or [])
        lines.append(f"{g}: dry run, nothing changed")
    elif outcome == "nothing to do":
        lines.append(f"{g}: nothing to do: every instance runs {result.get('to_image', '?')}")
    else:
        rid = result.get("rotation_id")
        lines.append(
            f"{g}: {result.get('mode', 'rotate')} {outcome}"
            + (f" ({rid})" if rid else "")
            + f": {result.get('from_image', '?')} -> {result.get('to_image', '?')}"
            + (
                f", launch template version {result['to_version']}"
                if result.get("to_version")
                else ""
            )
        )
        lines.append(f"  replaced {result.get('replaced', 0)}/{result.get('total', 0)}")
    if result.get("reason"):
        lines.append(f"  reason: {result['reason']}")
    for w in result.get("warnings") or []:
        lines.append(f"  warning: {w}")
    return lines

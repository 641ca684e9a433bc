"""The run loop: observe the group, decide, act; until a strategy says it is finished.

`RunLoop` owns what every strategy needs while the group is locked: the rotation state in
the group's tags (save, heartbeat), safe points for Ctrl-C, pauses that watch the abort
alarms, observing the group, readiness beyond the ASG (target groups, HTTP), retiring
instances, and the safe stop. A strategy implements the `Strategy` hooks:

- `begin(loop)`: once, after the lock is taken and the group is pinned;
- `step(loop)`: one observe -> decide -> act round; returns None to go on, or the outcome;
- `on_stop(loop, exc)`: the run is stopping (Ctrl-C, an AWS error, a bug): undo what only
  the strategy knows about (the refresh cancels its instance refresh);
- `surge`: the strategy's own share of the group's desired capacity right now.

Every round of `run` either changes something or sleeps: a round that did neither (the
group looked the same and there was nothing to do yet) is followed by a pause that grows
from `poll_seconds` up to four times it, so no loop polls AWS without sleeping.

`RollingStrategy` is the rolling replacement (`decide` per step); the `refresh` strategy
(refresh.py) drives AWS Instance Refresh through the same hooks.
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..errors import OperationFailed
from ..progress import Reporter
from .adapter import AwsCallFailed, RotationAws
from .clock import Clock, StopFlag
from .decide import Progress, Step, after_launch, decide, order_outdated, own_share
from .plan import LEAVING, STANDBY, GroupState, protected_rule
from .policy import GroupPolicy
from .state import RotationState, iso

SUSPEND = ("AZRebalance", "AlarmNotification", "ScheduledActions")
NOT_COUNTED = LEAVING | STANDBY  # not part of desired capacity


class Abort(Exception):
    """Health says no: roll back. `reason` is the one-line why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RotationFailed(OperationFailed):
    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


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


class Strategy(Protocol):
    """The hooks the run loop calls (see the module doc)."""

    @property
    def surge(self) -> int: ...

    def begin(self, loop: RunLoop) -> None: ...

    def step(self, loop: RunLoop) -> str | None: ...

    def on_stop(self, loop: RunLoop, exc: BaseException) -> None: ...


@dataclass
class Look:
    """The group as last read (`at`: when), with the rotation's own terminations since."""

    state: GroupState
    at: float

    def without(self, iid: str) -> Look:
        """After terminating `iid` (decrementing desired)."""
        s = self.state
        left = tuple(i for i in s.instances if i.id != iid)
        return Look(replace(s, desired=s.desired - 1, instances=left), self.at)


@dataclass
class RunLoop:
    aws: RotationAws
    policy: GroupPolicy
    reporter: Reporter
    clock: Clock = field(default_factory=Clock)
    stop: StopFlag = field(default_factory=StopFlag)
    http_check: Callable[[str, int, str, float], str] = http_fingerprint_check
    st: RotationState | None = None
    fingerprint: str = ""  # the target image's fingerprint (HTTP check)
    warnings: list[str] = field(default_factory=list)
    replaced: int = 0
    rolled_back: int = 0
    left_alone: dict[str, str] = field(default_factory=dict)  # instance -> why (said once)
    doubt: int = 0  # terminations that failed in a way that leaves open whether they happened
    _last_beat: float = 0.0

    @property
    def name(self) -> str:
        return self.aws.name

    # ---- services for strategies -----------------------------------------------------

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)

    def safe_point(self) -> None:
        self.stop.check()

    def save(self, **changes: Any) -> None:
        assert self.st is not None
        for k, v in changes.items():
            setattr(self.st, k, v)
        self.st.heartbeat = iso(self.clock.now())
        self._last_beat = self.clock.now()
        self.aws.put_tags(self.st.tags())

    def own(self, surge: int) -> None:
        """Record the rotation's own share of desired (`RotationState.surge`). Call it
        before a change that lowers the share and after one that raises it."""
        if self.st is not None and self.st.surge != surge:
            self.save(surge=surge)

    def backoff(self, rounds: int) -> float:
        """The pause after `rounds` idle rounds in a row: poll_seconds, doubling every
        three rounds, at most four times poll_seconds."""
        return float(self.policy.poll_seconds * min(4, 2 ** (max(0, rounds - 1) // 3)))

    def beat(self) -> None:
        if (
            self.st is not None
            and self.clock.now() - self._last_beat >= self.policy.heartbeat_ttl_seconds / 3
        ):
            self.save()

    def check_alarms(self, enabled: bool = True) -> None:
        if enabled and self.policy.abort_alarms:
            firing = self.aws.alarms_in_alarm(self.policy.abort_alarms)
            if firing:
                raise Abort(f"alarm {', '.join(firing)} in ALARM")

    def pause(self, seconds: float, label: str, alarms: bool) -> None:
        end = self.clock.now() + seconds
        while (left := end - self.clock.now()) > 0:
            self.safe_point()
            self.reporter.step(f"{label} ({left:.0f}s left)")
            self.clock.sleep(min(self.policy.poll_seconds, left))
            self.beat()
            self.check_alarms(alarms)

    def observe(self, *, refresh: bool = False) -> tuple[GroupState, dict[str, Any]]:
        """The group now. Each instance's AMI is read from EC2 once (it never changes);
        `refresh` reads every instance's EC2 state again too (the ASG's health status
        already reflects an instance stopped or terminated behind its back)."""
        return self.aws.observe(refresh=refresh)

    def ready_elsewhere(self, raw: dict[str, Any], ids: list[str]) -> str:
        """'' when `ids` are healthy in the target groups and the HTTP check passes."""
        if not ids:
            return ""
        if self.policy.health.elb and raw.get("TargetGroupARNs"):
            bad = self.aws.unhealthy_targets(list(raw["TargetGroupARNs"]), ids)
            if bad:
                return f"{len(ids) - len(bad)}/{len(ids)} healthy in target groups"
        http = self.policy.health.http
        if http is not None:
            fp = self.fingerprint if http.expect_fingerprint else ""
            why = self.http_check(http.url, http.expect_status, fp, http.timeout_seconds)
            if why:
                return why
        return ""

    def look(self, view: Look | None) -> Look:
        """The group for a run of terminations: read again when `view` is older than
        poll_seconds (or there is none); else `view` with the run's own terminations
        applied. Someone may change the group between the decision and a termination (ASG
        has no compare-and-set): each termination is checked on a look at most
        poll_seconds old, and a batch costs one read, not one per instance."""
        if view is None or self.clock.now() - view.at >= self.policy.poll_seconds:
            state, _ = self.observe()
            return Look(state, self.clock.now())
        return view

    def may_retire(self, iid: str, surge: int, view: Look | None = None) -> str:
        """'' when terminating `iid` now, decrementing desired, keeps the promises on the
        look `view` (a fresh read when None); else why not. `surge`: the rotation's own
        share before the termination."""
        state = (view or self.look(None)).state
        if own_share(state.desired, state.min_size, surge) != surge:
            return f"desired capacity {state.desired} is below the rotation's extra capacity {surge}"
        inst = next((i for i in state.instances if i.id == iid), None)
        if inst is not None and inst.lifecycle in STANDBY:
            return f"{iid} went into standby"  # someone parked it: theirs (policy standby)
        if inst is not None and (rule := protected_rule(inst, self.policy)) is not None:
            return rule[1]  # someone protected it since: the policy leaves it (or waits)
        if inst is not None and inst.serving:
            floor = self.policy.min_healthy(max(state.desired - surge, 0))
            if state.serving - 1 < floor:
                return f"{state.serving} healthy in service, minimum {floor}"
        return ""

    def retire(self, ids: tuple[str, ...] | list[str], *, decrement: bool = True) -> list[str]:
        """Terminate `ids` through the group; returns those terminated. An instance that
        left the group meanwhile (someone scaled in, terminated or detached it) is skipped:
        AWS refuses to terminate it through the group."""
        done: list[str] = []
        for iid in ids:
            try:
                self.aws.terminate(iid, decrement=decrement)
            except AwsCallFailed as exc:
                raw = self.aws.group()
                still = {
                    i["InstanceId"] for i in raw.get("Instances", []) if i["LifecycleState"] not in LEAVING
                }
                if iid in still:
                    exc.not_done = True
                    raise
                self.reporter.info(f"{self.name}: {iid} left the group meanwhile; not retired")
                continue
            done.append(iid)
        return done

    def _still_in(self, iid: str) -> bool:
        """True when `iid` is known to be in the group and not leaving it."""
        try:
            raw = self.aws.group()
        except Exception:
            return False
        return any(
            i["InstanceId"] == iid and i["LifecycleState"] not in LEAVING for i in raw.get("Instances", [])
        )

    def retire_own(self, iid: str, surge: int, *, recorded: bool = False) -> bool:
        """Terminate `iid`, decrementing desired, out of the rotation's own share `surge`.
        The share is recorded one lower before the call (a crash right after it counts one
        fewer as the rotation's, never one more) and put back when the instance was not
        terminated: it left the group meanwhile, or AWS refused and it is still there.
        `recorded`: the caller already recorded the share as low as it may go (a batch of
        terminations) and records what is left once they are done."""
        if not recorded:
            self.own(surge - 1)
        try:
            done = self.retire([iid])
        except Exception as exc:
            if not (isinstance(exc, AwsCallFailed) and exc.not_done) and not self._still_in(iid):
                self.doubt += 1  # it may have happened: the safe stop counts it as done
                raise
            if not recorded:
                with contextlib.suppress(Exception):  # if this fails too, the record stays low
                    self.own(surge)
            raise
        if not done and not recorded:
            self.own(surge)
        return bool(done)

    # ---- scaling processes -------------------------------------------------------------

    def suspend(self, raw: dict[str, Any]) -> None:
        """Pause the processes that would fight the rotation; remember which we paused."""
        assert self.st is not None
        if self.st.suspended:
            return
        already = {p["ProcessName"] for p in raw.get("SuspendedProcesses", [])}
        todo = [p for p in SUSPEND if p not in already]
        # recorded before: a crash right after the suspend call must not leave the
        # processes suspended with nobody knowing they are the rotation's to resume
        self.save(suspended=",".join(todo) or "-")
        if todo:
            self.aws.suspend(todo)

    def resume_processes(self) -> None:
        assert self.st is not None
        todo = [p for p in self.st.suspended.split(",") if p and p != "-"]
        if todo:
            self.aws.resume(todo)

    # ---- running a strategy ------------------------------------------------------------

    def run(self, strategy: Strategy) -> str:
        strategy.begin(self)
        idle = 0
        while True:
            writes, naps = self.aws.writes, self.clock.naps
            outcome = strategy.step(self)
            if outcome is not None:
                return outcome
            if self.aws.writes != writes or self.clock.naps != naps:
                idle = 0
                continue
            idle += 1  # nothing changed and nobody slept: never poll again at once
            self.reporter.step(f"{self.name}: nothing to do yet; looking again")
            self.beat()
            self.clock.sleep(self.backoff(idle))

    def safe_stop(self, strategy: Strategy | None, status: str, error: str) -> list[str]:
        """Leave the group as a person would want it after a stop: the rotation's surge
        handed back (or capacity it owes given back), max size restored, the scaling
        processes it paused resumed, its state saved as `status` for --resume / rollback.
        Every step is tried; returns what could not be done."""
        problems: list[str] = []
        # the strategy knows its share (less the terminations that may have happened);
        # without one, the recorded share
        if strategy is not None:
            surge = strategy.surge - self.doubt
        else:
            surge = self.st.surge if self.st is not None else 0

        def attempt(what: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as exc:
                problems.append(f"{what}: {' '.join(str(exc).split())[:200]}")

        def capacity() -> None:
            nonlocal surge
            if surge == 0:
                return
            state, _ = self.observe()
            own = own_share(state.desired, state.min_size, surge)
            if own != surge:
                self.warn(
                    f"desired capacity {state.desired} (set by someone else) is below the "
                    f"rotation's extra capacity {surge}: handing back {own}, the rest is the group's"
                )
                surge = own
                self.own(surge)
            base = state.desired - surge
            if surge < 0:
                self.aws.set_capacity(base, base if base > state.max_size else None)
                surge = 0
                self.own(0)
                return
            # what the run was moving to: the new image, or the old one while rolling back
            target = str(getattr(strategy, "target", "") or (self.st.to_image if self.st else ""))
            live = [i for i in state.instances if i.lifecycle not in NOT_COUNTED]
            outdated = [i for i in live if i.image_id != target]
            order = [i for i in live if not i.serving] + [i for i in order_outdated(outdated) if i.serving]
            order += [i for i in live if i.serving and i not in order]
            floor = self.policy.min_healthy(max(base, 0))
            serving = sum(1 for i in live if i.serving)
            victims: list[str] = []
            for inst in order:
                if len(victims) == surge:
                    break
                if inst.serving and serving - 1 < floor:
                    continue
                victims.append(inst.id)
                serving -= 1 if inst.serving else 0
            view: Look | None = None
            for iid in victims:
                view = self.look(view)
                if self.may_retire(iid, surge, view):
                    break
                if self.retire_own(iid, surge):
                    surge -= 1
                    view = view.without(iid)
            if surge > 0:
                raise OperationFailed(f"{surge} surge instance(s) left: no room to remove them")

        def max_size() -> None:
            assert self.st is not None
            raw = self.aws.group()
            want = max(self.st.orig_max, int(raw["DesiredCapacity"]))
            if int(raw["MaxSize"]) != want:
                self.aws.set_max(want)

        def processes() -> None:
            assert self.st is not None
            self.resume_processes()
            self.st.suspended = ""

        if self.st is not None:
            attempt("handing back the surge", capacity)
            attempt("restoring max size", max_size)
            attempt("resuming scaling processes", processes)

            def state() -> None:
                assert self.st is not None
                self.save(status=status, error=error[:256], surge=surge)

            attempt("saving the rotation state", state)
        return problems


@dataclass
class RollingStrategy:
    """Rolling replacement: each step observes the group and applies `decide`."""

    target: str
    alarms: bool = True
    inherited_surge: int = 0  # surge already in the group (resume, or rollback mid-batch)
    planned_batches: int = 0
    prog: Progress = field(default_factory=Progress)
    _batch: Step | None = None
    _label: str = ""
    _wait_since: float | None = None
    _warmed: bool = False
    _uncounted: int = 0
    _waits: int = 0  # waits in a row (the pause grows with them)

    @property
    def surge(self) -> int:
        return self.prog.surge

    def begin(self, loop: RunLoop) -> None:
        self.prog = Progress(surge=self.inherited_surge)
        self._uncounted = max(0, self.inherited_surge)
        loop.replaced = 0

    def on_stop(self, loop: RunLoop, exc: BaseException) -> None:
        return None

    def _wait(self, loop: RunLoop, why: str, *, stuck: bool = False) -> None:
        """Wait `poll_seconds` (instances launching, targets turning healthy), or, when
        `stuck` (nothing in flight will change it; someone else must), a pause that grows
        with each such wait in a row, up to four times poll_seconds."""
        now = loop.clock.now()
        if self._wait_since is None:
            self._wait_since = now
        label = self._label or "waiting for the group"
        if now - self._wait_since >= loop.policy.health_timeout_seconds:
            raise Abort(f"health timeout: {label}: {why} after {loop.policy.health_timeout_seconds:g}s")
        loop.reporter.step(f"{label}: waiting: {why}")
        loop.beat()
        loop.check_alarms(self.alarms)
        self._waits = self._waits + 1 if stuck else 0
        loop.clock.sleep(loop.backoff(self._waits))

    def _tell(self, loop: RunLoop, step: Step) -> None:
        for iid, why in sorted(step.left_alone.items()):
            if iid not in loop.left_alone:
                loop.left_alone[iid] = why
                loop.reporter.info(f"{loop.name}: left alone: {iid}: {why}")

    def step(self, loop: RunLoop) -> str | None:
        loop.safe_point()
        state, raw = loop.observe()
        s = decide(state, self.target, loop.policy, self.prog)
        self._tell(loop, s)
        if s.drop:
            gone = loop.retire(s.drop, decrement=False)
            loop.reporter.info(f"{loop.name}: terminated {len(gone)} outdated Standby instance(s)")
            self.prog = replace(self.prog, replaced=self.prog.replaced + len(gone))
            loop.replaced += len(gone)
            return None
        if s.kind == "abort":
            raise Abort(s.why)
        if s.kind == "wait":
            self._wait(loop, s.why, stuck=s.stuck)
            return None
        self._waits = 0
        if s.kind == "absorb":
            loop.warn(s.why)
            self.prog = replace(self.prog, surge=s.surge)
            self._uncounted = min(self._uncounted, max(0, s.surge))
            loop.own(s.surge)
            if s.surge <= 0 and self._batch is not None:  # nothing of the batch left to retire
                self._batch = None
                self.prog = replace(self.prog, outs=(), seen=frozenset())
            return None
        if s.kind == "grow":
            loop.aws.set_capacity(s.desired, s.max_size if s.max_size > state.max_size else None)
            self.prog = replace(self.prog, surge=self.prog.surge + s.desired - state.desired)
            loop.own(self.prog.surge)  # after the raise
            return None
        if s.kind == "retire":
            return self._retire(loop, state, raw, s)
        if s.kind == "launch":
            self._launch(loop, state, s)
            return None
        loop.check_alarms(self.alarms)
        return "done"

    def _launch(self, loop: RunLoop, state: GroupState, s: Step) -> None:
        loop.check_alarms(self.alarms)
        size = loop.policy.batch_count(max(s.base, 1))
        left = max(0, s.remaining - s.launch)
        total = self.prog.batches + 1 + -(-left // size)
        total = max(total, self.planned_batches if self.prog.batches < self.planned_batches else 0)
        self._label = f"batch {self.prog.batches + 1}/{total}"
        seen = frozenset(i.id for i in state.instances)
        first: list[str] = []
        view: Look | None = None
        for iid in s.terminate_first:  # one by one: a stop knows what the group is owed
            view = loop.look(view)
            why = loop.may_retire(iid, self.prog.surge, view)
            if not why and loop.retire_own(iid, self.prog.surge):
                first.append(iid)
                self.prog = replace(self.prog, surge=self.prog.surge - 1)
                view = view.without(iid)
                continue
            # the group changed since the decision (someone scaled it, or took the
            # instance): launch nothing on a stale look, decide again (owed is owed)
            loop.reporter.info(f"{loop.name}: not retiring {iid} first: {why or 'it left the group'}")
            self.prog = replace(self.prog, replaced=self.prog.replaced + len(first))
            loop.replaced += len(first)
            return
        zones = ", ".join(f"{z} x{k}" for z, k in sorted(Counter(s.out_azs).items()))
        loop.reporter.step(f"{self._label}: launching {s.launch} new; retiring {len(s.out)} ({zones})")
        # relative to desired as it is now: the terminations took a while, and somebody
        # may have scaled the group meanwhile (ASG has no compare-and-set)
        now = loop.aws.group() if first else None
        current = int(now["DesiredCapacity"]) if now else state.desired
        max_now = int(now["MaxSize"]) if now else state.max_size
        desired = current + s.launch
        loop.aws.set_capacity(desired, desired if desired > max_now else None)
        self.prog = after_launch(self.prog, s, seen, len(first))
        replaced_total = self.prog.replaced - len(first) + s.remaining
        loop.save(  # after the raise: the surge it records is in the group now
            progress=f"{self.prog.replaced - len(first)}/{replaced_total} replaced, {self._label}",
            surge=self.prog.surge,
        )
        loop.replaced += len(first)
        self._batch = s
        self._wait_since = loop.clock.now()
        self._warmed = False

    def _retire(self, loop: RunLoop, state: GroupState, raw: dict[str, Any], s: Step) -> str | None:
        new_ids = [
            i.id for i in state.instances if i.id not in self.prog.seen and i.lifecycle not in NOT_COUNTED
        ]
        why = loop.ready_elsewhere(raw, new_ids) if self.prog.seen else ""
        if why:
            self._wait(loop, why)
            return None
        if loop.policy.warmup_seconds and self._batch is not None and not self._warmed:
            loop.pause(loop.policy.warmup_seconds, f"{self._label}: warm-up", self.alarms)
            self._warmed = True
            return None  # observe again after the warm-up
        loop.check_alarms(self.alarms)  # the last look before old instances go
        done: list[str] = []
        victims = (*s.out, *s.extra)
        # one record for the batch, before it: as low as the share may go
        loop.own(self.prog.surge - len(victims))
        try:
            self._retire_each(loop, s, victims, done)
        finally:  # what is left (instances skipped, or a stop); never more than the truth
            with contextlib.suppress(Exception):
                loop.own(self.prog.surge - loop.doubt)
        if self.prog.surge <= 0:
            self._batch_done(loop, s, done)
        return None

    def _retire_each(self, loop: RunLoop, s: Step, victims: tuple[str, ...], done: list[str]) -> None:
        view: Look | None = None
        for iid in victims:  # one by one, each checked on a recent look at the group
            view = loop.look(view)
            why = loop.may_retire(iid, self.prog.surge, view)
            if why:  # the group changed since the decision: decide again
                loop.reporter.info(f"{loop.name}: not retiring {iid} now: {why}")
                return
            if not loop.retire_own(iid, self.prog.surge, recorded=True):
                view = None  # it had left: look again
                continue
            view = view.without(iid)
            old = iid in s.out
            if old:
                done.append(iid)
                if self._uncounted:
                    self._uncounted -= 1
                else:
                    loop.replaced += 1
            else:
                self._uncounted = max(0, self._uncounted - 1)
            self.prog = replace(
                self.prog,
                surge=self.prog.surge - 1,
                replaced=self.prog.replaced + (1 if old else 0),
                outs=tuple(i for i in self.prog.outs if i != iid),
            )

    def _batch_done(self, loop: RunLoop, s: Step, done: list[str]) -> None:
        """The batch's surge is handed back: report, pass a checkpoint (pause)."""
        self._wait_since = None
        batch, self._batch = self._batch, None
        self.prog = replace(self.prog, outs=(), seen=frozenset())
        total = self.prog.replaced + max(0, s.remaining - len(done))
        loop.reporter.step(f"{self._label or 'surge'}: done, {self.prog.replaced}/{total} replaced")
        if batch is not None and batch.checkpoint is not None:
            cp = batch.checkpoint
            loop.reporter.info(
                f"checkpoint {cp}%: {self.prog.replaced}/{total} replaced; "
                f"pausing {loop.policy.checkpoint_pause_seconds:g}s"
            )
            loop.save(progress=f"{self.prog.replaced}/{total} replaced, checkpoint {cp}%")
            self.prog = replace(self.prog, passed=tuple(p for p in loop.policy.checkpoints if p <= cp))
            loop.pause(loop.policy.checkpoint_pause_seconds, f"checkpoint {cp}%", self.alarms)
        loop.safe_point()

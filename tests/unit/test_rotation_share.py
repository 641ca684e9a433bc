"""The rotation's own share of the group's capacity: recorded in the state, never inferred.

The real rotator (`rotate`, `rollback`) runs against the in-memory group of
rotation_world.py; someone else's actions happen at chosen moments of the run.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from goldenimage.errors import GoldenImageError, Interrupted
from goldenimage.progress import Reporter
from goldenimage.rotation.executor import RotationFailed, StopFlag, human_rotate, rollback, rotate
from goldenimage.rotation.plan import PlanError
from goldenimage.rotation.policy import GroupPolicy
from goldenimage.rotation.state import ROT, RotationState
from tests.unit.rotation_world import World

POLICY = dict(asg="web", batch_size=2, max_surge_percent=50, poll_seconds=1.0, lock_settle_seconds=0.0)


def progress(w: World) -> str:
    return w.tags.get(ROT + "progress", "")


def in_flight(w: World) -> bool:
    """Batch 1 launched and its new instances not yet InService."""
    return "batch 1/" in progress(w) and any(i.lifecycle == "Pending" for i in w.instances.values())


def quiet() -> Reporter:
    return Reporter(io.StringIO())


def images(w: World) -> set[str]:
    return {i.image for i in w.live()}


@pytest.mark.parametrize("then", ["resume", "rollback"])
def test_scale_out_between_stop_and_resume_stays(then: str) -> None:
    """A scheduled scale-out from 4 to 10 while the rotation is stopped is the group's:
    the resumed run (or the rollback) retires the old instances it replaces, nothing more."""
    pol = GroupPolicy(**POLICY)  # type: ignore[arg-type]
    w = World(desired=4, min_size=0, max_size=10, policy=pol)
    stop = StopFlag()
    w.when(in_flight, lambda: setattr(stop, "requested", True))
    with pytest.raises(Interrupted):
        rotate(w.clients(), pol, "ami-new", reporter=quiet(), clock=w.clock, stop=stop)
    assert w.desired == 4 and w.tags[ROT + "status"] == "interrupted"
    w.ext_scale(10)  # the scheduled action, while nobody rotates
    w.settle()
    retired = len(w.retired_by_rotator)
    target = "ami-new" if then == "resume" else "ami-old"
    to_replace = sum(1 for i in w.live() if i.image != target)
    if then == "resume":
        res = rotate(w.clients(), pol, None, reporter=quiet(), clock=w.clock, resume=True)
        assert res["outcome"] == "done", res
        assert images(w) == {"ami-new"}
    else:
        res = rollback(w.clients(), pol, reporter=quiet(), clock=w.clock)
        assert res["outcome"] == "rolled back", res
        assert images(w) == {"ami-old"}
    assert w.desired == 10 and len(w.live()) == 10, (w.desired, res)
    assert not w.violations, w.violations
    # the second run retired exactly the instances it replaced: none of the scale-out's
    # capacity was handed "back"
    assert w.own == 0
    assert len(w.retired_by_rotator) - retired == to_replace


def test_a_crash_between_a_scale_out_and_the_state_write_counts_nothing_extra() -> None:
    """The rotation raised desired and died before recording it: the next run does not
    take the unrecorded capacity for its own (it hands back at most what it recorded)."""
    from tests.unit.rotation_world import Killed

    pol = GroupPolicy(**POLICY)  # type: ignore[arg-type]
    w = World(desired=4, min_size=0, max_size=10, policy=pol)
    fired = {"n": 0}

    def kill_after_raise() -> None:
        if w.own > 0 and not fired["n"]:
            fired["n"] = 1
            raise Killed()

    w.when(lambda w: w.own > 0, kill_after_raise, on_read=False)
    with pytest.raises(Killed):
        rotate(w.clients(), pol, "ami-new", reporter=quiet(), clock=w.clock)
    recorded = RotationState.from_tags(w.tags)
    assert recorded is not None and 0 <= recorded.surge < w.own  # the raise was not recorded
    w.own = recorded.surge  # what nobody recorded is the group's now
    w.ext_scale(8)
    w.settle()
    w.clock.t += pol.heartbeat_ttl_seconds + 1
    res = rotate(w.clients(), pol, None, reporter=quiet(), clock=w.clock, resume=True)
    assert res["outcome"] == "done", res
    assert images(w) == {"ami-new"}
    assert w.desired >= 8 and not w.violations, (w.desired, w.violations)


@pytest.mark.parametrize("lowered_to", [0, 1, 2])
def test_desired_lowered_below_the_surge_mid_batch(lowered_to: int) -> None:
    """Someone sets desired below the rotation's extra capacity while a batch is in
    flight: the rotation hands back only what is still its own, never retires the last
    instances, never polls without sleeping, and ends (done, or stopped with a message)."""
    pol = GroupPolicy(**POLICY)  # type: ignore[arg-type]
    w = World(desired=4, min_size=0, max_size=10, policy=pol)
    w.when(in_flight, lambda: w.ext_scale(lowered_to) and None)
    try:
        res = rotate(w.clients(), pol, "ami-new", reporter=quiet(), clock=w.clock)
    except RotationFailed as exc:  # a safe stop: it says what happened and what to run next
        assert "--resume" in str(exc) or "rollback" in str(exc), exc
        res = None
    assert not w.violations, w.violations
    # 2 of the 6 were the rotation's: it keeps the group's own share (never below one)
    assert w.own == 0 and w.desired == max(lowered_to - 2, min(lowered_to, 1)), w.desired
    assert len(w.live()) == w.desired
    if res is not None:
        assert res["outcome"] == "done"
        assert images(w) <= {"ami-new"}
        assert human_rotate(res)
    assert not any(k.startswith(ROT) for k in w.tags) or res is None


def test_every_wait_sleeps_and_a_stuck_group_ends() -> None:
    """Desired lowered to 1 and the one instance protected (policy protected: ignore): the
    surge cannot be handed back by retiring; the run waits with sleeps, then stops."""
    pol = GroupPolicy(**{**POLICY, "protected": "ignore", "health_timeout_seconds": 60})  # type: ignore[arg-type]
    w = World(desired=4, min_size=0, max_size=10, policy=pol)

    def squeeze() -> None:
        w.ext_scale(1)
        w.tick()
        for i in w.live():
            i.protected = True

    w.when(in_flight, squeeze)
    with contextlib.suppress(GoldenImageError):
        rotate(w.clients(), pol, "ami-new", reporter=quiet(), clock=w.clock)
    assert not w.violations, w.violations
    assert w.desired == 1 and len(w.live()) == 1


def test_a_round_that_changes_nothing_is_followed_by_a_growing_pause() -> None:
    """The run loop itself: a strategy step that neither changed anything nor slept is
    followed by a pause (poll_seconds, doubling every three idle rounds, at most 4x)."""
    from dataclasses import dataclass

    from goldenimage.rotation.adapter import RotationAws
    from goldenimage.rotation.loop import RunLoop

    pol = GroupPolicy(**POLICY)  # type: ignore[arg-type]
    w = World(desired=1, min_size=0, max_size=1, policy=pol)
    loop = RunLoop(RotationAws(w.clients(), "web"), pol, quiet(), clock=w.clock)

    @dataclass
    class Idle:
        rounds: int = 10
        surge: int = 0

        def begin(self, loop: RunLoop) -> None:
            return None

        def step(self, loop: RunLoop) -> str | None:
            loop.observe()  # a poll, and nothing else
            self.rounds -= 1
            return "done" if self.rounds == 0 else None

        def on_stop(self, loop: RunLoop, exc: BaseException) -> None:
            return None

    t0 = w.clock.now()
    assert loop.run(Idle()) == "done"
    assert w.sleeps == 9 and not w.violations
    assert w.clock.now() - t0 == pol.poll_seconds * (1 + 1 + 1 + 2 + 2 + 2 + 4 + 4 + 4)


def test_waiting_for_launches_keeps_the_poll_interval_a_stuck_wait_backs_off() -> None:
    """Instances launching: every poll_seconds (no time lost per batch). Blocked by a
    protected instance under `protected: wait`: the pause grows, up to 4x poll_seconds,
    until the health time-out rolls the rotation back."""
    pol = GroupPolicy(**POLICY)  # type: ignore[arg-type]
    w = World(desired=4, min_size=0, max_size=10, policy=pol, launch_seconds=3.0)
    t0 = w.clock.now()
    res = rotate(w.clients(), pol, "ami-new", reporter=quiet(), clock=w.clock)
    assert res["outcome"] == "done"
    assert w.clock.now() - t0 == 2 * 3.0  # two batches, each ready after 3 s, seen at once

    pol = GroupPolicy(**{**POLICY, "protected": "wait", "health_timeout_seconds": 100})  # type: ignore[arg-type]
    w = World(desired=4, min_size=0, max_size=10, policy=pol)
    w.pick(0).protected = True  # type: ignore[union-attr]
    with pytest.raises(PlanError, match="protected"):
        rotate(w.clients(), pol, "ami-new", reporter=quiet(), clock=w.clock)  # the plan refuses
    w.pick(0).protected = False  # type: ignore[union-attr]
    w.when(in_flight, lambda: setattr(w.pick(3), "protected", True))
    t0, naps = w.clock.now(), w.sleeps
    res = rotate(w.clients(), pol, "ami-new", reporter=quiet(), clock=w.clock)
    assert res["outcome"] == "rolled back" and "health timeout" in res["reason"], res
    assert not w.violations
    stuck_naps = w.sleeps - naps
    assert stuck_naps < 100 / pol.poll_seconds / 2  # backed off: far fewer looks than 1 a second

"""`invoke bake`: plan, then apply (the shape of invocations' `_converge`).

plan: base -> fingerprint -> a pure decision (`plan.plan`): skip to a validated image with that
fingerprint, or build, with the reason. apply: one path for every target -- the target's
build, validation and registration (`targets.Target`).

Everything a bake makes lives in a private workspace of the local store until the target
registers it, so an interrupted or failed bake registers nothing and leaves nothing behind.
One convention for every target: one bake of an image name at a time (`locks/<name>.lock`
in the local store); a bake that fails keeps its logs in `failed/<id>/` (an error of ours
says where); one result document.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from . import ancestry, fingerprint, timing
from . import channels as ch
from .build import TIMINGS, NewImage, fingerprint_extra, parent_inputs
from .errors import ConfigError, GoldenImageError, NotFoundError, ValidationFailed
from .fsutil import file_lock
from .models import VALIDATED, ImageRecord
from .paths import store_dir
from .plan import plan
from .progress import Reporter
from .state.lease import LeaseLock
from .store import LocalStore
from .targets import Job, Target

BAKE_WAIT = 4 * 3600.0  # how long a bake waits for another machine's bake of the same image


def resolve_parent(target: Target, name: str, parent_ids: Mapping[str, str]) -> ImageRecord | None:
    """The validated image `name` is baked on (None: the environment's base): the image the
    parent's channel points at, else the parent's bake in this run (`parent_ids`), else the
    parent's newest validated image. Refused with one line if it is not usable."""
    env = target.env
    spec = env.image(name).parent
    if spec is None:
        return None
    reg = target.parent_registry()
    where = f"{env.rel(env.settings_file)}: field images.{name}.parent"
    if spec.channel:
        image_id = ch.current(reg.history(spec.image, spec.channel))
        if image_id is None:
            raise NotFoundError(f"{where}.channel: channel {spec.image}/{spec.channel} points at no image: "
                                f"promote a {spec.image} image first")
    else:
        image_id = parent_ids.get(spec.image) or ancestry.current_parent(
            {"name": spec.image}, [r.summary() for r in reg.list(spec.image)], {})
        if image_id is None:
            raise NotFoundError(f"{where}: parent {spec.image!r} has no validated image: bake it first "
                                f"(invoke bake --image {name} bakes it first)")
    rec = reg.get(image_id)
    if rec.status != VALIDATED or rec.extra.get("stage") == "disabled":
        state = "disabled by gc" if rec.status == VALIDATED else rec.status
        raise ConfigError(f"{where}: parent image {rec.id} ({spec.image}) is {state}: "
                          f"{name!r} is built only on a validated parent")
    return rec


def run(target: Target, name: str, force: bool, reporter: Reporter,
        parent_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Bake `name` with `target`: the result document of `invoke bake`. A child image is
    baked on its parent (`resolve_parent`; `parent_ids`: parents baked in this run)."""
    env = target.env
    tools = target.detect_tools()
    store = LocalStore(store_dir())  # the bake's lock, workspace and kept logs, on every target
    result: dict[str, Any] = {"image": name, "env": env.name, "skipped": False}

    with bake_lock(store, name, reporter):
        target.check_ready(name, tools, reporter)
        parent = resolve_parent(target, name, parent_ids or {})
        checked_build = False
        if not target.base_is_at_hand(parent):  # a slow step comes: the templates first
            target.check_build(name, tools, reporter)
            checked_build = True
        with reporter.phase("base", f"the parent image {parent.id}" if parent else "the base image"):
            base = target.resolve_base(reporter, parent)
        result.update(base.result)
        if parent is not None:
            result["parent"] = {"id": parent.id, "name": parent.name}

        with reporter.phase("fingerprint"):
            inputs = fingerprint.collect(env.root, env, name, extra={**fingerprint_extra(
                base.identity, tools.packer.version_text, tools.ansible), **parent_inputs(parent)})
            fp = fingerprint.compute(inputs)
            reporter.info(f"    fingerprint {fp}")
        result["fingerprint"] = fp

        with bake_lease(target, name, fp, reporter) as lease:
            hit, refused = (None, []) if force else target.lookup(name, fp, reporter)
            decision = plan(name, fp, hit, force, refused)
            result["reason"] = decision.reason
            if refused:
                result["refused"] = refused
            if decision.image is not None:  # the plan first: a skip validates no template, builds nothing
                result.update(skipped=True, **target.skipped(decision.image, reporter), durations=reporter.durations)
                return result
            reporter.info(decision.reason)
            if not checked_build:
                target.check_build(name, tools, reporter)

            with store.workspace() as ws:
                spec = env.image(name).parent
                job = Job(env, NewImage.start(name, fp), inputs, base, tools, ws,
                          parent=parent, parent_channel=spec.channel if spec else None,
                          fence=(lease.lease_name, lease.lease.token) if lease is not None and lease.lease else None)
                with logs_kept_on_failure(store, ws, lambda: job.image.id):
                    result.update(target.started(job))
                    try:
                        result.update(target.build(job, reporter))
                        timings = job.artifacts.get("timings", {})
                        result["slowest_tasks"] = timings.get("slowest_tasks", [])
                        result["ansible_task_count"] = len(timings.get("ansible_tasks") or [])
                        result["ansible_seconds"] = timings.get("ansible_seconds", 0)
                        checked = target.validate(job, reporter)
                        if lease is not None:
                            lease.check()  # a run whose lease was taken over registers nothing
                        result.update(target.register(job, checked, reporter))
                    except BaseException:
                        if not job.finished:
                            target.discard(job, reporter)
                        raise
                    logs = target.kept_logs(job)
                    if logs is not None:
                        result["logs"] = str(logs)
                result["durations"] = reporter.durations
    if result["status"] != VALIDATED:
        exc = ValidationFailed(
            f"image {result['image_id']} failed validation ({len(result['failures'])} failing checks); "
            f"{target.quarantined(result)}",
            result["failures"],
        )
        exc.result = dict(result)
        raise exc
    return result


@contextlib.contextmanager
def bake_lock(store: LocalStore, name: str, reporter: Reporter) -> Iterator[None]:
    """One bake of an image name at a time on this machine: a lock file."""
    def waiting() -> None:
        reporter.info(f"another bake of {name!r} is running; waiting for it to finish")

    with file_lock(store.root / "locks" / f"{name}.lock", on_wait=waiting):
        yield


@contextlib.contextmanager
def bake_lease(target: Target, name: str, fp: str, reporter: Reporter, wait: float = BAKE_WAIT,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[LeaseLock | None]:
    """With shared state (`state:`), one bake of an image's fingerprint across machines: the
    lease `bake/<env>/<name>/<fingerprint>`, waited for (saying who holds it and since when)
    so that the waiting run then finds, and skips to, what the holder made. Two machines
    baking different fingerprints of one image (two branches) do not wait for each other.
    The lease comes back for `check()` before anything is registered; None without state."""
    if target.shared_state() is None:
        yield None
        return
    lock = target.lease(f"bake/{target.env.name}/{name}/{fp}", f"bake {name}")
    assert isinstance(lock, LeaseLock)
    with lock.held(f"bake of {name!r} (fingerprint {fp[:12]})", wait, sleep, max_poll=10.0,
                   on_wait=lambda who: reporter.info(f"    waiting: {who}")):
        assert lock.lease is not None
        target.fence(lock.lease_name, lock.lease.token)  # an older holder's register is refused from now on
        yield lock


@contextlib.contextmanager
def logs_kept_on_failure(store: LocalStore, ws: Path, image_id: Callable[[], str]) -> Iterator[None]:
    """A failed bake registers nothing, but keeps its logs (`keep_logs`); an error of ours
    then says where they are."""
    try:
        yield
    except BaseException as err:
        logs = keep_logs(store, ws, image_id())
        if logs is not None and isinstance(err, GoldenImageError):
            err.message += f" (logs: {logs})"
        raise


def keep_logs(store: LocalStore, ws: Path, image_id: str) -> Path | None:
    """A failed bake registers nothing, but its logs are kept for the post-mortem."""
    logs = {"build.log": ws / "image" / "build.log", TIMINGS: ws / "image" / TIMINGS,
            "build-serial.log": ws / "build-serial.log",
            "validate-serial.log": ws / "validate" / "serial.log"}
    found = {name: path for name, path in logs.items() if path.is_file()}
    if not found:
        return None
    dest = store.root / "failed" / image_id
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        shutil.copy2(path, dest / name)
    return dest


def human_bake(result: dict[str, Any]) -> list[str]:
    if result.get("skipped"):
        return [f"up to date: {result['image_id']} (fingerprint {result['fingerprint'][:12]})"]
    d = result.get("durations", {})
    phases = ", ".join(f"{k} {v:.0f}s" for k, v in d.items())
    return [
        f"{result['status']}: {result['image_id']}",
        f"  fingerprint {result['fingerprint']}",
        f"  artifact    {result['artifact']}",
        f"  phases      {phases}",
        *(f"  not skipped to: {why}" for why in result.get("refused") or []),
        *(f"  {ln}" for ln in timing.human({"slowest_tasks": result.get("slowest_tasks") or [],
                                            "ansible_task_count": result.get("ansible_task_count"),
                                            "ansible_seconds": result.get("ansible_seconds", 0)})),
    ]


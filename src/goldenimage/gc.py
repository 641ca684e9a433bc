"""`invoke gc [--apply]`: the retention plan, and carrying out what is safe.

Written once against the environment's target (`targets.Target.gc_*`): the target gathers
the images, what uses them and the leftovers once per run; `retention.plan` decides (pure);
with `apply` the target carries out each change, re-checking right before it that nothing
uses the image (an image that became used is skipped, and the result says so), at the cost
of what could have changed since, not of everything: one fresh look per batch of steps
(`gc_recheck`), cheap checks per step. One `--apply` (or `--restore`) at a time per
environment (`Target.gc_lock`). A failure on one image is reported and the others go on;
the exit code is 0 only if every change went through (or found its image already gone, or
waits for its deregistration protection's cooldown: `waiting`, with the time it becomes
deletable).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import retention
from .errors import ConfigError, GoldenImageError
from .progress import Reporter
from .sections import RetentionSettings
from .settings import Environment, environment
from .targets import Target, target_for

Result = dict[str, Any]


LOCK_WAIT = 5.0  # seconds a second `gc --apply` waits for the first before it says who holds the lock


def gc(env: Environment | str, apply: bool, reporter: Reporter, *, root: Path | None = None,
       now: datetime | None = None, restore: str | None = None, lock_wait: float = LOCK_WAIT) -> Result:
    """The plan (every image's decision with its reason and the bytes a delete reclaims);
    with `apply`, each change's outcome under `applied`; with `restore`, only that: the
    image's deprecate/disable stage taken back. `apply` and `restore` hold the
    environment's gc lock (`Target.gc_lock`) from the gathering to the last step: a second
    run waits `lock_wait` seconds, then fails with one line naming the holder."""
    env = environment(env, root)
    policy = env.retention  # ConfigError (exit 2) before anything is gathered
    target = target_for(env)
    if apply and not target.gc_applies:
        raise target.gc_not_built("`invoke gc --apply`")  # before anything is gathered
    if restore is not None:
        if apply:
            raise ConfigError("--restore and --apply go separately: restore first, then plan again")
        with target.gc_lock(f"gc --restore {restore}").held(f"gc in {env.name}", lock_wait):
            was = target.gc_restore(restore)["stage"]
        return {"env": env.name, "target": target.name, "restored": restore,
                "stage": was, "changed": was is not None}
    now = now or datetime.now(UTC)
    if not apply:
        return _plan(target, policy, now, reporter, env.name, apply)[0]
    with target.gc_lock("gc --apply").held(f"gc --apply in {env.name}", lock_wait):
        result, plan = _plan(target, policy, now, reporter, env.name, apply)
        return apply_plan(target, plan, now, reporter, result)


def _plan(target: Target, policy: RetentionSettings, now: datetime, reporter: Reporter, env: str,
          apply: bool) -> tuple[Result, retention.Plan]:
    """Gather, plan; ask who else may launch the images the plan would change (one request
    per such image on AWS), and plan again with those shares."""
    with reporter.phase("gather", "images, their references and channels"):
        world = target.gc_world()
    plan = retention.plan(world.images, world.references, world.channels, policy.images, now,
                          world.leftovers, policy.failed_logs_days, policy.leftover_hours, policy.shared_may_go)
    shares = target.gc_shares([d for d in plan.decisions if d.changes])
    if shares:
        plan = retention.plan(world.images, [*world.references, *shares], world.channels, policy.images, now,
                              world.leftovers, policy.failed_logs_days, policy.leftover_hours,
                              policy.shared_may_go)
    result: Result = {"env": env, "target": target.name, **world.where, "apply": apply, **plan.as_dict()}
    return result, plan


def apply_plan(target: Target, plan: retention.Plan, now: datetime, reporter: Reporter,
               result: Result | None = None) -> Result:
    """Carry out the plan's changes, `target.gc_batch` at a time: one fresh look at what uses
    the batch's images (`gc_recheck`) right before its steps, and each step's own cheap
    checks (`gc_apply`). An image used since the plan is skipped; one someone else removed
    is `gone` (not a failure); a failure on one image is reported and the others go on."""
    result = dict(result or {})
    outcomes: list[Result] = []
    images = [d for d in plan.decisions if d.changes]
    lefts = [d for d in plan.leftovers if d.changes]
    changes = [(d, False) for d in images] + [(d, True) for d in lefts]
    fresh: Any = None
    for n, (d, leftover) in enumerate(changes):
        row: Result = {"image_id": d.image_id, "action": d.action}
        try:
            if not leftover and n % max(1, target.gc_batch) == 0:
                fresh = target.gc_recheck(images[n:n + max(1, target.gc_batch)])
            done = target.gc_remove_leftover(d) if leftover else target.gc_apply(d, now, fresh)
        except (GoldenImageError, OSError) as exc:
            row.update(outcome="failed", detail=str(exc))
            reporter.warn(f"{d.action} {d.image_id} failed: {exc}")
        else:
            if done.get("done"):
                row.update(outcome="done", detail=d.reason)
            elif done.get("gone"):
                row.update(outcome="gone", detail=str(done["gone"]))
                reporter.info(f"    {d.action} {d.image_id}: already gone ({row['detail']})")
            elif done.get("waiting"):  # deregistration protection's cooldown: a later run deletes it
                row.update(outcome="waiting", detail=str(done["waiting"]), deletable_at=done.get("deletable_at"))
                reporter.info(f"    {d.action} {d.image_id}: waiting ({row['detail']})")
            else:
                row.update(outcome="skipped", detail=str(done.get("skipped", "")))
                reporter.warn(f"{d.action} {d.image_id} skipped: {row['detail']}")
        outcomes.append(row)
    result["applied"] = outcomes
    result["reclaimed_bytes"] = sum(
        d.reclaim for (d, _), row in zip(changes, outcomes, strict=True) if row["outcome"] == "done")
    if any(row["outcome"] not in ("done", "gone", "waiting") for row in outcomes):
        result["exit_code"] = 1
    return result


def size(n: int) -> str:
    """Bytes for people: 0, 512 B, 3.1 MiB, 2.0 GiB."""
    if not n:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def human_gc(r: Result) -> list[str]:
    if "restored" in r:
        if not r["changed"]:
            return [f"{r['restored']} was in no retention stage: nothing to do"]
        return [f"restored {r['restored']}: no longer {r['stage']['stage']} (since {r['stage']['at']})"]
    rows = [*r["decisions"], *r["leftovers"]]
    if not rows:
        return [f"nothing to collect in {r.get('store', r['env'])}"]
    width = max(len(x["image_id"]) for x in rows)
    lines = [f"note: {n}" for n in r.get("notes", [])]
    lines.append(f"{'ACTION':<10} {'ID':<{width}} {'STAGE':<11} {'RECLAIMS':>9}  REASON")
    for x in rows:
        lines.append(f"{x['action']:<10} {x['image_id']:<{width}} {x['stage'] or '-':<11} "
                     f"{size(x['reclaim_bytes']):>9}  {x['reason']}")
    if "applied" not in r:
        verb = "would reclaim" if r["changes"] else "nothing to change"
        tail = f" {size(r['reclaim_bytes'])}" if r["changes"] else ""
        hint = f" (dry run: `invoke gc --env {r['env']} --apply` carries it out)" if r["changes"] else ""
        return [*lines, f"{r['changes']} change{'s' if r['changes'] != 1 else ''}: {verb}{tail}{hint}"]
    for a in r["applied"]:
        outcome = "already gone" if a["outcome"] == "gone" else a["outcome"]
        lines.append(f"{outcome}: {a['action']} {a['image_id']}"
                     + (f" ({a['detail']})" if a["outcome"] != "done" else ""))
    bad = sum(1 for a in r["applied"] if a["outcome"] not in ("done", "gone", "waiting"))
    waiting = sum(1 for a in r["applied"] if a["outcome"] == "waiting")
    lines.append(f"applied {len(r['applied']) - bad - waiting} of {len(r['applied'])} changes"
                 + (f", {waiting} waiting for a cooldown" if waiting else "")
                 + f", reclaimed {size(r['reclaimed_bytes'])}")
    return lines

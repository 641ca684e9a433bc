"""`invoke gc [--apply]`: the retention plan, and carrying out what is safe.

Written once against the environment's target (`targets.Target.gc_*`): the target gathers
the images, what uses them and the leftovers once per run; `retention.plan` decides (pure);
with `apply` the target carries out each change, re-checking right before it that nothing
uses the image (an image that became used is skipped, and the result says so). A failure
on one image is reported and the others go on; the exit code is 0 only if every change
went through.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import retention
from .errors import ConfigError, GoldenImageError
from .progress import Reporter
from .settings import load_environment
from .targets import target_for

Result = dict[str, Any]


def gc(env_name: str, apply: bool, reporter: Reporter, *, root: Path | None = None,
       now: datetime | None = None, restore: str | None = None) -> Result:
    """The plan (every image's decision with its reason and the bytes a delete reclaims);
    with `apply`, each change's outcome under `applied`; with `restore`, only that: the
    image's deprecate/disable stage taken back."""
    env = load_environment(env_name, root)
    policy = env.retention  # ConfigError (exit 2) before anything is gathered
    target = target_for(env)
    if apply and not target.gc_applies:
        raise target.gc_not_built("`invoke gc --apply`")  # before anything is gathered
    if restore is not None:
        if apply:
            raise ConfigError("--restore and --apply go separately: restore first, then plan again")
        was = target.gc_restore(restore)["stage"]
        return {"env": env.name, "target": target.name, "restored": restore,
                "stage": was, "changed": was is not None}
    now = now or datetime.now(UTC)
    with reporter.phase("gather", "images, their references and channels"):
        world = target.gc_world()
    plan = retention.plan(world.images, world.references, world.channels, policy.images, now,
                          world.leftovers, policy.failed_logs_days, policy.leftover_hours)
    result: Result = {"env": env.name, "target": target.name, **world.where, "apply": apply,
                      **plan.as_dict()}
    if not apply:
        return result
    outcomes: list[Result] = []
    changes = [(d, False) for d in plan.decisions if d.changes] + [(d, True) for d in plan.leftovers if d.changes]
    for d, leftover in changes:
        row: Result = {"image_id": d.image_id, "action": d.action}
        try:
            done = target.gc_remove_leftover(d) if leftover else target.gc_apply(d, now)
        except (GoldenImageError, OSError) as exc:
            row.update(outcome="failed", detail=str(exc))
            reporter.warn(f"{d.action} {d.image_id} failed: {exc}")
        else:
            if done.get("done"):
                row.update(outcome="done", detail=d.reason)
            else:
                row.update(outcome="skipped", detail=str(done.get("skipped", "")))
                reporter.warn(f"{d.action} {d.image_id} skipped: {row['detail']}")
        outcomes.append(row)
    result["applied"] = outcomes
    result["reclaimed_bytes"] = sum(
        d.reclaim for (d, _), row in zip(changes, outcomes, strict=True) if row["outcome"] == "done")
    if any(row["outcome"] != "done" for row in outcomes):
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
    lines = [f"{'ACTION':<10} {'ID':<{width}} {'STAGE':<11} {'RECLAIMS':>9}  REASON"]
    for x in rows:
        lines.append(f"{x['action']:<10} {x['image_id']:<{width}} {x['stage'] or '-':<11} "
                     f"{size(x['reclaim_bytes']):>9}  {x['reason']}")
    if "applied" not in r:
        verb = "would reclaim" if r["changes"] else "nothing to change"
        tail = f" {size(r['reclaim_bytes'])}" if r["changes"] else ""
        hint = f" (dry run: `invoke gc --env {r['env']} --apply` carries it out)" if r["changes"] else ""
        return [*lines, f"{r['changes']} change{'s' if r['changes'] != 1 else ''}: {verb}{tail}{hint}"]
    for a in r["applied"]:
        lines.append(f"{a['outcome']}: {a['action']} {a['image_id']}"
                     + (f" ({a['detail']})" if a["outcome"] != "done" else ""))
    bad = sum(1 for a in r["applied"] if a["outcome"] != "done")
    lines.append(f"applied {len(r['applied']) - bad} of {len(r['applied'])} changes, "
                 f"reclaimed {size(r['reclaimed_bytes'])}")
    return lines

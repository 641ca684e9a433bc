"""Pure: the nightly job's decisions on paper -- drift reasons from a fingerprint comparison,
the exit code from the steps, the headline, and the Markdown rendering of the report.

The report is a JSON document (`nightly.run` builds it); everything here takes that data
and returns data or text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STEPS = ("drift", "bake", "promote", "rotate", "gc", "report")
DONE, FAILED, SKIPPED = "done", "failed", "skipped"
STREAK_EXIT = 3  # the run failed, and so did the ones before it: extra.nightly.failure_streak in a row


def input_reasons(against: Mapping[str, Any], previous_base: str | None = None, limit: int = 5) -> list[str]:
    """Why an image's inputs differ from its previous image's (`invoke fingerprint
    --against`'s comparison: added, removed, changed, now)."""
    out: list[str] = []
    now = against.get("now") or {}
    changed = list(against.get("changed") or [])
    if "base:image" in changed:
        changed.remove("base:image")
        new = str(now.get("base:image", ""))
        if new.startswith("ami:"):
            was = f" (was {previous_base})" if previous_base else ""
            out.append(f"base AMI filter now resolves to {new.rsplit(':', 1)[-1]}{was}")
        else:
            out.append(f"base image changed: now {new[:19] + '…' if len(new) > 19 else new or 'unknown'}")
    for kind in ("changed", "added", "removed"):
        names = changed if kind == "changed" else list(against.get(kind) or [])
        if names:
            shown = ", ".join(names[:limit]) + (f", +{len(names) - limit} more" if len(names) > limit else "")
            out.append(f"inputs {kind}: {shown}")
    return out or ["fingerprint differs from the previous image"]


def exit_code(steps: Sequence[Mapping[str, Any]]) -> int:
    """0 when no step failed; 2 when one failed on bad input or configuration; else 1."""
    failed = [s for s in steps if s.get("outcome") == FAILED]
    if not failed:
        return 0
    return 2 if any(s.get("exit_code") == 2 for s in failed) else 1


def streak_line(doc: Mapping[str, Any]) -> str:
    streak = doc.get("streak") or {}
    if not streak.get("alarm"):
        return ""
    return f"FAILED {streak['failed']} NIGHTLY RUNS IN A ROW (since {streak.get('since')}; limit {streak.get('limit')})"


def headline(doc: Mapping[str, Any]) -> str:
    alarm = streak_line(doc)
    text = _headline(doc)
    return f"{alarm}: {text}" if alarm else text


def _headline(doc: Mapping[str, Any]) -> str:
    drift = doc.get("drift") or {}
    images = (doc.get("bake") or {}).get("images") or []
    built = [i for i in images if i.get("state") == "built"]
    failed = [i for i in images if i.get("state") in ("failed", "blocked")]
    failed_steps = [s["step"] for s in doc.get("steps", []) if s.get("outcome") == FAILED]
    if failed_steps:
        return f"FAILED: {', '.join(failed_steps)}" + (f" ({len(failed)} image(s) failed)" if failed else "")
    unknown = [i["image"] for i in drift.get("images", []) if i.get("state") == "unknown"]
    if not drift.get("drift") and unknown:
        return f"no drift found, but not known for {', '.join(unknown)} (see Drift): nothing baked"
    if not drift.get("drift"):
        return "no drift: nothing changed since the last validated images, nothing baked"
    if not built:
        return "drift found, but every image was already up to date"
    return f"baked and validated {', '.join(i['image'] + ' ' + str(i['image_id']) for i in built)}"


def size(n: int | None) -> str:
    n = int(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]]


def markdown(doc: Mapping[str, Any]) -> str:
    """The report for people: headline, steps with durations, drift, images (inputs changed,
    packages changed, validation), promotions, rotation, gc, webhook."""
    alarm = streak_line(doc)
    out = [f"# {alarm + ' — ' if alarm else ''}Nightly `{doc.get('env')}` ({doc.get('target')}) — {doc.get('started')}",
           "",
           f"**{headline(doc)}** (exit {doc.get('exit_code', 0)})", ""]
    out += ["## Steps", ""]
    out += _table(["step", "outcome", "seconds", "detail"],
                  [[s["step"], s["outcome"], f"{s.get('seconds', 0):.1f}", s.get("detail", "")]
                   for s in doc.get("steps", [])])
    drift = doc.get("drift") or {}
    out += ["", "## Drift", ""]
    for b in drift.get("bases", []):
        state = "error" if b.get("error") else ("DRIFT" if b.get("drift") else "no drift")
        out.append(f"- base `{b.get('base')}`: {state} — {b.get('error') or b.get('reason')}")
        for n in (b.get("newer") or [])[:20]:
            mark = " (security)" if n.get("security") else ""
            out.append(f"  - {n['name']} {n['installed']} → {n['available']} from {n['suite']}{mark}")
    for i in drift.get("images", []):
        reasons = "; ".join(i.get("reasons") or []) or i.get("note") or "unchanged"
        state = "DRIFT" if i.get("drift") else ("UNKNOWN" if i.get("state") == "unknown" else "no drift")
        checked = (f", {i['packages_checked']} packages against {len(i.get('indexes') or [])} index(es)"
                   if "packages_checked" in i else "")
        out.append(f"- image `{i['image']}` (previous {i.get('previous_id') or 'none'}{checked}): {state} — {reasons}")
    arch = drift.get("archive") or {}
    for err in arch.get("errors") or []:
        out.append(f"- archive check failed: {err}")
    if arch.get("indexes"):
        out.append(f"- indexes read ({size(arch.get('bytes_read'))}): " + ", ".join(f"`{x}`" for x in arch["indexes"]))
    if not drift.get("bases") and not drift.get("images"):
        out.append("- not checked")
    images = doc.get("images") or []
    if images:
        out += ["", "## Images", ""]
        out += _table(["image", "state", "image id", "previous", "status", "error"],
                      [[i["image"], i.get("state"), i.get("image_id"), i.get("previous_id"), i.get("status"),
                        i.get("error")] for i in images])
        for i in images:
            out += _image_details(i)
    out += ["", "## Promotions", ""]
    promos = doc.get("promotions") or []
    out += _table(["image", "image id", "channel", "previous", "outcome"],
                  [[p["image"], p["image_id"], p["channel"], p.get("previous"), p["outcome"] +
                    (f": {p['error']}" if p.get("error") else "")] for p in promos]) if promos else ["- none"]
    out += ["", "## Rotation", ""]
    rot = doc.get("rotation") or []
    out += _table(["group", "outcome", "detail"], [[r["group"], r["outcome"], r.get("detail", "")] for r in rot]) \
        if rot else ["- none"]
    out += ["", "## gc", ""]
    gc = doc.get("gc") or {}
    if gc.get("mode") in (None, "off"):
        out.append("- off")
    elif gc.get("error"):
        out.append(f"- {gc['mode']}: failed — {gc['error']}")
    else:
        reclaim = gc.get("reclaimed_bytes") if gc.get("mode") == "apply" else gc.get("reclaim_bytes")
        verb = "reclaimed" if gc.get("mode") == "apply" else "would reclaim"
        out.append(f"- {gc['mode']}: {len(gc.get('changes') or [])} change(s), {verb} {size(reclaim)}")
        for c in gc.get("changes") or []:
            outcome = f" → {c['outcome']}" if c.get("outcome") else ""
            out.append(f"  - {c['action']} {c['image_id']}{outcome}: {c.get('reason', '')}")
    hook = doc.get("webhook") or {}
    if hook.get("outcome") and hook["outcome"] != "off":
        out += ["", "## Webhook", "",
                f"- {hook['outcome']} after {hook.get('attempts', 0)} attempt(s)" +
                (f": {hook['error']}" if hook.get("error") else "")]
    return "\n".join(out) + "\n"


def _image_details(i: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    if i.get("inputs_changed"):
        out += ["", f"### `{i['image']}` {i.get('image_id')}: inputs changed vs {i.get('previous_id')}", ""]
        out += [f"- {r}" for r in i["inputs_changed"]]
    val = i.get("validation")
    if val:
        out += ["", f"### `{i['image']}` validation: {val.get('status')}", "",
                f"- {val.get('passed', '?')} passed, {val.get('failed', '?')} failed, {val.get('errors', 0)} errors"]
        out += [f"- FAILED: {f}" for f in val.get("failures") or []]
    pk = i.get("packages")
    if pk:
        c = pk["counts"]
        out += ["", f"### `{i['image']}` packages vs {i.get('previous_id')}: {c['upgraded']} upgraded, "
                    f"{c['downgraded']} downgraded, {c['added']} added, {c['removed']} removed"
                    f" ({pk.get('security', 0)} from the security suite)", ""]
        if pk["changes"]:
            rows = [[src, ch["name"], ch["kind"], ch.get("old") or "", ch.get("new") or "",
                     "yes" if ch.get("security") else ""]
                    for src, changes in pk["by_source"].items() for ch in changes]
            out += _table(["source", "package", "change", "old", "new", "security"], rows)
    elif i.get("packages_note"):
        out += ["", f"- packages: {i['packages_note']}"]
    return out

"""Retention: which images `invoke gc` keeps, deprecates, disables or deletes, and why.

Pure: plain data in (images, references, channel histories, policy, now), a plan out; no
I/O. The targets gather the data and carry the plan out (`targets.Target.gc_*`).

Rules, in order, for each image:

1. **Protected, whatever its age or stage**: an image a channel points at, each channel's
   rollback target (the previous entry of its history unless that image was revoked or
   quarantined since, and the newest earlier validated one), an image any reference names (a running VM, a disk backing onto it, an instance,
   a launch-template version, an AMI shared with other accounts, organisations, OUs, the
   public or through RAM, ...; references are plain data: kind + where). An image's copies
   (an AMI in other regions) are one image: a reference to any copy protects it. A share
   (kind `shared`) does not protect an image whose name the policy lists in
   `shared_may_go`: its reason then says whose access goes with it.
2. An image whose name has no retention policy is kept.
3. A validated image among the newest `keep` validated images of its name, or younger than
   `min_age_days`, is kept.
4. Everything else moves **one stage per run**, never straight to delete:
   none -> deprecated -> disabled -> deleted, each after its grace (days) since the previous
   stage began. The first stage's anchor: for a validated image the creation of the newer
   image that pushed it out of the newest `keep` ("superseded"); revoked: when it was
   revoked; quarantined and building: when it was created. Quarantined, revoked and
   building images have their own (shorter) graces.

Idempotence (`tests/unit/test_retention.py`): planning again at the same instant after
applying a plan deletes nothing twice, keeps every kept image with the same reason, and
moves an image one more stage only where that stage's grace is zero days. With every grace
at least one day, the second plan changes nothing. One thing can move: the "superseded"
anchor of an older kept image is the creation of the `keep`-th image newer than it, so when
one of those newer images is deleted the anchor becomes a later image's creation -- its
deprecation comes later, never sooner (the anchor is computed, not recorded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from . import channels as ch
from .models import QUARANTINED, REVOKED, VALIDATED
from .sections import ImageRetention

KEEP, DEPRECATE, DISABLE, DELETE = "keep", "deprecate", "disable", "delete"
ACTIONS = (KEEP, DEPRECATE, DISABLE, DELETE)
DEPRECATED, DISABLED = "deprecated", "disabled"  # stages an image can be in
NEXT: dict[str | None, tuple[str, str | None]] = {None: (DEPRECATE, DEPRECATED), DEPRECATED: (DISABLE, DISABLED), DISABLED: (DELETE, None)}
DAY = timedelta(days=1)
SHARED = "shared"  # the kind of a reference that is another account's, organisation's or the public's access


@dataclass(frozen=True)
class Image:
    """One image as retention sees it."""

    id: str
    name: str
    status: str  # validated, quarantined, revoked, building
    created: datetime
    stage: str | None = None  # None, deprecated, disabled
    stage_at: datetime | None = None  # when it entered `stage`
    revoked_at: datetime | None = None
    size: int = 0  # bytes the delete reclaims (local: the image directory)
    copies: tuple[str, ...] = ()  # other ids of the same image (AMI copies in other regions)


@dataclass(frozen=True)
class Reference:
    """Something that uses an image: `kind` (e.g. "vm", "lt-0abc v3") and `where`."""

    image_id: str
    kind: str
    where: str

    def reason(self) -> str:
        return f"{self.kind} {self.where}".strip()


@dataclass(frozen=True)
class Leftover:
    """Something the toolkit left behind: the logs of a failed bake (kept `failed_logs_days`),
    or on AWS what a killed validation or build, or an aborted rotation, left (kept
    `leftover_hours`: `hours`). Facts only; the planner decides.

    `what` names it in the reason ("validation instance i-1 of ami-2"); `in_use`, when set,
    says why it must stay whatever its age (the default version of its launch template, an
    unfinished rotation); `users` are the ids of live things that use it (instances using a
    key pair or a security group): it goes only in a plan that also removes each of them.
    Leftovers are removed in `order`, then oldest first (instances before what they use)."""

    id: str
    kind: str
    created: datetime
    size: int = 0
    what: str = ""
    in_use: str = ""
    users: tuple[str, ...] = ()
    hours: bool = False
    order: int = 0


@dataclass(frozen=True)
class Decision:
    image_id: str
    name: str
    action: str  # keep, deprecate, disable, delete
    reason: str
    stage: str | None  # the image's stage now
    reclaim: int = 0  # bytes a delete frees

    @property
    def changes(self) -> bool:
        return self.action != KEEP

    def as_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "name": self.name, "action": self.action,
                "reason": self.reason, "stage": self.stage, "reclaim_bytes": self.reclaim}


@dataclass(frozen=True)
class Plan:
    now: datetime
    decisions: tuple[Decision, ...]
    leftovers: tuple[Decision, ...] = field(default=())

    def changes(self) -> list[Decision]:
        return [d for d in (*self.decisions, *self.leftovers) if d.changes]

    def reclaim(self) -> int:
        return sum(d.reclaim for d in self.changes())

    def as_dict(self) -> dict[str, Any]:
        return {"now": ch.timestamp(self.now), "decisions": [d.as_dict() for d in self.decisions],
                "leftovers": [d.as_dict() for d in self.leftovers], "reclaim_bytes": self.reclaim(),
                "changes": len(self.changes())}


def parse_time(text: str | None) -> datetime | None:
    """A catalog / tag timestamp (`2026-11-26T10:00:00Z`, or ISO with an offset) in UTC."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _hours(age: timedelta) -> str:
    """An age as the leftovers' reasons say it: 0 h old, 9 h old, 3 days old."""
    h = max(0, int(age.total_seconds() // 3600))
    return f"{h} h old" if h < 72 else f"{h // 24} days old"


def _days(n: int) -> str:
    """Whole days as the reasons say them: today, 1 day ago, 8 days ago."""
    return "today" if n <= 0 else f"{n} day{'s' if n != 1 else ''} ago"


def _canonical(images: Sequence[Image]) -> dict[str, str]:
    canonical = {i.id: i.id for i in images}
    for i in images:
        for c in i.copies:
            canonical[c] = i.id
    return canonical


def protections(
    images: Sequence[Image], references: Iterable[Reference], channels: Mapping[str, Mapping[str, ch.History]],
    shared_may_go: Iterable[str] = (),
) -> dict[str, str]:
    """{image id: why it is protected} (the first reason found, in a stable order). A share
    of an image whose name is in `shared_may_go` protects nothing."""
    canonical = _canonical(images)
    names = {i.id: i.name for i in images}
    may_go = set(shared_may_go)
    out: dict[str, str] = {}

    def protect(image_id: str | None, why: str) -> None:
        if image_id:
            out.setdefault(canonical.get(image_id, image_id), why)

    for name in sorted(channels):
        for channel, hist in sorted(channels[name].items()):
            protect(ch.current(hist), f"channel {channel}")
        for channel, hist in sorted(channels[name].items()):
            before = ch.previous(hist)  # unless revoked or quarantined: no one rolls back to those
            if before and before.get("status") not in (REVOKED, QUARANTINED):
                protect(before.get("image_id"), f"rollback target of {channel}")
            protect(ch.rollback_target(hist), f"rollback target of {channel}")
    for ref in sorted(references, key=lambda r: (r.image_id, r.kind, r.where)):
        if ref.kind == SHARED and names.get(canonical.get(ref.image_id, ref.image_id)) in may_go:
            continue
        protect(ref.image_id, ref.reason())
    return out


def shares(images: Sequence[Image], references: Iterable[Reference]) -> dict[str, list[str]]:
    """{image id: the shares of it (or of a copy), as the reasons say them}."""
    canonical = _canonical(images)
    out: dict[str, list[str]] = {}
    for ref in sorted(references, key=lambda r: (r.image_id, r.kind, r.where)):
        if ref.kind == SHARED:
            out.setdefault(canonical.get(ref.image_id, ref.image_id), []).append(ref.reason())
    return out


def _anchor(img: Image, superseded: Mapping[str, tuple[datetime, int]]) -> tuple[datetime, str]:
    """When the first stage's grace starts, and how the reason names that moment."""
    if img.status == VALIDATED:
        return superseded[img.id][0], "superseded"
    if img.status == REVOKED:
        return img.revoked_at or img.created, "revoked"
    if img.status == QUARANTINED:
        return img.created, "quarantined"
    return img.created, f"{img.status} since created"


def plan(
    images: Sequence[Image],
    references: Iterable[Reference],
    channels: Mapping[str, Mapping[str, ch.History]],
    policy: Mapping[str, ImageRetention],
    now: datetime,
    leftovers: Sequence[Leftover] = (),
    failed_logs_days: int = 14,
    leftover_hours: int = 6,
    shared_may_go: Iterable[str] = (),
) -> Plan:
    """One decision per image (sorted by name, creation, id) and one per leftover. An image
    that is shared (a `shared` reference) is kept unless its name is in `shared_may_go`;
    then a decision that changes it names the shares that go with it."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    references = list(references)
    may_go = set(shared_may_go)
    protected = protections(images, references, channels, may_go)
    shared = shares(images, references)
    ordered = sorted(images, key=lambda i: (i.name, i.created, i.id))

    # the newest `keep` validated images of each name, and when each older one was superseded
    newest: set[str] = set()
    superseded: dict[str, tuple[datetime, int]] = {}
    by_name: dict[str, list[Image]] = {}
    for img in ordered:
        if img.status == VALIDATED:
            by_name.setdefault(img.name, []).append(img)
    for name, valid in by_name.items():
        keep = policy[name].keep if name in policy else len(valid)
        valid = valid[::-1]  # newest first
        for n, img in enumerate(valid):
            if n < keep:
                newest.add(img.id)
            else:
                pusher = valid[n - keep] if keep else img  # its arrival pushed img out
                superseded[img.id] = (pusher.created, keep)

    decisions = [_decide(img, protected, newest, superseded, policy, now) for img in ordered]
    decisions = [replace(d, reason=f"{d.reason}; {', '.join(shared[d.image_id])} ({d.name} is in shared_may_go)")
                 if d.changes and d.image_id in shared else d for d in decisions]
    return Plan(now, tuple(decisions), tuple(_leftovers(leftovers, now, failed_logs_days, leftover_hours)))


def _leftovers(leftovers: Sequence[Leftover], now: datetime, failed_logs_days: int,
               leftover_hours: int) -> list[Decision]:
    """One decision per leftover, in removal order. Hourly leftovers (AWS) go once older than
    `leftover_hours` and unused; the others (failed bake logs) after `failed_logs_days`."""
    ordered = sorted(leftovers, key=lambda x: (x.order, x.created, x.id))
    out: dict[str, Decision] = {}
    for lo in sorted(ordered, key=lambda x: bool(x.users)):  # users decide before what they use
        out[lo.id] = _leftover(lo, now, failed_logs_days, leftover_hours, out)
    return [out[lo.id] for lo in ordered]


def _leftover(lo: Leftover, now: datetime, failed_logs_days: int, leftover_hours: int,
              decided: Mapping[str, Decision]) -> Decision:
    if not lo.hours:
        age = (now - lo.created).days
        if age >= failed_logs_days:
            return Decision(lo.id, lo.kind, DELETE,
                            f"delete: {lo.kind} from {_days(age)}, kept {failed_logs_days} days", None, lo.size)
        return Decision(lo.id, lo.kind, KEEP, f"keep: {lo.kind} from {_days(age)}, kept {failed_logs_days} days", None)
    said = f"{lo.what or f'{lo.kind} {lo.id}'}, {_hours(now - lo.created)}"
    if lo.in_use:
        return Decision(lo.id, lo.kind, KEEP, f"keep: {said}; {lo.in_use}", None)
    if now - lo.created < timedelta(hours=leftover_hours):
        return Decision(lo.id, lo.kind, KEEP,
                        f"keep: {said}; it may still be in use: removed after {leftover_hours} h", None)
    staying = [u for u in lo.users if u not in decided or decided[u].action != DELETE]
    if staying:
        return Decision(lo.id, lo.kind, KEEP, f"keep: {said}; used by {', '.join(staying)}", None)
    return Decision(lo.id, lo.kind, DELETE, f"delete: {said}", None, lo.size)


def _decide(img: Image, protected: Mapping[str, str], newest: set[str],
            superseded: Mapping[str, tuple[datetime, int]], policy: Mapping[str, ImageRetention],
            now: datetime) -> Decision:
    why = protected.get(img.id)
    if why is not None:
        if img.stage:
            why += f" (it is {img.stage}: `invoke gc --restore {img.id}`)"
        return Decision(img.id, img.name, KEEP, f"keep: {why}", img.stage)
    rules = policy.get(img.name)
    if rules is None:
        return Decision(img.id, img.name, KEEP, f"keep: no retention policy for {img.name}", img.stage)
    validated = img.status == VALIDATED
    if validated:
        if img.id in newest:
            return Decision(img.id, img.name, KEEP, f"keep: among the newest {rules.keep} validated", img.stage)
        if (now - img.created).days < rules.min_age_days:
            return Decision(img.id, img.name, KEEP, f"keep: younger than {rules.min_age_days} days", img.stage)
    graces = rules.graces(img.status)
    action = NEXT[img.stage][0]
    if img.stage is None:
        since, what = _anchor(img, superseded)
        wait = graces.deprecate_after
    else:
        since, what = img.stage_at or img.created, img.stage
        wait = graces.disable_after if img.stage == DEPRECATED else graces.delete_after
    elapsed = (now - since).days  # whole days (timedelta.days floors)
    said = f"{what} {_days(elapsed)}"
    if validated:
        said += f", {superseded[img.id][1]} newer kept"
    if elapsed < wait:
        return Decision(img.id, img.name, KEEP, f"keep: {said}; {action} after {wait} day{'s' if wait != 1 else ''}",
                        img.stage)
    return Decision(img.id, img.name, action, f"{action}: {said}", img.stage, img.size if action == DELETE else 0)


def applied(images: Sequence[Image], result: Plan) -> list[Image]:
    """The images after `result` was carried out in full at `result.now` (for tests and for
    planning the next run): deleted ones gone, the others in their next stage since now."""
    by_id = {d.image_id: d for d in result.decisions}
    out: list[Image] = []
    for img in images:
        d = by_id.get(img.id)
        if d is None or d.action == KEEP:
            out.append(img)
        elif d.action != DELETE:
            out.append(replace(img, stage=NEXT[img.stage][1], stage_at=result.now))
    return out


__all__ = ["ACTIONS", "DELETE", "DEPRECATE", "DISABLE", "KEEP", "QUARANTINED", "SHARED", "Decision", "Image",
           "Leftover", "Plan", "Reference", "applied", "parse_time", "plan", "protections", "shares"]

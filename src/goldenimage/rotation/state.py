"""Rotation lock and state, kept in the auto-scaling group's own tags.

While a rotation runs, the group carries `goldenimage:rotation-*` tags: who rotates it
(owner, since), a heartbeat, where it goes (from/to image and launch-template version),
the capacity to restore, the capacity the rotation itself added (`surge`) and the progress. A crash cannot lose them, so the next run can
refuse (a live owner), resume or roll back (an expired heartbeat or an interrupted run).
A finished rotation leaves `goldenimage:previous-*` and `goldenimage:current-*` behind
for `rollback`.

ASG tags have no compare-and-swap: `acquire` writes the lock, waits a moment and reads it
back, so two rotators started at the same second leave one standing (not a proof against
every interleaving; rotations are started by people and jobs, not by the thousand).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from dataclasses import dataclass, fields
from typing import Any

from ..models import (
    CURRENT_IMAGE_TAG,
    CURRENT_VERSION_TAG,
    PREVIOUS_IMAGE_TAG,
    PREVIOUS_VERSION_TAG,
    ROTATION_STATE_PREFIX,
)

ROT = ROTATION_STATE_PREFIX
PREVIOUS_IMAGE = PREVIOUS_IMAGE_TAG
PREVIOUS_VERSION = PREVIOUS_VERSION_TAG
CURRENT_IMAGE = CURRENT_IMAGE_TAG
CURRENT_VERSION = CURRENT_VERSION_TAG
LAST_ROTATION = "goldenimage:last-rotation"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return 0.0


def default_owner() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass
class RotationState:
    id: str
    owner: str
    since: str
    heartbeat: str
    status: str = "running"  # running | interrupted | failed; reason set = rolling back
    mode: str = "rotate"  # rotate | rollback
    strategy: str = "rolling"
    from_image: str = ""
    from_version: str = ""
    to_image: str = ""
    to_version: str = ""
    orig_desired: int = 0
    orig_max: int = 0
    progress: str = ""
    reason: str = ""
    suspended: str = ""  # scaling processes this rotation suspended ("-": none)
    # the capacity the rotation itself added to desired and has not handed back yet
    # (negative: instances it retired before their replacements launched, owed back).
    # Recorded after every raise and before every decrease, so a crash between a capacity
    # change and the tag write never makes it count more as its own than it added;
    # someone else's scaling is never in it. Resume and rollback hand back only this.
    surge: int = 0
    error: str = ""  # why the run stopped (status failed), for the next run to show

    def tags(self) -> dict[str, str]:
        return {ROT + f.name.replace("_", "-"): str(getattr(self, f.name))[:256] for f in fields(self)}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RotationState | None:
        if not tags.get(ROT + "id"):
            return None
        kw: dict[str, Any] = {}
        for f in fields(cls):
            raw = tags.get(ROT + f.name.replace("_", "-"), "")
            if f.type in ("int", int):
                try:
                    kw[f.name] = int(raw or 0)
                except ValueError:  # edited by hand: count nothing (the safe side)
                    kw[f.name] = 0
            else:
                kw[f.name] = raw
        return cls(**kw)

    def stale(self, now: float, ttl: float) -> bool:
        """The owner is gone: it said so (interrupted/failed), or its heartbeat expired."""
        if self.status in ("interrupted", "failed"):
            return True
        return now - parse_iso(self.heartbeat) > ttl

    def describe(self, now: float) -> str:
        age = int(now - parse_iso(self.heartbeat))
        return (
            f"rotation {self.id} ({self.mode} {self.from_image} -> {self.to_image}, "
            f"{self.progress or 'starting'}) by {self.owner} since {self.since}, "
            f"status {self.status}, last heartbeat {age}s ago"
        )


def tag_map(group: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in group.get("Tags", [])}


def clear_keys(tags: dict[str, str]) -> list[str]:
    return [k for k in tags if k.startswith(ROT)]

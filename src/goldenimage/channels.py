"""Channels: named pointers at images that keep their whole history. Pure rules, no I/O.

A channel (`stable`, `canary`, ...) belongs to one image name. Its history is a list of
moves, oldest first (`models.history_entry`); the last entry is where the channel points now.
The local store keeps each move as

    {"image_id": "web-...", "from": "web-..." | None, "at": "2026-11-26T10:00:00Z",
     "user": "alice", "action": "promote" | "revoke", "reason": "..."}

`image_id` None means the channel points at nothing (its last valid image was revoked and
no earlier entry was still valid). Every move is appended, never rewritten, so the entry
before the current one is the exact image the channel pointed at before.

The registries (local store, AWS) apply these rules to their own storage: the channel-name
check, the rollback target and the cleaning of revocation reasons live only here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import ConfigError

CHANNEL_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")

Entry = dict[str, Any]
History = Sequence[Entry]


def check_channel(name: str) -> str:
    """The channel name, or ConfigError if it is not `[a-z][a-z0-9-]{0,31}`."""
    if not isinstance(name, str) or not CHANNEL_RE.fullmatch(name):
        raise ConfigError(f"bad channel name {name!r}: a lowercase letter, then up to 31 of a-z, 0-9 and '-'")
    return name


def timestamp(now: datetime) -> str:
    """UTC, second precision, `Z` suffix: how the catalog writes times."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def current(history: History) -> str | None:
    """The image id the channel points at now (None: nothing)."""
    if not history:
        return None
    image_id = history[-1].get("image_id")
    return str(image_id) if image_id else None


def previous(history: History) -> Entry | None:
    """The entry before the current one: where the channel pointed before its last move."""
    return dict(history[-2]) if len(history) >= 2 else None


def promote_entry(history: History, image_id: str, user: str, now: datetime) -> Entry | None:
    """The move that points the channel at `image_id`; None if it already does.

    The caller has checked that the image is promotable (validated, not revoked).
    """
    was = current(history)
    if was == image_id:
        return None
    return {"image_id": image_id, "from": was, "at": timestamp(now), "user": user, "action": "promote"}


def fallback_entry(
    history: History,
    revoked_id: str,
    is_valid: Callable[[str], bool],
    user: str,
    now: datetime,
    reason: str,
) -> Entry | None:
    """If the channel points at `revoked_id`, the move back to the newest earlier entry of
    its history that is still valid (or to nothing); None if the channel is elsewhere."""
    if current(history) != revoked_id:
        return None
    target: str | None = None
    for entry in reversed(history[:-1]):
        cand = entry.get("image_id")
        if cand and cand != revoked_id and is_valid(str(cand)):
            target = str(cand)
            break
    return {
        "image_id": target,
        "from": revoked_id,
        "at": timestamp(now),
        "user": user,
        "action": "revoke",
        "reason": reason,
    }


def rollback_target(history: History) -> str | None:
    """The validated image the channel pointed at before its current one: the newest
    earlier entry (`models.history_entry`, with its image's `status`) that is validated."""
    now = current(history)
    for entry in reversed(history[:-1]):
        cand = entry.get("image_id")
        if cand and cand != now and entry.get("status") == "validated":
            return str(cand)
    return None


def clean_reason(reason: str) -> str:
    """A revocation reason on one line; ConfigError if empty."""
    text = " ".join((reason or "").split())
    if not text:
        raise ConfigError("a revocation needs a reason (--reason TEXT)")
    return text

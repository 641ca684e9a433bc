"""The image model every target shares: records, statuses, tag names, the registry protocol.

Pure: no I/O. The local store (`store.LocalStore`) and the AWS registry
(`aws.registry.AwsRegistry`) implement `Registry`; the channel rules they apply to their
own storage are in `channels`.

A channel's history is a list of `HistoryEntry` dicts, oldest first, of the same shape on
every target (see README, "JSON documents"):

    {"version": 1, "at": "2026-11-26T10:00:00Z", "image_id": "web-..." | None,
     "from": "web-..." | None, "action": "promote" | "revoke", "user": "alice" | None,
     "reason": "..." | None, "status": "validated" | ... | None}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

VALIDATED, QUARANTINED, REVOKED = "validated", "quarantined", "revoked"
STATUSES = (VALIDATED, QUARANTINED, REVOKED)
CORRUPT = "corrupt"  # a local image whose artifact no longer matches its manifest's sha256
BUILDING = "building"  # an AMI Packer made that no lookup, promotion or channel accepts yet

# AMI tags: the registry writes them, lookups filter on them, the rotator reads them
TAG = "goldenimage:"
NAME_TAG = TAG + "name"
FINGERPRINT_TAG = TAG + "fingerprint"
STATUS_TAG = TAG + "status"
BASE_AMI_TAG = TAG + "base-ami"
CREATED_TAG = TAG + "created"
GIT_COMMIT_TAG = TAG + "git-commit"
ENV_TAG = TAG + "env"
LOCAL_ID_TAG = TAG + "local-id"
PARENT_ID_TAG = TAG + "parent-id"  # image families: the parent AMI a child was built on
PARENT_NAME_TAG = TAG + "parent-name"
PARENT_FINGERPRINT_TAG = TAG + "parent-fingerprint"
REVOKED_REASON_TAG = TAG + "revoked-reason"
REVOKED_AT_TAG = TAG + "revoked-at"
# auto-scaling group tags the rotator leaves behind (rotation.state); gc protects these AMIs
PREVIOUS_IMAGE_TAG = TAG + "previous-image"
CURRENT_IMAGE_TAG = TAG + "current-image"
# ... and the launch-template versions of those images (`rollback` pins the previous one)
PREVIOUS_VERSION_TAG = TAG + "previous-version"
CURRENT_VERSION_TAG = TAG + "current-version"
ROTATION_STATE_PREFIX = TAG + "rotation-"  # an unfinished rotation's state (rotation.state)
# how the rotator describes the launch-template versions it makes: gc finds its leftovers by it
ROTATION_VERSION_DESCRIPTION = "goldenimage rotation "
BUILD_TAG = TAG + "build"  # Packer's run_tags on the build instance (packer/sources.pkr.hcl)

HISTORY_KEYS = ("version", "at", "image_id", "from", "action", "user", "reason", "status")

ChannelHistory = list[dict[str, Any]]


def history_entry(version: int, *, at: str, image_id: str | None, previous: str | None, action: str,
                  user: str | None, reason: str | None, status: str | None) -> dict[str, Any]:
    """One move of a channel, in the shape both registries return."""
    return {"version": version, "at": at, "image_id": image_id, "from": previous, "action": action,
            "user": user, "reason": reason, "status": status}


@dataclass(frozen=True)
class ImageRecord:
    """What a registry knows of one image (the full story is its manifest)."""

    id: str
    name: str
    env: str
    fingerprint: str
    created: str
    status: str
    artifact: str
    channels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "env": self.env,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "status": self.status,
            "artifact": self.artifact,
            "channels": list(self.channels),
            **self.extra,
        }


def newest_validated(records: Iterable[ImageRecord]) -> ImageRecord | None:
    """The newest validated image among `records` (by creation time, then id)."""
    usable = [r for r in records if r.status == VALIDATED]
    return max(usable, key=lambda r: (r.created, r.id)) if usable else None


class Registry(Protocol):
    """What every image registry (local store, AWS) offers."""

    def put(self, record: ImageRecord, manifest: dict[str, Any], files: Path) -> ImageRecord: ...

    def get(self, image_id: str) -> ImageRecord: ...

    def list(self, name: str | None = None) -> list[ImageRecord]: ...

    def find_by_fingerprint(self, name: str, fingerprint: str) -> ImageRecord | None: ...

    def manifest(self, image_id: str) -> dict[str, Any]: ...

    def promote(self, image_id: str, channel: str) -> dict[str, Any]:
        """Point `channel` of the image's name at a validated, non-revoked image.

        Result: image, channel, image_id, previous (the id it pointed at before), changed.
        """
        ...

    def revoke(self, image_id: str, reason: str) -> dict[str, Any]:
        """Mark an image revoked for good; each channel on it falls back to its newest
        earlier valid image. Result: image_id, image, reason, previous_status,
        channels_moved ({channel: image id}), channels_left (channels with nothing valid
        to fall back to)."""
        ...

    def history(self, name: str, channel: str) -> ChannelHistory:
        """The channel's moves, oldest first (`history_entry` shape)."""
        ...

    def rollback_target(self, name: str, channel: str) -> str | None:
        """The validated image the channel pointed at before its current one."""
        ...

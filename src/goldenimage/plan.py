"""The bake's decision, pure: skip to a validated image with the fingerprint, or build.

The bake pipeline (`bake.run`) computes the fingerprint and asks the target's registry for
a validated image with it; `plan` decides, with the reason, and the pipeline applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .models import ImageRecord


@dataclass(frozen=True)
class Plan:
    """What a bake will do, and why."""

    action: Literal["skip", "build"]
    reason: str
    image: ImageRecord | None = None


def plan(name: str, fp: str, hit: ImageRecord | None, force: bool, refused: Sequence[str] = ()) -> Plan:
    """Skip to `hit` (a validated image with fingerprint `fp` whose bytes are intact) unless
    forced; else build. `refused`: why other images with `fp` may not be skipped to."""
    if force:
        return Plan("build", "--force: rebuild even if a validated image has the fingerprint")
    if hit is None:
        why = f"no validated {name} image has fingerprint {fp[:12]}"
        if refused:
            why = f"no usable validated {name} image has fingerprint {fp[:12]}: {'; '.join(refused)}"
        return Plan("build", why)
    return Plan("skip", f"up to date: {hit.id}", hit)

"""EC2 deregistration protection of the toolkit's AMIs: on with promotion, off only through gc.

An AMI promoted to a channel gets deregistration protection with cooldown
(`EnableImageDeregistrationProtection WithCooldown=True`) on every copy in every region
before the channel points at it, so no one (the toolkit included) can deregister an image
that a channel names. gc takes it off at its `disable` stage
(`DisableImageDeregistrationProtection`), for an image nothing uses any more; with
cooldown AWS keeps refusing the deregistration for 24 hours after that, so gc's `delete`
stage waits: it reports the AMI as `waiting` with the time it becomes deletable, never as
a failure. `gc --restore` puts the protection back where gc took it off.

AWS reports the state in DescribeImages (`DeregistrationProtection`: `disabled`,
`enabled`, `enabled-with-cooldown`, or `disabled-until <time>` during a cooldown). The
toolkit records what it did in the AMI's tag `goldenimage:deregistration-protection` (the
same words), which gc --restore reads, and which stands for the state where the endpoint
does not report it. moto (the sandbox) has neither call: there the state is only recorded
in the tag (as the deprecation stage is), and nothing is enforced.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from ..models import TAG
from .clients import Clients

PROTECTION_TAG = TAG + "deregistration-protection"
ENABLED = "enabled-with-cooldown"
COOLDOWN = timedelta(hours=24)  # WithCooldown: deregistration refused this long after disabling
_UNTIL = re.compile(r"disabled-until\s+(\S+)")
SKIPPED = "recorded only: the sandbox API (moto) has no EnableImageDeregistrationProtection"


def protection_api(clients: Clients) -> bool:
    """Whether the endpoint serves the two calls (real AWS does; moto 5.2.5 does not)."""
    return not clients.ctx.is_sandbox


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _tags(img: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in img.get("Tags", [])}


def state(img: dict[str, Any]) -> str:
    """The AMI's protection as AWS reports it, else as the toolkit recorded it: `disabled`,
    `enabled`, `enabled-with-cooldown` or `disabled-until <time>`."""
    reported = str(img.get("DeregistrationProtection") or "")
    recorded = _tags(img).get(PROTECTION_TAG, "")
    if reported:
        if reported.startswith("disabled") and _UNTIL.match(recorded) and not _UNTIL.match(reported):
            return recorded  # AWS said `disabled`; our record still knows the cooldown's end
        return reported
    return recorded or "disabled"


def protected(img: dict[str, Any]) -> bool:
    return state(img).startswith("enabled")


def deletable_at(img: dict[str, Any]) -> datetime | None:
    """When a cooldown that is running ends (None: no cooldown recorded or reported)."""
    ends = [t for text in (str(img.get("DeregistrationProtection") or ""), _tags(img).get(PROTECTION_TAG, ""))
            if (m := _UNTIL.match(text)) and (t := _time(m[1])) is not None]
    return max(ends) if ends else None


def protect(clients: Clients, ami: str) -> str:
    """Turn protection with cooldown on (idempotent); what was done."""
    if protection_api(clients):
        clients.ec2.enable_image_deregistration_protection(ImageId=ami, WithCooldown=True)
    clients.ec2.create_tags(Resources=[ami], Tags=[{"Key": PROTECTION_TAG, "Value": ENABLED}])
    return ENABLED if protection_api(clients) else f"{ENABLED} ({SKIPPED})"


def unprotect(clients: Clients, img: dict[str, Any], now: datetime) -> datetime | None:
    """Turn the AMI's protection off (`img`: as just described); when the deregistration
    becomes possible (None: it was not protected, nothing was done). With cooldown that is
    24 hours from now; the time is recorded in the tag."""
    was = state(img)
    if not was.startswith("enabled"):
        return None
    if protection_api(clients):
        clients.ec2.disable_image_deregistration_protection(ImageId=img["ImageId"])
    until = now + COOLDOWN if was == ENABLED else now
    clients.ec2.create_tags(Resources=[img["ImageId"]],
                            Tags=[{"Key": PROTECTION_TAG, "Value": f"disabled-until {stamp(until)}"}])
    return until


def reprotect(clients: Clients, img: dict[str, Any]) -> bool:
    """`gc --restore`: protection back on where gc took it off (the tag says so)."""
    if not _UNTIL.match(_tags(img).get(PROTECTION_TAG, "")):
        return False
    protect(clients, img["ImageId"])
    return True


def blocked(img: dict[str, Any], now: datetime) -> str | None:
    """Why the AMI cannot be deregistered at `now` (None: it can): still protected, or in
    its cooldown until a time."""
    if protected(img):
        return f"deregistration protection is {state(img)}"
    until = deletable_at(img)
    if until is not None and until > now:
        return f"deregistration protection cooldown: deletable from {stamp(until)}"
    return None

"""Carrying out `invoke gc --apply` on AMIs, per region for every copy of an image.

deprecate (`EnableImageDeprecation`, a DeprecateAt just ahead; moto lacks it, so the
sandbox only records the stage) -> disable (`DisableImage`: reversible, unlaunchable) ->
deregister, with only that AMI's own snapshots: a snapshot that any other AMI of the
region (disabled ones too) maps is never deleted. The stage and when it was reached are
recorded in the AMI's tags (`goldenimage:gc-stage`, `goldenimage:gc-stage-at`), which the
planner reads. `disable` also takes the AMI's deregistration protection off (`aws.protection`:
a promoted AMI has it; with its cooldown the AMI can be deregistered 24 h later), and
`restore` takes a deprecate/disable stage back in every region, protection included.

The caller looks again at the uses right before each step (`AwsSide.gc_recheck`, `gc_apply`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from .. import retention
from ..models import TAG
from . import protection
from .clients import Clients

GC_STAGE_TAG, GC_STAGE_AT_TAG = TAG + "gc-stage", TAG + "gc-stage-at"
DEPRECATE_AHEAD = timedelta(minutes=5)  # DeprecateAt must lie in the future (AWS rounds to the minute)


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image(clients: Clients, ami: str) -> dict[str, Any] | None:
    """The AMI as DescribeImages shows it (disabled too); None when it is gone."""
    try:
        imgs = clients.ec2.describe_images(ImageIds=[ami], IncludeDisabled=True).get("Images", [])
    except ClientError as exc:  # real AWS answers an unknown id with an error, moto with nothing
        if exc.response.get("Error", {}).get("Code", "").startswith("InvalidAMIID"):
            return None
        raise
    return imgs[0] if imgs else None


def _tag_stage(clients: Clients, ami: str, stage: str, now: datetime) -> None:
    clients.ec2.create_tags(Resources=[ami], Tags=[{"Key": GC_STAGE_TAG, "Value": stage},
                                                   {"Key": GC_STAGE_AT_TAG, "Value": _stamp(now)}])


def deprecate(clients: Clients, ami: str, now: datetime) -> None:
    """Deprecated: still launchable, marked as going. The sandbox (moto) has no
    EnableImageDeprecation: there the stage is only recorded."""
    if not clients.ctx.is_sandbox:
        at = max(now, datetime.now(UTC)) + DEPRECATE_AHEAD
        clients.ec2.enable_image_deprecation(ImageId=ami, DeprecateAt=at)
    _tag_stage(clients, ami, retention.DEPRECATED, now)


def disable(clients: Clients, ami: str, now: datetime, before: dict[str, str] | None = None) -> None:
    """Disabled: no one can launch it; `restore` enables it again. The stage is recorded
    first, so a disabled AMI always says since when; if disabling fails, the stage it had
    is written back (an AMI tagged disabled that is not would be deleted too early).
    `before`: the AMI's tags as just described (else described now)."""
    if before is None:
        before = {t["Key"]: t["Value"] for t in (image(clients, ami) or {}).get("Tags", [])}
    _tag_stage(clients, ami, retention.DISABLED, now)
    try:
        clients.ec2.disable_image(ImageId=ami)
    except Exception:
        old = [{"Key": k, "Value": before[k]} for k in (GC_STAGE_TAG, GC_STAGE_AT_TAG) if k in before]
        gone = [{"Key": k} for k in (GC_STAGE_TAG, GC_STAGE_AT_TAG) if k not in before]
        if old:
            clients.ec2.create_tags(Resources=[ami], Tags=old)
        if gone:
            clients.ec2.delete_tags(Resources=[ami], Tags=gone)
        raise


def snapshot_map(clients: Clients) -> dict[str, set[str]]:
    """{AMI: the snapshots it maps} over every AMI the account owns in the region (disabled
    ones too), page by page."""
    out: dict[str, set[str]] = {}
    for page in clients.ec2.get_paginator("describe_images").paginate(Owners=["self"], IncludeDisabled=True):
        for img in page.get("Images", []):
            out[img["ImageId"]] = {m["Ebs"]["SnapshotId"] for m in img.get("BlockDeviceMappings", [])
                                   if m.get("Ebs", {}).get("SnapshotId")}
    return out


def own_snapshots(clients: Clients, ami: str, mapping: dict[str, set[str]] | None = None,
                  ) -> tuple[list[str], list[str]]:
    """(the AMI's snapshots no other AMI of the region maps, the ones another AMI maps),
    from every AMI the account owns there (`mapping`: `snapshot_map` of a batch's look,
    else listed now)."""
    mapping = snapshot_map(clients) if mapping is None else mapping
    mine = set(mapping.get(ami, set()))
    others: set[str] = set()
    for other, snaps in mapping.items():
        if other != ami:
            others |= snaps
    return sorted(mine - others), sorted(mine & others)


def deregister(clients: Clients, ami: str, mapping: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """Deregister the AMI and delete its own snapshots, never one another AMI maps. Real
    AWS deletes them with the deregistration (`DeleteAssociatedSnapshots`) when none is
    shared (and never one another AMI uses, whatever was registered since `mapping`);
    otherwise (or on the sandbox) they are deleted one by one afterwards."""
    own, shared = own_snapshots(clients, ami, mapping)
    if not clients.ctx.is_sandbox and not shared:
        clients.ec2.deregister_image(ImageId=ami, DeleteAssociatedSnapshots=True)
    else:
        clients.ec2.deregister_image(ImageId=ami)
        for snap in own:
            clients.ec2.delete_snapshot(SnapshotId=snap)
    if mapping is not None:
        mapping.pop(ami, None)  # the batch's next delete no longer counts its snapshots as another's
    return {"snapshots": own, "kept_shared": shared}


def restore(clients: Clients, ami: str) -> dict[str, str] | None:
    """Take back the AMI's deprecate/disable stage; the stage it had and since when (None:
    none)."""
    img = image(clients, ami)
    if img is None:
        return None
    tags = {t["Key"]: t["Value"] for t in img.get("Tags", [])}
    stage = retention.DISABLED if img.get("State") == "disabled" else tags.get(GC_STAGE_TAG) or None
    if img.get("State") == "disabled":
        clients.ec2.enable_image(ImageId=ami)
    protection.reprotect(clients, img)  # the deregistration protection gc took off at `disable`
    revoked = bool(tags.get(TAG + "revoked-reason"))  # a revocation's deprecation stays
    if stage and not revoked and not clients.ctx.is_sandbox and img.get("DeprecationTime"):
        clients.ec2.disable_image_deprecation(ImageId=ami)
    if GC_STAGE_TAG in tags or GC_STAGE_AT_TAG in tags:
        clients.ec2.delete_tags(Resources=[ami], Tags=[{"Key": GC_STAGE_TAG}, {"Key": GC_STAGE_AT_TAG}])
    return {"stage": stage, "at": tags.get(GC_STAGE_AT_TAG, "?")} if stage else None

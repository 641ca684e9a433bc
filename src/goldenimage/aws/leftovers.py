"""What the toolkit itself can leave behind in a region, found for `invoke gc` and removed
one by one by `invoke gc --apply`.

- A validation killed outright (aws/validate.py): its instance, key pair and security
  group, each tagged `goldenimage:validation=<token>` (and, since this module, with the
  AMI it validated and when the run started).
- An amazon-ebs build killed outright: Packer's build instance (its `run_tags` carry
  `goldenimage:build=<local image id>`, packer/sources.pkr.hcl) and the temporary key pair
  and security group Packer names `packer_*`. Packer 1.6 does not tag those two, so they
  count as ours only while one of our build instances uses them (or if tagged
  `goldenimage:build`): someone else's `packer_*` resources are never candidates.
- Launch-template versions the rotator made (described `goldenimage rotation <id>: <ami>`,
  rotation/lifecycle.py) that nothing uses: not the default or the latest version, no
  group, mixed-instances override or instance names it, it is no group's current or
  rollback version, and no unfinished rotation (its state in the group's tags, running or
  resumable) made or started from it.

Only facts are gathered here (`retention.Leftover`: what it is, when it was made, who uses
it); the pure planner decides with the grace `extra.retention.leftover_hours`. Everything
comes from the run's one `references.Listing` (instances, templates and groups are listed
once for the references and the leftovers), plus one key-pair listing and two filtered
security-group listings.

AMIs stuck in `building` (a bake killed after Packer made them) are images, not leftovers:
the planner moves them through their own (short) stages (`ImageRetention.building`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped, unused-ignore]

from .. import retention
from ..errors import OperationFailed
from ..models import (
    BUILD_TAG,
    CREATED_TAG,
    CURRENT_VERSION_TAG,
    PREVIOUS_VERSION_TAG,
    ROTATION_STATE_PREFIX,
    ROTATION_VERSION_DESCRIPTION,
)
from .clients import Clients
from .errors import error_code
from .references import Listing, _pages
from .validate import VALIDATION_IMAGE_TAG, VALIDATION_TAG

PACKER_PREFIX = "packer_"  # Packer's temporary key pairs and security groups
VALIDATION_INSTANCE, BUILD_INSTANCE = "validation instance", "build instance"
VALIDATION_KEY, BUILD_KEY = "validation key pair", "build key pair"
VALIDATION_GROUP, BUILD_GROUP = "validation security group", "build security group"
ROTATION_VERSION = "rotation launch-template version"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LT_TAG_ID, LT_TAG_VERSION = "aws:ec2launchtemplate:id", "aws:ec2launchtemplate:version"


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in item.get("Tags", [])}


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return retention.parse_time(str(value)) if value else None


def _first_launch(users: list[dict[str, Any]]) -> datetime | None:
    return min((t for t in (_time(u.get("LaunchTime")) for u in users) if t is not None), default=None)


def _made(tags: dict[str, str], fallback: Any) -> datetime | None:
    """When a run started (our `created` tag), else the resource's own creation time."""
    return retention.parse_time(tags.get(CREATED_TAG)) or _time(fallback)


def instances(listing: Listing) -> list[retention.Leftover]:
    """Live instances of a validation or a build (the validation's start, else launch time)."""
    out = []
    for inst in listing.instances:
        tags, iid = _tags(inst), inst["InstanceId"]
        state = inst.get("State", {}).get("Name", "?")
        if VALIDATION_TAG in tags:
            image = tags.get(VALIDATION_IMAGE_TAG) or inst.get("ImageId", "?")
            kind, what = VALIDATION_INSTANCE, f"validation instance {iid} ({state}) of {image}"
        elif BUILD_TAG in tags:
            kind, what = BUILD_INSTANCE, f"build instance {iid} ({state}) of {tags[BUILD_TAG] or '?'}"
        else:
            continue
        made = _made(tags, inst.get("LaunchTime"))
        if made is not None:
            out.append(retention.Leftover(iid, kind, made, what=what, hours=True))
    return out


def _build_instances(listing: Listing) -> dict[str, dict[str, Any]]:
    return {i["InstanceId"]: i for i in listing.instances if BUILD_TAG in _tags(i)}


def key_pairs(clients: Clients, listing: Listing, claimed: str = "") -> list[retention.Leftover]:
    """Validation key pairs (tagged) and Packer's `packer_*` ones of our builds (`claimed`:
    one the plan found ours while its build instance lived: the re-check before removal)."""
    builds = _build_instances(listing)
    out = []
    for kp in clients.ec2.describe_key_pairs().get("KeyPairs", []):  # DescribeKeyPairs is not paginated
        name, tags = kp["KeyName"], _tags(kp)
        users = [i for i in listing.instances if i.get("KeyName") == name]
        if VALIDATION_TAG in tags:
            kind, what = VALIDATION_KEY, f"validation key pair {name}"
        elif name.startswith(PACKER_PREFIX) and (
                BUILD_TAG in tags or name == claimed or any(u["InstanceId"] in builds for u in users)):
            kind, what = BUILD_KEY, f"build key pair {name}"
        else:
            continue
        made = _made(tags, kp.get("CreateTime")) or _first_launch(users)
        if made is not None:
            out.append(retention.Leftover(name, kind, made, what=what, hours=True, order=1,
                                          users=tuple(sorted(u["InstanceId"] for u in users))))
    return out


def security_groups(clients: Clients, listing: Listing, claimed: str = "") -> list[retention.Leftover]:
    """Validation security groups (tagged) and Packer's `packer_*` ones of our builds
    (`claimed`: as for key pairs). A group says not when it was made: the validation's tag,
    else its oldest user's launch (a claimed one without users: the epoch, it was old)."""
    builds = _build_instances(listing)
    found: dict[str, dict[str, Any]] = {}
    for flt in ({"Name": "tag-key", "Values": [VALIDATION_TAG]}, {"Name": "group-name", "Values": [PACKER_PREFIX + "*"]}):
        for g in _pages(clients.ec2, "describe_security_groups", "SecurityGroups", Filters=[flt]):
            found[g["GroupId"]] = g
    out = []
    for gid, g in sorted(found.items()):
        tags = _tags(g)
        users = [i for i in listing.instances if gid in {s.get("GroupId") for s in i.get("SecurityGroups", [])}]
        if VALIDATION_TAG in tags:
            kind, what = VALIDATION_GROUP, f"validation security group {gid} ({g.get('GroupName', '')})"
        elif g.get("GroupName", "").startswith(PACKER_PREFIX) and (
                BUILD_TAG in tags or gid == claimed or any(u["InstanceId"] in builds for u in users)):
            kind, what = BUILD_GROUP, f"build security group {gid} ({g['GroupName']})"
        else:
            continue
        made = _made(tags, None) or _first_launch(users) or (EPOCH if gid == claimed else None)
        if made is not None:
            out.append(retention.Leftover(gid, kind, made, what=what, hours=True, order=1,
                                          users=tuple(sorted(u["InstanceId"] for u in users))))
    return out


def _version(spec: dict[str, Any], lt: dict[str, Any]) -> int | None:
    """The version of `lt` a launch-template specification resolves to (None: another template)."""
    if spec.get("LaunchTemplateId") not in (None, lt["LaunchTemplateId"]) or (
            spec.get("LaunchTemplateName") not in (None, lt.get("LaunchTemplateName"))):
        return None
    if not (spec.get("LaunchTemplateId") or spec.get("LaunchTemplateName")):
        return None
    v = str(spec.get("Version") or "$Default")
    if v == "$Latest":
        return int(lt.get("LatestVersionNumber", 0))
    if v == "$Default":
        return int(lt.get("DefaultVersionNumber", 0))
    return int(v) if v.isdigit() else None


def version_uses(lt: dict[str, Any], versions: list[dict[str, Any]], listing: Listing) -> dict[int, str]:
    """{version number: the first thing found that uses it} for one launch template."""
    uses: dict[int, str] = {}

    def use(n: int | None, why: str) -> None:
        if n is not None:
            uses.setdefault(n, why)

    use(lt.get("DefaultVersionNumber"), "the default version")
    use(lt.get("LatestVersionNumber"), "the latest version")
    for g in listing.groups:
        name = g["AutoScalingGroupName"]
        own = g.get("LaunchTemplate") or {}
        mixed = g.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
        specs = [own, mixed.get("LaunchTemplateSpecification") or {}]
        specs += [o.get("LaunchTemplateSpecification") or {} for o in mixed.get("Overrides", [])]
        for spec in specs:
            use(_version(spec, lt), f"used by asg {name}" + (" (mixed instances)" if spec is not own else ""))
        for inst in g.get("Instances", []):
            use(_version(inst.get("LaunchTemplate") or {}, lt), f"instance {inst['InstanceId']} of asg {name} runs it")
        if _version(own, lt) is None:
            continue  # the rotator's tags below speak of the group's own template
        tags = _tags(g)
        for key, why in ((CURRENT_VERSION_TAG, "current"), (PREVIOUS_VERSION_TAG, "rollback")):
            if tags.get(key, "").isdigit():
                use(int(tags[key]), f"the {why} version of asg {name}")
        rid = tags.get(ROTATION_STATE_PREFIX + "id")
        if rid:
            why = f"rotation {rid} of asg {name} is unfinished ({tags.get(ROTATION_STATE_PREFIX + 'status') or '?'})"
            for key in ("from-version", "to-version"):
                if tags.get(ROTATION_STATE_PREFIX + key, "").isdigit():
                    use(int(tags[ROTATION_STATE_PREFIX + key]), why)
            for v in versions:  # made by it, even before it recorded the version
                if str(v.get("VersionDescription", "")).startswith(f"{ROTATION_VERSION_DESCRIPTION}{rid}:"):
                    use(int(v["VersionNumber"]), why)
    for inst in listing.instances:
        tags = _tags(inst)
        if tags.get(LT_TAG_ID) == lt["LaunchTemplateId"] and tags.get(LT_TAG_VERSION, "").isdigit():
            use(int(tags[LT_TAG_VERSION]), f"instance {inst['InstanceId']} runs it")
    return uses


def template_versions(listing: Listing) -> list[retention.Leftover]:
    """The versions the rotator made, each with what uses it (if anything)."""
    out = []
    for lt, versions in listing.templates:
        lt_id, lt_name = lt["LaunchTemplateId"], lt.get("LaunchTemplateName", "")
        uses = version_uses(lt, versions, listing)
        for v in versions:
            desc = str(v.get("VersionDescription", ""))
            made = _time(v.get("CreateTime"))
            if not desc.startswith(ROTATION_VERSION_DESCRIPTION) or made is None:
                continue
            n = int(v["VersionNumber"])
            rid = desc[len(ROTATION_VERSION_DESCRIPTION):].split(":")[0]
            out.append(retention.Leftover(
                version_id(lt_id, n), ROTATION_VERSION, made, hours=True, in_use=uses.get(n, ""),
                what=f"{lt_id} v{n} ({lt_name}, {v.get('LaunchTemplateData', {}).get('ImageId', '?')}) "
                     f"made by rotation {rid}"))
    return out


def version_id(lt_id: str, n: int) -> str:
    """How the plan names a launch-template version: `lt-0abc v3` (as the references do)."""
    return f"{lt_id} v{n}"


def gather(clients: Clients, listing: Listing) -> list[retention.Leftover]:
    """Every leftover of the region, from the run's listing."""
    return [*instances(listing), *template_versions(listing), *key_pairs(clients, listing),
            *security_groups(clients, listing)]


# -- removal (invoke gc --apply) -------------------------------------------------------------

def _fresh(clients: Clients, kind: str, ident: str) -> retention.Leftover | None:
    """The leftover as it is now (gathered afresh, only its kind); None: gone, or no longer ours."""
    if kind == ROTATION_VERSION:
        listing = Listing(clients, template_ids=[ident.split(" v")[0]])
        found = template_versions(listing)
    else:
        listing = Listing(clients)
        gatherers: dict[str, Callable[[], list[retention.Leftover]]] = {
            VALIDATION_INSTANCE: lambda: instances(listing), BUILD_INSTANCE: lambda: instances(listing),
            VALIDATION_KEY: lambda: key_pairs(clients, listing), BUILD_KEY: lambda: key_pairs(clients, listing, ident),
            VALIDATION_GROUP: lambda: security_groups(clients, listing),
            BUILD_GROUP: lambda: security_groups(clients, listing, ident)}
        if kind not in gatherers:
            raise ValueError(f"not an AWS leftover: {kind}")
        found = gatherers[kind]()
    return next((lo for lo in found if lo.id == ident and lo.kind == kind), None)


def remove(clients: Clients, decision: retention.Decision) -> dict[str, Any]:
    """Remove one leftover the plan decided to delete, after gathering it again: one gone or
    no longer ours since the plan, now in use, or still used by a live instance is skipped
    (its age only grew since the plan). An instance is waited for until terminated, so that
    the key pair and security group it used can go next."""
    kind, ident = decision.name, decision.image_id
    try:
        lo = _fresh(clients, kind, ident)
        if lo is None:
            return {"done": False, "skipped": f"{kind} {ident} is gone or no longer ours since the plan"}
        if lo.in_use:
            return {"done": False, "skipped": f"in use now: {lo.in_use}"}
        if lo.users:
            return {"done": False, "skipped": f"used now by {', '.join(lo.users)}"}
        ec2 = clients.ec2
        if kind in (VALIDATION_INSTANCE, BUILD_INSTANCE):
            ec2.terminate_instances(InstanceIds=[ident])
            ec2.get_waiter("instance_terminated").wait(InstanceIds=[ident], WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        elif kind in (VALIDATION_KEY, BUILD_KEY):
            ec2.delete_key_pair(KeyName=ident)
        elif kind in (VALIDATION_GROUP, BUILD_GROUP):
            ec2.delete_security_group(GroupId=ident)
        else:
            lt_id, _, n = ident.rpartition(" v")
            out = ec2.delete_launch_template_versions(LaunchTemplateId=lt_id, Versions=[n])
            failed = out.get("UnsuccessfullyDeletedLaunchTemplateVersions", [])
            if failed:
                err = failed[0].get("ResponseError", {})
                raise OperationFailed(f"delete {ident}: {err.get('Code', '?')}: {err.get('Message', '')}")
    except ClientError as exc:
        if error_code(exc) == "DependencyViolation":  # e.g. a network interface still holds the group
            return {"done": False, "skipped": f"still in use: {exc}"}
        raise OperationFailed(f"delete {kind} {ident}: {exc}") from exc
    except BotoCoreError as exc:  # e.g. the instance did not terminate in time
        raise OperationFailed(f"delete {kind} {ident}: {exc}") from exc
    return {"done": True}

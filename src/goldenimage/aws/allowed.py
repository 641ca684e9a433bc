"""`invoke allowed-amis`: EC2 "Allowed AMIs" criteria that admit the images this toolkit makes.

Allowed AMIs is an account setting per region: with it `enabled`, instances can be launched
(and AMIs discovered) only from AMIs matching one of its criteria; in `audit-mode` nothing is
refused, and `DescribeImages` / `DescribeInstanceImageMetadata` say (`ImageAllowed`) which
AMIs would be. This command prints the criteria -- the JSON that `aws ec2
replace-image-criteria-in-allowed-images-settings --cli-input-json` takes -- and the
commands to apply them in audit mode first, for an organisation to review and apply. It
changes nothing itself.

Each criterion admits (all of): AMIs owned by the account that owns the environment's AMIs
(`ImageProviders`), named as this target names the AMIs of the environment's images
(`ImageNames`, EC2's `?`/`*` wildcards over the image id's shape), created at most
`extra.retention.images.<name>.max_age_days` ago where set (`CreationDateCondition`), and
deprecated at most `disable_after` days ago (`DeprecationTimeCondition`: gc deprecates an
unused AMI that long before it disables it; an image without a retention policy is
deprecated only by `revoke`, so 0 days: a revoked AMI is refused at once). Image names
with the same conditions share a criterion (EC2: 50 names per criterion, 10 criteria).

EC2 cannot select by tag, so a quarantined or building AMI of the same name pattern is
admitted too: its status tag (which no toolkit lookup accepts) still keeps it off channels.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..progress import Reporter
from ..retention import parse_time
from ..sections import ImageRetention
from ..settings import load_environment
from .errors import aws_errors

MAX_NAMES, MAX_CRITERIA = 50, 10  # EC2: ImageNames per criterion, criteria per region
CRITERIA_FILE = "allowed-amis.json"


def criteria(account: str, patterns: dict[str, str], policies: dict[str, ImageRetention]) -> list[dict[str, Any]]:
    """The ImageCriteria (pure): {image name: AMI name pattern}, the retention policies."""
    groups: dict[tuple[int | None, int], list[str]] = {}
    for name in sorted(patterns):
        policy = policies.get(name)
        key = (policy.max_age_days, policy.disable_after) if policy else (None, 0)
        groups.setdefault(key, []).append(patterns[name])
    out: list[dict[str, Any]] = []
    for (max_age, deprecated), names in sorted(groups.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
        for i in range(0, len(names), MAX_NAMES):
            one: dict[str, Any] = {"ImageProviders": [account], "ImageNames": names[i:i + MAX_NAMES]}
            if max_age is not None:
                one["CreationDateCondition"] = {"MaximumDaysSinceCreated": max_age}
            one["DeprecationTimeCondition"] = {"MaximumDaysSinceDeprecated": deprecated}
            out.append(one)
    if len(out) > MAX_CRITERIA:
        raise ConfigError(f"allowed-amis: {len(out)} criteria, EC2 takes at most {MAX_CRITERIA} per region "
                          "(give more images the same max_age_days and disable_after)")
    return out


def allowed_amis(env_name: str, reporter: Reporter, *, root: Path | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    from ..targets import target_for

    env = load_environment(env_name, root)
    target = target_for(env)
    patterns = {name: target.ami_name_pattern(name) for name in sorted(env.settings.images)}
    reg = target.aws_registry()
    clients = reg.clients
    with aws_errors(clients):
        account = str(clients.sts.get_caller_identity()["Account"])
    policies = env.retention.images
    doc = {"ImageCriteria": criteria(account, patterns, policies)}
    regions = [clients.ctx.region, *reg.copy_regions]
    notes = [f"apply in every region the AMIs are launched in ({', '.join(regions)}); in an AWS "
             "Organization a declarative policy can set it for every account",
             "the build instance of `invoke bake` is launched from the base AMI (extra.aws.base_ami): these "
             "criteria do not admit it; keep bakes in an account without them, or add a criterion for it",
             "EC2 cannot select by tag: quarantined or building AMIs of these names are admitted too "
             "(no toolkit lookup, channel or rotation takes them)"]
    now = now or datetime.now(UTC)
    for name in sorted(env.settings.images):  # what is on a channel now and would not be admitted
        age = policies[name].max_age_days if name in policies else None
        if age is None:
            continue
        for rec in reg.list(name):
            created = parse_time(rec.created)
            if rec.channels and created is not None and (now - created).days > age:
                notes.append(f"{rec.id} ({name}, on {', '.join(rec.channels)}) is {(now - created).days} days "
                             f"old: older than max_age_days {age}, it would not be admitted")
    commands = []
    for region in regions:
        commands += [f"aws ec2 replace-image-criteria-in-allowed-images-settings --region {region} "
                     f"--cli-input-json file://{CRITERIA_FILE}",
                     f"aws ec2 enable-allowed-images-settings --region {region} "
                     "--allowed-images-settings-state audit-mode"]
    check = [f"aws ec2 describe-instance-image-metadata --region {region} "
             "--query 'InstanceImageMetadata[?ImageMetadata.ImageAllowed==`false`].[InstanceId,ImageMetadata.ImageId]'"
             for region in regions]
    enforce = [f"aws ec2 enable-allowed-images-settings --region {region} --allowed-images-settings-state enabled"
               for region in regions]
    return {"env": env.name, "target": target.name, "account": account, "regions": regions,
            "criteria": doc, "commands": commands, "audit": check, "enforce": enforce,
            "notes": notes}


def human_allowed(r: dict[str, Any]) -> list[str]:
    lines = [f"# EC2 Allowed AMIs for environment {r['env']} (account {r['account']}; nothing was changed)",
             f"# 1. save the criteria as {CRITERIA_FILE}:",
             *json.dumps(r["criteria"], indent=2).splitlines(),
             "# 2. apply them in audit mode first (nothing is refused yet):", *r["commands"],
             "# 3. see what would be refused:", *r["audit"],
             "# 4. then enforce:", *r["enforce"]]
    return lines + [f"# note: {n}" for n in r["notes"]]

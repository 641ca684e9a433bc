"""What uses an AMI in one region, gathered once per `invoke gc` run with paginators.

Each source is listed page by page, never one call per image: instances in any state but
terminated; every version of every launch template (all versions, not only the default and
latest); launch configurations; the launch templates of every group's mixed-instances
overrides (their versions are listed with the rest, and a template an override names is
reported even when no other source does); a group's rotation state (the images it ran before and
after the last rotation, in its tags); SSM parameters whose value is an AMI id (channels and any
other parameter), and older versions of a parameter still pinned: named as `name:N` or
`name:label` by a launch template, or carrying a label (their history is paged through).
A launch template that names a parameter (`resolve:ssm:`) counts for the AMI the parameter
(or the version it pins) holds: real AWS resolves it (`ResolveAlias`); where the answer
still names the parameter (moto), it is resolved here from the parameter's history. On
real AWS, `DescribeImageReferences` with full launch-template depth is asked as a second
opinion (`second_opinion`; moto lacks it, so never on the sandbox endpoint). An AMI shared
with other accounts, organisations, OUs or the public (its launch permissions, asked per AMI
the plan would change: `launch_permissions`; public is in DescribeImages already), or
through a RAM resource share (`ram_shares`, where the account's RAM answers), is a
reference of kind `shared`. The result is plain data (`retention.Reference`) for the pure
planner.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped, unused-ignore]

from ..models import CURRENT_IMAGE_TAG, PREVIOUS_IMAGE_TAG
from ..retention import SHARED, Reference
from .clients import Clients
from .errors import error_code

ROTATION_TAGS = {PREVIOUS_IMAGE_TAG: "previous image", CURRENT_IMAGE_TAG: "current image"}

AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]  # all but terminated
SSM_ALIAS = "resolve:ssm:"
LT_DEPTH = "10000"  # DescribeImageReferences' deepest launch-template look (its default is 10)
REFERENCE_BATCH = 10  # DescribeImageReferences takes at most 10 AMIs per request
LT_PAGE = 200  # DescribeLaunchTemplates / DescribeLaunchTemplateVersions: at most 200 per page
# moto (the sandbox) cuts these two listings at MaxResults (15 by default) and gives no
# NextToken: a template past the 15th, or a version past its template's 15th, would be
# missed, and an AMI only it uses collected. On the sandbox one page holds them all.
SANDBOX_LT_PAGE = 1_000_000


def _pages(client: Any, operation: str, key: str, **kw: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kw):
        yield from page.get(key, [])


class Listing:
    """The region's instances (all but terminated), launch templates with every version, and
    groups: each listed once per run, page by page, on first use, and kept, so that the
    references and the leftovers (`aws.leftovers`) are found from the same pages."""

    def __init__(self, clients: Clients, template_ids: list[str] | None = None) -> None:
        self.clients = clients
        self.template_ids = template_ids  # only these templates (a re-check of one)

    @cached_property
    def instances(self) -> list[dict[str, Any]]:
        filters = [{"Name": "instance-state-name", "Values": LIVE_STATES}]
        return [inst for r in _pages(self.clients.ec2, "describe_instances", "Reservations", Filters=filters)
                for inst in r.get("Instances", [])
                if inst.get("State", {}).get("Name", "") != "terminated"]

    @cached_property
    def templates(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """[(template, its versions)]: one paginated listing of versions per template."""
        kw: dict[str, Any] = {"LaunchTemplateIds": self.template_ids} if self.template_ids else {}
        page = {"PageSize": SANDBOX_LT_PAGE if self.clients.ctx.is_sandbox else LT_PAGE}
        return [(lt, list(_pages(self.clients.ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                                 LaunchTemplateId=lt["LaunchTemplateId"], ResolveAlias=True, PaginationConfig=page)))
                for lt in _pages(self.clients.ec2, "describe_launch_templates", "LaunchTemplates",
                                 **(kw or {"PaginationConfig": page}))]

    @cached_property
    def groups(self) -> list[dict[str, Any]]:
        return list(_pages(self.clients.autoscaling, "describe_auto_scaling_groups", "AutoScalingGroups"))


def instances(clients: Clients, listing: Listing | None = None) -> list[Reference]:
    out = []
    for inst in (listing or Listing(clients)).instances:
        if inst.get("ImageId"):
            state = inst.get("State", {}).get("Name", "")
            out.append(Reference(inst["ImageId"], "instance", f"{inst['InstanceId']} ({state})"))
    return out


class ParameterHistory:
    """SSM parameter histories, each paged through once per run and kept."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self._seen: dict[str, list[dict[str, Any]]] = {}

    def versions(self, name: str) -> list[dict[str, Any]]:
        if name not in self._seen:
            try:
                self._seen[name] = list(_pages(self.clients.ssm, "get_parameter_history", "Parameters", Name=name))
            except self.clients.ssm.exceptions.ParameterNotFound:
                self._seen[name] = []
        return self._seen[name]

    def resolve(self, selector: str) -> str | None:
        """The value of `name`, `name:N` or `name:label` (None: no such parameter/version)."""
        name, _, pin = selector.partition(":")  # a parameter name holds no ':'
        versions = self.versions(name)
        if not versions:
            return None
        if not pin:
            return str(versions[-1].get("Value", ""))
        for v in versions:
            if (pin.isdigit() and int(v.get("Version", -1)) == int(pin)) or pin in v.get("Labels", []):
                return str(v.get("Value", ""))
        return None


def launch_templates(clients: Clients, history: ParameterHistory | None = None, listing: Listing | None = None,
                     ) -> tuple[list[Reference], dict[str, list[str]]]:
    """Every version of every launch template (one paginated listing per template), and
    {template id and name: the AMIs of its versions} for the groups' overrides. A version
    that names an SSM parameter counts for the AMI it resolves to (`ResolveAlias`; else
    read from the parameter's history)."""
    history = history or ParameterHistory(clients)
    out = []
    by_template: dict[str, list[str]] = {}
    for lt, versions in (listing or Listing(clients)).templates:
        lt_id, lt_name = lt["LaunchTemplateId"], lt.get("LaunchTemplateName", "")
        for v in versions:
            image = str(v.get("LaunchTemplateData", {}).get("ImageId", ""))
            where = f"({lt_name})"
            if image.startswith(SSM_ALIAS):
                selector = image[len(SSM_ALIAS):]
                image = history.resolve(selector) or ""
                where = f"({lt_name}, {SSM_ALIAS}{selector})"
            if AMI_RE.match(image):
                out.append(Reference(image, f"{lt_id} v{v['VersionNumber']}", where))
                for key in (lt_id, lt_name):
                    by_template.setdefault(key, []).append(image)
    return out, by_template


def launch_configurations(clients: Clients) -> list[Reference]:
    return [Reference(lc["ImageId"], "launch configuration", lc["LaunchConfigurationName"])
            for lc in _pages(clients.autoscaling, "describe_launch_configurations", "LaunchConfigurations")
            if lc.get("ImageId")]


def groups(clients: Clients, template_images: dict[str, list[str]], listing: Listing | None = None,
           ) -> list[Reference]:
    """Per group: its rotation state (the previous image) and the templates its
    mixed-instances overrides name (`template_images`: template id/name -> its AMIs)."""
    out = []
    for g in (listing or Listing(clients)).groups:
        name = g["AutoScalingGroupName"]
        for tag in g.get("Tags", []):
            what = ROTATION_TAGS.get(tag.get("Key", ""))
            if what and AMI_RE.match(str(tag.get("Value", ""))):
                out.append(Reference(tag["Value"], "rotation state", f"(asg {name}, {what})"))
        mixed = g.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {})
        specs = [mixed.get("LaunchTemplateSpecification", {})]
        specs += [o.get("LaunchTemplateSpecification", {}) for o in mixed.get("Overrides", [])]
        for spec in specs:
            key = spec.get("LaunchTemplateId") or spec.get("LaunchTemplateName")
            for image in template_images.get(key or "", []):
                out.append(Reference(image, "mixed-instances template", f"{key} (asg {name})"))
    return out


def parameters(clients: Clients, history: ParameterHistory | None = None) -> list[Reference]:
    """SSM parameters (any path) whose current value is an AMI id, and the older versions of
    those parameters still pinned by a label (`name:label` reaches them)."""
    history = history or ParameterHistory(clients)
    out = []
    for p in _pages(clients.ssm, "get_parameters_by_path", "Parameters", Path="/", Recursive=True):
        if not AMI_RE.match(str(p.get("Value", ""))):
            continue
        name = p["Name"]
        out.append(Reference(p["Value"], "ssm parameter", f"{name} v{p.get('Version', '?')}"))
        for v in history.versions(name):
            value, labels = str(v.get("Value", "")), v.get("Labels", [])
            if labels and AMI_RE.match(value) and v.get("Version") != p.get("Version"):
                out.append(Reference(value, "ssm parameter", f"{name}:{v['Version']} (label {', '.join(labels)})"))
    return out


def second_opinion(clients: Clients, image_ids: list[str], *, force: bool = False) -> list[Reference]:
    """AWS's own `DescribeImageReferences` for `image_ids`, launch templates checked to full
    depth (10,000 versions, not the default 10) and instances in any state but terminated.
    Real AWS only: moto lacks it, so the sandbox endpoint is never asked (unless `force`)."""
    if clients.ctx.is_sandbox and not force:
        return []
    out = []
    types = [{"ResourceType": "ec2:Instance",
              "ResourceTypeOptions": [{"OptionName": "state-name", "OptionValues": LIVE_STATES}]},
             {"ResourceType": "ec2:LaunchTemplate",
              "ResourceTypeOptions": [{"OptionName": "version-depth", "OptionValues": [LT_DEPTH]}]},
             {"ResourceType": "ssm:Parameter"},
             {"ResourceType": "imagebuilder:ImageRecipe"},
             {"ResourceType": "imagebuilder:ContainerRecipe"}]
    ids = sorted(set(image_ids))
    for i in range(0, len(ids), REFERENCE_BATCH):
        for ref in _pages(clients.ec2, "describe_image_references", "ImageReferences",
                          ImageIds=ids[i:i + REFERENCE_BATCH], ResourceTypes=types):
            out.append(Reference(ref["ImageId"], "image reference", f"{ref.get('ResourceType', '?')} {ref.get('Arn', '')}"))
    return out


def latest_versions(listing: Listing) -> dict[str, int]:
    """{launch template id: its latest version number} as `listing` saw it."""
    return {lt["LaunchTemplateId"]: int(lt.get("LatestVersionNumber", 0)) for lt, _ in listing.templates}


class Recent(Listing):
    """The listing of what could have appeared since an earlier look, for some AMIs only:
    instances of those AMIs (a filtered listing), the launch-template versions newer than
    the ones `seen` names ({template id: latest version seen}; every version of a template
    created since; `seen` is brought up to date), and the groups (one listing: their
    rotation tags and mixed-instances templates may have moved)."""

    def __init__(self, clients: Clients, image_ids: list[str], seen: dict[str, int]) -> None:
        super().__init__(clients)
        self.image_ids = sorted(set(image_ids))
        self.seen = seen

    @cached_property
    def instances(self) -> list[dict[str, Any]]:
        filters = [{"Name": "instance-state-name", "Values": LIVE_STATES},
                   {"Name": "image-id", "Values": self.image_ids}]
        return [inst for r in _pages(self.clients.ec2, "describe_instances", "Reservations", Filters=filters)
                for inst in r.get("Instances", [])
                if inst.get("State", {}).get("Name", "") != "terminated"]

    @cached_property
    def templates(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        page = {"PageSize": SANDBOX_LT_PAGE if self.clients.ctx.is_sandbox else LT_PAGE}
        out = []
        for lt in _pages(self.clients.ec2, "describe_launch_templates", "LaunchTemplates", PaginationConfig=page):
            lt_id, latest = lt["LaunchTemplateId"], int(lt.get("LatestVersionNumber", 0))
            known = self.seen.get(lt_id, 0)
            if latest <= known:
                continue  # versions are never changed, only added (or deleted)
            versions = _pages(self.clients.ec2, "describe_launch_template_versions", "LaunchTemplateVersions",
                              LaunchTemplateId=lt_id, ResolveAlias=True, PaginationConfig=page,
                              **({"MinVersion": str(known + 1)} if known else {}))
            out.append((lt, [v for v in versions if int(v.get("VersionNumber", 0)) > known]))
            self.seen[lt_id] = latest
        return out


def since_last_look(clients: Clients, image_ids: list[str], seen: dict[str, int], *,
                    instances_too: bool = True) -> list[Reference]:
    """The cheap check right before one step: launch-template versions added since `seen`
    (one DescribeLaunchTemplates; versions only of templates that grew) and, with
    `instances_too`, instances of `image_ids` (one filtered DescribeInstances)."""
    delta = Recent(clients, image_ids, seen)
    refs, _ = launch_templates(clients, ParameterHistory(clients), delta)
    if instances_too:
        refs += instances(clients, delta)
    wanted = set(image_ids)
    return [r for r in refs if r.image_id in wanted]


def recent(clients: Clients, image_ids: list[str], since: Listing, seen: dict[str, int], *,
           references_api: bool = False) -> list[Reference]:
    """The uses of `image_ids` that may have appeared since `since` was listed (`seen`: the
    latest launch-template versions looked at since, brought up to date), at the cost of
    what changed: AWS's `DescribeImageReferences` for the AMIs (instances, every
    launch-template version, SSM parameters: `references_api`), else the instances of
    those AMIs, the launch-template versions added since, and the SSM parameters; in both
    cases the groups' rotation tags and mixed-instances templates, and launch
    configurations (DescribeImageReferences does not look at those)."""
    history = ParameterHistory(clients)
    delta = Recent(clients, image_ids, seen)
    _, old_templates = launch_templates(clients, history, since)
    if references_api:
        found = second_opinion(clients, image_ids, force=True)
        new_templates: dict[str, list[str]] = {}
    else:
        templates, new_templates = launch_templates(clients, history, delta)
        found = [*instances(clients, delta), *templates, *parameters(clients, history)]
    by_template = {k: [*old_templates.get(k, []), *new_templates.get(k, [])]
                   for k in {*old_templates, *new_templates}}
    wanted = set(image_ids)
    return [r for r in [*found, *launch_configurations(clients), *groups(clients, by_template, delta)]
            if r.image_id in wanted]


def _whom(permission: dict[str, Any]) -> str:
    if permission.get("Group") == "all":
        return "with the public (launch permission group all)"
    if permission.get("UserId"):
        return f"with account {permission['UserId']}"
    if permission.get("OrganizationArn"):
        return f"with organization {permission['OrganizationArn']}"
    if permission.get("OrganizationalUnitArn"):
        return f"with OU {permission['OrganizationalUnitArn']}"
    return f"with {permission}"


def public(image: dict[str, Any]) -> list[Reference]:
    """A public AMI (DescribeImages says so: no extra request)."""
    return [Reference(image["ImageId"], SHARED, _whom({"Group": "all"}))] if image.get("Public") else []


def launch_permissions(clients: Clients, image_ids: list[str]) -> list[Reference]:
    """Who else may launch each AMI (DescribeImageAttribute launchPermission: accounts,
    organisations, OUs, the public): one request per AMI, so only for the AMIs a plan would
    change. An AMI gone meanwhile has none."""
    out = []
    for ami in image_ids:
        try:
            perms = clients.ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        except ClientError as exc:
            if error_code(exc).startswith("InvalidAMIID"):
                continue
            raise
        out += [Reference(ami, SHARED, _whom(p)) for p in perms.get("LaunchPermissions", [])]
    return out


def ram_shares(clients: Clients) -> tuple[list[Reference], str | None]:
    """AMIs this account shares through AWS RAM resource shares (ListResources, resources the
    account owns, page by page), and a note when RAM could not be asked (no permission, or
    an endpoint without it, as moto's): then only launch permissions are seen."""
    out = []
    try:
        for page in clients.client("ram").get_paginator("list_resources").paginate(resourceOwner="SELF"):
            for res in page.get("resources", []):
                arn = str(res.get("arn", ""))
                if ":image/ami-" in arn and res.get("status", "AVAILABLE") == "AVAILABLE":
                    out.append(Reference(arn.rsplit("/", 1)[1], SHARED,
                                         f"through RAM share {res.get('resourceShareArn', '?')}"))
    except (ClientError, BotoCoreError) as exc:
        return [], f"AMIs shared through RAM not checked: {exc}"
    return out, None


def gather(clients: Clients, image_ids: list[str] | None = None, listing: Listing | None = None,
           ) -> list[Reference]:
    """Every reference to an AMI in the clients' region, each source listed once (`listing`:
    the run's listing, shared with the leftovers); with `image_ids`, AWS's
    `DescribeImageReferences` on them too (real AWS only)."""
    history = ParameterHistory(clients)
    listing = listing or Listing(clients)
    templates, by_template = launch_templates(clients, history, listing)
    return [*instances(clients, listing), *templates, *launch_configurations(clients),
            *groups(clients, by_template, listing), *parameters(clients, history),
            *second_opinion(clients, image_ids or [])]

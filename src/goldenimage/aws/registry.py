"""The AWS image registry: AMIs tagged `goldenimage:*`, channels as SSM parameters.

Same protocol as the local store (`store.Registry`: put/get/list/find_by_fingerprint/
manifest), plus promote, revoke and channel history.

- An image is an AMI owned by the account, tagged with its facts: `goldenimage:name`,
  `:fingerprint`, `:status` (validated | quarantined | revoked), `:base-ami`, `:created`,
  `:git-commit`, `:env`, `:local-id`. Lookups go through tag filters and paginators.
- Its manifest (the bake's full story) is the SSM parameter
  `<prefix>/_manifest/<image>/<ami-id>`. Its SBOM (the installed packages with source
  package, and the apt sources it installs from, read on the validation instance) is too
  big for one parameter (~400 packages: ~30 KB of JSON, ~8 KB compressed; SSM takes 4 KB
  in the standard tier, 8 KB in the advanced): it is zlib-compressed, base64-encoded and
  split into parameters `<prefix>/_sbom/<image>/<ami-id>/<n>` of at most 4 KB each, so
  that Intelligent-Tiering keeps every one in the standard tier (no per-parameter charge).
  They are written before the manifest, which names their count and the sha256 of the
  compressed bytes: a manifest is the commit point, and a reader checks the digest.
- The AMI's signed attestation and its compliance audit's report are kept the same way, in
  parts under `<prefix>/_attestation/<image>/<ami-id>/` and `<prefix>/_compliance/<image>/
  <ami-id>/`; the attestation checks itself (its signature), the report against the digest
  the attestation signs.
- A channel is the SSM parameter `<prefix>/<image>/<channel>` whose value is an AMI id
  (data type `aws:ec2:image`). Every promotion is a new parameter version, so the
  parameter's history is the promotion history and names the exact rollback target.
- Promote first turns on EC2 deregistration protection with cooldown on every copy of the
  AMI in every region (`aws.protection`); gc alone takes it off, through its stages. When
  gc deletes an AMI, the registry forgets its parameters (manifest, SBOM, attestation and
  compliance report parts).
- Revoke tags the AMI `revoked`, deprecates it (`EnableImageDeprecation`) and moves every
  channel that points at it back to its previous validated image; promote, channel
  resolution and `require_usable` refuse a revoked image from then on.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from .. import channels as ch
from ..errors import ConfigError, NotFoundError
from ..models import (
    PARENT_FINGERPRINT_TAG,
    PARENT_ID_TAG,
    PARENT_NAME_TAG,
    STATUSES,
    TAG,
    ImageRecord,
    history_entry,
)
from ..sections import PARAMETER_PREFIX
from . import protection
from .clients import Clients
from .errors import aws_errors, code_means, error_code

FACT_TAGS = {
    "name": "name",
    "fingerprint": "fingerprint",
    "status": "status",
    "base-ami": "base_ami",
    "created": "created",
    "git-commit": "git_commit",
    "env": "env",
    "local-id": "local_id",
}
AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
_REVOKED_FROM = re.compile(r"\(revoked (ami-[0-9a-f]+)\)")  # a channel move written by `revoke`
MAX_PARAMETER = 8192  # advanced tier; standard is 4096
SBOM_CHUNK = 4096  # each SBOM part stays in the standard tier
SBOM_KEYS = ("packages", "apt_sources")

P = ParamSpec("P")
R = TypeVar("R")


def _translated(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        with aws_errors(getattr(self, "clients", None)):
            return fn(*args, **kwargs)

    return wrapper


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_ami_id(image_id: str) -> str:
    if not AMI_RE.match(image_id):
        raise NotFoundError(f"{image_id!r} is not an AMI id (expected ami- and 8 or 17 hex digits)")
    return image_id


def _tags(image: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def _gib(size: str | int | None) -> int:
    if size is None:
        return 8
    if isinstance(size, int):
        return max(1, size)
    m = re.fullmatch(r"([0-9]+)([MG])", size)
    if not m:
        return 8
    n = int(m.group(1))
    return max(1, math.ceil(n / 1024) if m.group(2) == "M" else n)


def local_ami_name(name: str, image_id: str) -> str:
    """The name of an AMI registered for a local image (the sandbox's bakes)."""
    return f"goldenimage-{name}-{image_id}"[:128]


class AwsRegistry:
    """The registry of one environment in one account and region."""

    def __init__(
        self,
        clients: Clients,
        env: str,
        *,
        prefix: str = PARAMETER_PREFIX,
        channel_data_type: str = "aws:ec2:image",
        supports_deprecation: bool | None = None,
        now: Callable[[], dt.datetime] = utcnow,
        copy_regions: Iterable[str] = (),
    ) -> None:
        self.clients = clients
        self.copy_regions = sorted(set(copy_regions) - {clients.ctx.region})
        self.env = env
        self.prefix = prefix.rstrip("/")
        self.channel_data_type = channel_data_type
        # moto (the sandbox) has no EnableImageDeprecation: it answers HTTP 500
        self.supports_deprecation = (
            not clients.ctx.is_sandbox if supports_deprecation is None else supports_deprecation
        )
        self.now = now

    # -- names ---------------------------------------------------------------------------
    def channel_parameter(self, name: str, channel: str) -> str:
        ch.check_channel(channel)
        return f"{self.prefix}/{name}/{channel}"

    def manifest_parameter(self, name: str, image_id: str) -> str:
        return f"{self.prefix}/_manifest/{name}/{image_id}"

    def sbom_path(self, name: str, image_id: str) -> str:
        return f"{self.prefix}/_sbom/{name}/{image_id}"

    def sbom_parameter(self, name: str, image_id: str, part: int) -> str:
        return f"{self.sbom_path(name, image_id)}/{part}"

    def attestation_path(self, name: str, image_id: str) -> str:
        return f"{self.prefix}/_attestation/{name}/{image_id}"

    def compliance_path(self, name: str, image_id: str) -> str:
        return f"{self.prefix}/_compliance/{name}/{image_id}"

    # -- files kept beside the manifest, in parts: the attestation, the audit's report ------
    def _put_parts(self, path: str, blob: bytes, what: str, image_id: str) -> int:
        """Keep `blob` (zlib-compressed bytes), base64, in parameters `<path>/<n>` of at most
        4 KB (standard tier); the number of parts."""
        text = base64.b64encode(blob).decode()
        parts = [text[i:i + SBOM_CHUNK] for i in range(0, len(text), SBOM_CHUNK)]
        for n, part in enumerate(parts):
            self.clients.ssm.put_parameter(
                Name=f"{path}/{n}", Value=part, Type="String", Tier="Intelligent-Tiering", Overwrite=True,
                Description=f"goldenimage {what} of {image_id}, part {n + 1} of {len(parts)}")
        return len(parts)

    def _read_parts(self, path: str) -> bytes | None:
        """What `_put_parts` kept under `path` (None: nothing); b"" when the parts do not
        decode (one missing, say)."""
        pages = self.clients.ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True)
        found = {p["Name"]: p["Value"] for page in pages for p in page.get("Parameters", [])}
        if not found:
            return None
        ordered = sorted(found, key=lambda n: int(n.rsplit("/", 1)[1]) if n.rsplit("/", 1)[1].isdigit() else -1)
        try:
            return zlib.decompress(base64.b64decode("".join(found[n] for n in ordered)))
        except (ValueError, zlib.error):
            return b""

    def put_attestation(self, name: str, image_id: str, envelope: bytes) -> int:
        """Keep the AMI's DSSE envelope beside its manifest (`<prefix>/_attestation/<image>/
        <ami>/<n>`); the number of parts. Its signature is its own check: a reader needs no
        digest."""
        return self._put_parts(self.attestation_path(name, image_id), zlib.compress(envelope, 9), "attestation",
                               image_id)

    def attestation(self, name: str, image_id: str) -> bytes | None:
        """The AMI's envelope bytes (None: none kept; a part missing leaves bytes that do
        not decode, which verification refuses)."""
        data = self._read_parts(self.attestation_path(name, image_id))
        return b"(attestation parts do not decode)" if data == b"" else data

    def put_compliance_report(self, name: str, image_id: str, report: bytes) -> int:
        """Keep the compliance audit's full report with the AMI (`<prefix>/_compliance/
        <image>/<ami>/<n>`); the number of parts. Its digest is in the manifest and the
        attestation, which verification compares it with."""
        return self._put_parts(self.compliance_path(name, image_id), zlib.compress(report, 9), "compliance report",
                               image_id)

    def compliance_report(self, name: str, image_id: str) -> bytes | None:
        """The AMI's compliance report (None: none kept, as for an AMI audited before
        reports were kept in SSM)."""
        return self._read_parts(self.compliance_path(name, image_id))

    def snapshots(self, image_id: str) -> builtins.list[str]:
        """The EBS snapshots the AMI's block devices reference."""
        return sorted(bdm["Ebs"]["SnapshotId"] for bdm in self._image(image_id).get("BlockDeviceMappings", [])
                      if bdm.get("Ebs", {}).get("SnapshotId"))

    # -- reading -------------------------------------------------------------------------
    def _describe(
        self, filters: builtins.list[dict[str, Any]], image_ids: Iterable[str] = ()
    ) -> builtins.list[dict[str, Any]]:
        kw: dict[str, Any] = {"Owners": ["self"], "Filters": filters}
        ids = list(image_ids)
        if ids:
            kw = {"ImageIds": ids}
        pages = self.clients.ec2.get_paginator("describe_images").paginate(**kw)
        return [img for page in pages for img in page.get("Images", [])]

    def record(self, image: dict[str, Any], channels: dict[str, str] | None = None) -> ImageRecord:
        """The record of one `DescribeImages` entry (`channels`: {channel: AMI id})."""
        return self._record(image, channels)

    def _record(self, image: dict[str, Any], channels: dict[str, str] | None = None) -> ImageRecord:
        tags = _tags(image)
        facts = {py: tags.get(TAG + tag, "") for tag, py in FACT_TAGS.items()}
        image_id = image["ImageId"]
        in_channels = tuple(sorted(ch for ch, ami in (channels or {}).items() if ami == image_id))
        extra: dict[str, Any] = {
            "base_ami": facts["base_ami"],
            "git_commit": facts["git_commit"],
            "local_id": facts["local_id"],
            "region": self.clients.ctx.region,
            "state": image.get("State", ""),
            "ami_name": image.get("Name", ""),
        }
        if tags.get(PARENT_ID_TAG):
            extra["parent"] = {"id": tags[PARENT_ID_TAG], "name": tags.get(PARENT_NAME_TAG, ""),
                               "fingerprint": tags.get(PARENT_FINGERPRINT_TAG, ""), "channel": None}
        if tags.get(TAG + "revoked-reason"):
            extra["revoked_reason"] = tags[TAG + "revoked-reason"]
            extra["revoked_at"] = tags.get(TAG + "revoked-at", "")
        if image.get("DeprecationTime"):
            extra["deprecation_time"] = image["DeprecationTime"]
        return ImageRecord(
            id=image_id,
            name=facts["name"],
            env=facts["env"],
            fingerprint=facts["fingerprint"],
            created=facts["created"] or str(image.get("CreationDate", "")),
            status=facts["status"] or "unknown",
            artifact=f"{self.clients.ctx.region}:{image_id}",
            channels=in_channels,
            extra=extra,
        )

    def _image(self, image_id: str) -> dict[str, Any]:
        check_ami_id(image_id)
        with code_means("InvalidAMIID.", lambda code: NotFoundError(
                f"unknown image id {image_id!r} in {self.clients.ctx.region} ({code})")):
            images = self._describe([], [image_id])
        if not images:
            raise NotFoundError(f"unknown image id {image_id!r} in {self.clients.ctx.region}")
        image = images[0]
        if TAG + "name" not in _tags(image):
            raise NotFoundError(f"{image_id} is not a goldenimage AMI (no {TAG}name tag)")
        return image

    @_translated
    def get(self, image_id: str) -> ImageRecord:
        image = self._image(image_id)
        name = _tags(image)[TAG + "name"]
        return self._record(image, self.channels(name))

    @_translated
    def list(self, name: str | None = None) -> builtins.list[ImageRecord]:
        filters = [{"Name": f"tag:{TAG}env", "Values": [self.env]}]
        if name is not None:
            filters.append({"Name": f"tag:{TAG}name", "Values": [name]})
        images = self._describe(filters)
        channels: dict[str, dict[str, str]] = {}
        out = []
        for img in images:
            n = _tags(img).get(TAG + "name", "")
            if n not in channels:
                channels[n] = self.channels(n)
            out.append(self._record(img, channels[n]))
        return sorted(out, key=lambda r: (r.created, r.id))

    @_translated
    def find_by_fingerprint(self, name: str, fingerprint: str) -> ImageRecord | None:
        images = self._describe(
            [
                {"Name": f"tag:{TAG}env", "Values": [self.env]},
                {"Name": f"tag:{TAG}name", "Values": [name]},
                {"Name": f"tag:{TAG}fingerprint", "Values": [fingerprint]},
                {"Name": f"tag:{TAG}status", "Values": ["validated"]},
                {"Name": "state", "Values": ["available"]},
            ]
        )
        if not images:
            return None
        records = sorted((self._record(i) for i in images), key=lambda r: (r.created, r.id))
        return records[-1]

    @_translated
    def manifest(self, image_id: str) -> dict[str, Any]:
        rec = self.get(image_id)
        try:
            value = self.clients.ssm.get_parameter(Name=self.manifest_parameter(rec.name, image_id))
        except ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise
            return {**rec.summary(), "manifest": "not recorded: only the tags are known"}
        doc: dict[str, Any] = json.loads(value["Parameter"]["Value"])
        if isinstance(doc.get("sbom_parameters"), dict):
            doc.update(self._read_sbom(rec.name, image_id, doc["sbom_parameters"]))
        return doc

    def _read_sbom(self, name: str, image_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        """The manifest's SBOM keys from its parts; {} with a note when a part is missing or
        the bytes are not those the manifest names."""
        names = [self.sbom_parameter(name, image_id, n) for n in range(int(meta.get("parts", 0)))]
        values: dict[str, str] = {}
        for i in range(0, len(names), 10):  # GetParameters takes up to 10 names
            got = self.clients.ssm.get_parameters(Names=names[i:i + 10])
            values.update({p["Name"]: p["Value"] for p in got.get("Parameters", [])})
        if any(n not in values for n in names):
            return {"sbom_note": f"SBOM parts missing: {', '.join(n for n in names if n not in values)}"}
        blob = base64.b64decode("".join(values[n] for n in names))
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            return {"sbom_note": "SBOM parts do not match the sha256 the manifest records"}
        doc: dict[str, Any] = json.loads(zlib.decompress(blob))
        return {k: doc[k] for k in SBOM_KEYS if k in doc}

    # -- channels ------------------------------------------------------------------------
    @_translated
    def channels(self, name: str) -> dict[str, str]:
        """{channel: AMI id} of one image name."""
        pages = self.clients.ssm.get_paginator("get_parameters_by_path").paginate(
            Path=f"{self.prefix}/{name}", Recursive=False
        )
        out: dict[str, str] = {}
        for page in pages:
            for p in page.get("Parameters", []):
                out[p["Name"].rsplit("/", 1)[-1]] = p["Value"]
        return out

    def histories(self, names: Iterable[str] = ()) -> dict[str, dict[str, builtins.list[dict[str, Any]]]]:
        """Every channel's history of the image names `names`, `{name: {channel: history}}`
        (names without a channel left out)."""
        out = {n: {c: self.history(n, c) for c in sorted(self.channels(n))} for n in sorted(set(names))}
        return {n: h for n, h in out.items() if h}

    @_translated
    def history(self, name: str, channel: str) -> builtins.list[dict[str, Any]]:
        """The channel's moves, oldest first (`models.history_entry`): every version of its
        parameter; a move written by `revoke` is a `revoke` with the revoked image's reason."""
        param = self.channel_parameter(name, channel)
        try:
            pages = self.clients.ssm.get_paginator("get_parameter_history").paginate(Name=param)
            entries = [p for page in pages for p in page.get("Parameters", [])]
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                raise NotFoundError(f"channel {name}/{channel} does not exist ({param})") from None
            raise
        ids = sorted({e["Value"] for e in entries if AMI_RE.match(e["Value"])})
        tags = self._image_tags(ids)
        out: builtins.list[dict[str, Any]] = []
        previous: str | None = None
        for e in sorted(entries, key=lambda e: int(e["Version"])):
            modified = e.get("LastModifiedDate")
            revoked = _REVOKED_FROM.search(str(e.get("Description", "")))
            out.append(history_entry(
                int(e["Version"]),
                at=iso(modified) if isinstance(modified, dt.datetime) else str(modified),
                image_id=e["Value"], previous=previous, action="revoke" if revoked else "promote",
                user=e.get("LastModifiedUser"),
                reason=tags.get(revoked[1], {}).get(TAG + "revoked-reason") if revoked else None,
                status=tags[e["Value"]].get(TAG + "status", "unknown") if e["Value"] in tags
                else "deregistered"))
            previous = e["Value"]
        return out

    def _image_tags(self, ids: builtins.list[str]) -> dict[str, dict[str, str]]:
        """{AMI id: its tags} of the AMIs that still exist."""
        out: dict[str, dict[str, str]] = {}
        for i in range(0, len(ids), 100):
            chunk = ids[i : i + 100]
            try:
                images = self._describe([], chunk)
            except ClientError as exc:
                if not error_code(exc).startswith("InvalidAMIID."):
                    raise
                images = []
                for one in chunk:  # some are gone: ask one by one
                    try:
                        images.extend(self._describe([], [one]))
                    except ClientError as exc2:
                        if not error_code(exc2).startswith("InvalidAMIID."):
                            raise
            for img in images:
                out[img["ImageId"]] = _tags(img)
        return out

    def rollback_target(self, name: str, channel: str) -> str | None:
        """The validated image the channel pointed at before its current one."""
        return ch.rollback_target(self.history(name, channel))

    @_translated
    def resolve_channel(self, name: str, channel: str) -> ImageRecord:
        """The image a channel points at; refuses one that is not validated."""
        param = self.channel_parameter(name, channel)
        try:
            value = self.clients.ssm.get_parameter(Name=param)["Parameter"]["Value"]
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                raise NotFoundError(f"channel {name}/{channel} does not exist ({param})") from None
            raise
        return self.require_usable(value)

    def require_usable(self, image_id: str) -> ImageRecord:
        """The record of a validated image; ConfigError for a revoked or quarantined one."""
        rec = self.get(image_id)
        if rec.status != "validated":
            why = f": {rec.extra['revoked_reason']}" if rec.extra.get("revoked_reason") else ""
            raise ConfigError(
                f"image {image_id} ({rec.name}) is {rec.status}{why}: it may not be used"
            )
        return rec

    def everywhere(self, image_id: str, local_id: str) -> builtins.list[tuple[Clients, str]]:
        """[(clients of the region, AMI)]: the image's copies in the copy regions (the same
        `local-id` tag), then the AMI itself."""
        out: builtins.list[tuple[Clients, str]] = []
        for region in self.copy_regions if local_id else ():
            c = Clients(dataclasses.replace(self.clients.ctx, region=region))
            pages = c.ec2.get_paginator("describe_images").paginate(Owners=["self"], Filters=[
                {"Name": f"tag:{TAG}env", "Values": [self.env]}, {"Name": f"tag:{TAG}local-id", "Values": [local_id]}])
            out += [(c, img["ImageId"]) for page in pages for img in page.get("Images", [])]
        return [*out, (self.clients, image_id)]

    def protect(self, rec: ImageRecord) -> dict[str, str]:
        """Deregistration protection with cooldown on every copy of the image (`aws.protection`):
        {region:AMI: what was done}."""
        return {f"{c.ctx.region}:{ami}": protection.protect(c, ami)
                for c, ami in self.everywhere(rec.id, str(rec.extra.get("local_id") or ""))}

    @_translated
    def promote(self, image_id: str, channel: str) -> dict[str, Any]:
        """Point the channel at a validated image. Its deregistration protection (with
        cooldown, every copy in every region) is turned on first: a channel never names an
        AMI that can be deregistered; gc alone takes it off, through its stages."""
        rec = self.require_usable(image_id)
        param = self.channel_parameter(rec.name, channel)
        previous = self.channels(rec.name).get(channel)
        protected = self.protect(rec)  # also when the channel already points at it (images promoted before)
        if previous == image_id:
            return {
                "image": rec.name,
                "channel": channel,
                "image_id": image_id,
                "previous": previous,
                "changed": False,
                "parameter": param,
                "protection": protected,
            }
        out = self.clients.ssm.put_parameter(
            Name=param,
            Value=image_id,
            Type="String",
            DataType=self.channel_data_type,
            Overwrite=True,
            Description=f"goldenimage channel {rec.name}/{channel}",
        )
        return {
            "image": rec.name,
            "channel": channel,
            "image_id": image_id,
            "previous": previous,
            "changed": True,
            "parameter": param,
            "version": out.get("Version"),
            "protection": protected,
        }

    def image_parameters(self, name: str, image_id: str) -> builtins.list[str]:
        """The parameters the registry keeps for one AMI: its manifest, its SBOM parts, its
        attestation's and its compliance report's parts (all parts there are, whatever the
        manifest says)."""
        parts: builtins.list[str] = []
        for path in (self.sbom_path(name, image_id), self.attestation_path(name, image_id),
                     self.compliance_path(name, image_id)):
            pages = self.clients.ssm.get_paginator("get_parameters_by_path").paginate(Path=path, Recursive=True)
            parts += sorted(p["Name"] for page in pages for p in page.get("Parameters", []))
        try:
            self.clients.ssm.get_parameter(Name=self.manifest_parameter(name, image_id))
            manifest = [self.manifest_parameter(name, image_id)]
        except ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise
            manifest = []
        return [*manifest, *parts]

    def forget(self, name: str, image_id: str) -> builtins.list[str]:
        """Delete the AMI's parameters (`image_parameters`), once the AMI is deregistered;
        the names deleted."""
        names = self.image_parameters(name, image_id)
        for i in range(0, len(names), 10):  # DeleteParameters takes up to 10 names
            self.clients.ssm.delete_parameters(Names=names[i:i + 10])
        return names

    @_translated
    def revoke(self, image_id: str, reason: str) -> dict[str, Any]:
        reason = ch.clean_reason(reason)
        image = self._image(image_id)
        rec = self._record(image)
        result: dict[str, Any] = {
            "image_id": image_id,
            "image": rec.name,
            "reason": reason,
            "channels_moved": {},
            "channels_left": [],
        }
        if rec.status != "revoked":
            self.clients.ec2.create_tags(
                Resources=[image_id],
                Tags=[
                    {"Key": TAG + "status", "Value": "revoked"},
                    {"Key": TAG + "revoked-reason", "Value": reason[:256]},
                    {"Key": TAG + "revoked-at", "Value": iso(self.now())},
                ],
            )
        result["previous_status"] = rec.status
        result["deprecation"] = self._deprecate(image_id)
        for channel, ami in sorted(self.channels(rec.name).items()):
            if ami != image_id:
                continue
            target = self.rollback_target(rec.name, channel)
            if target is None:
                result["channels_left"].append(channel)
                continue
            self.clients.ssm.put_parameter(
                Name=self.channel_parameter(rec.name, channel),
                Value=target,
                Type="String",
                DataType=self.channel_data_type,
                Overwrite=True,
                Description=f"goldenimage channel {rec.name}/{channel} (revoked {image_id})",  # _REVOKED_FROM
            )
            result["channels_moved"][channel] = target
        return result

    def _deprecate(self, image_id: str) -> str:
        if not self.supports_deprecation:
            return "skipped: the sandbox API (moto) has no EnableImageDeprecation"
        # AWS refuses a time in the past and rounds to the minute: the next whole minute
        at = (self.now() + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
        self.clients.ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt=at)
        return iso(at)

    # -- registering ---------------------------------------------------------------------
    def _fact_tags(
        self, record: ImageRecord, manifest: dict[str, Any]
    ) -> builtins.list[dict[str, str]]:
        facts = {
            "name": record.name,
            "fingerprint": record.fingerprint,
            "status": record.status,
            "base-ami": str(manifest.get("base_ami") or record.extra.get("base_ami") or ""),
            "created": record.created,
            "git-commit": str(manifest.get("git_commit") or record.extra.get("git_commit") or ""),
            "env": self.env,
            "local-id": record.id,
        }
        parent = manifest.get("parent")
        if isinstance(parent, dict):  # a child image: the parent's AMI (else its id) it stands on
            facts.update({"parent-id": parent.get("ami") or parent["id"], "parent-name": parent["name"],
                          "parent-fingerprint": parent["fingerprint"]})
        return [{"Key": TAG + k, "Value": str(v)[:256]} for k, v in facts.items()] + [
            {"Key": "Name", "Value": f"goldenimage {record.name} {record.id}"[:256]}
        ]

    @_translated
    def put(
        self, record: ImageRecord, manifest: dict[str, Any], files: Path | None = None
    ) -> ImageRecord:
        """Register a finished image; returns its record with the AMI id as `id`.

        With an AMI already built (`manifest["ami_id"]` or a Packer `artifact_id` of
        `region:ami-...`), the AMI is adopted: tagged with the image's facts. Without one
        (the sandbox bake of a local qcow2), an AMI is registered from a snapshot.
        """
        if record.status not in STATUSES:
            raise ConfigError(
                f"image status must be one of {', '.join(STATUSES)}, not {record.status!r}"
            )
        ami = str(manifest.get("ami_id") or "")
        artifact_id = str(manifest.get("artifact_id") or "")
        if not ami and re.fullmatch(r"[a-z0-9-]+:ami-[0-9a-f]+", artifact_id):
            ami = artifact_id.split(":", 1)[1]
        tags = self._fact_tags(record, manifest)
        if not ami:
            # a retried bake registers its image once: the same local id is the same image
            same = self._describe(
                [
                    {"Name": f"tag:{TAG}env", "Values": [self.env]},
                    {"Name": f"tag:{TAG}local-id", "Values": [record.id]},
                ]
            )
            if same:
                return self.get(same[0]["ImageId"])
        if ami:
            check_ami_id(ami)
            self.clients.ec2.create_tags(Resources=[ami], Tags=tags)
        else:
            ami = self.register_local_image(record, manifest, tags)
        try:
            self._put_manifest(record.name, ami, {**manifest, "ami_id": ami})
        except BaseException:
            if not manifest.get("ami_id") and not artifact_id:
                self.discard(ami)
            raise
        return self.get(ami)

    def _put_sbom(self, name: str, ami: str, sbom: dict[str, Any]) -> dict[str, Any]:
        blob = zlib.compress(json.dumps(sbom, sort_keys=True, separators=(",", ":")).encode(), 9)
        parts = self._put_parts(self.sbom_path(name, ami), blob, "SBOM", ami)
        return {"parts": parts, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                "encoding": "json+zlib+base64", "packages": len(sbom.get("packages") or [])}

    def _put_manifest(self, name: str, ami: str, manifest: dict[str, Any]) -> None:
        doc = dict(manifest)
        sbom = {k: doc.pop(k) for k in SBOM_KEYS if k in doc}
        if sbom:
            doc["sbom_parameters"] = self._put_sbom(name, ami, sbom)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        dropped: builtins.list[str] = []
        while len(text.encode()) > MAX_PARAMETER - 200 and doc:
            biggest = max(doc, key=lambda k: len(json.dumps(doc[k], default=str)))
            dropped.append(biggest)
            del doc[biggest]
            text = json.dumps(
                {**doc, "_dropped": dropped}, sort_keys=True, separators=(",", ":"), default=str
            )
        self.clients.ssm.put_parameter(
            Name=self.manifest_parameter(name, ami),
            Value=text,
            Type="String",
            Tier="Intelligent-Tiering",
            Overwrite=True,
            Description=f"goldenimage manifest of {ami}",
        )

    def register_local_image(
        self,
        record: ImageRecord,
        manifest: dict[str, Any],
        tags: builtins.list[dict[str, str]] | None = None,
    ) -> str:
        """Register an AMI standing for a local qcow2 (the sandbox cannot import a disk).

        A volume of the image's size -> a snapshot -> `register_image`, then tags (moto
        drops tag specifications of `register_image`). Nothing is left behind on failure.
        """
        ec2 = self.clients.ec2
        tags = tags or self._fact_tags(record, manifest)
        zone = f"{self.clients.ctx.region}a"
        volume = ec2.create_volume(
            AvailabilityZone=zone,
            Size=_gib(manifest.get("disk_size")),
            VolumeType="gp3",
            TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
        )["VolumeId"]
        snapshot = ami = None
        try:
            ec2.get_waiter("volume_available").wait(VolumeIds=[volume], WaiterConfig={"Delay": 2})
            snapshot = ec2.create_snapshot(
                VolumeId=volume,
                Description=f"goldenimage {record.name} {record.id}",
            )["SnapshotId"]
            ec2.get_waiter("snapshot_completed").wait(
                SnapshotIds=[snapshot], WaiterConfig={"Delay": 2}
            )
            ami = ec2.register_image(
                Name=local_ami_name(record.name, record.id),
                Description=f"goldenimage {record.name} fingerprint {record.fingerprint}"[:255],
                Architecture="x86_64",
                RootDeviceName="/dev/xvda",
                VirtualizationType="hvm",
                EnaSupport=True,
                BlockDeviceMappings=[
                    {
                        "DeviceName": "/dev/xvda",
                        "Ebs": {
                            "SnapshotId": snapshot,
                            "VolumeType": "gp3",
                            "DeleteOnTermination": True,
                        },
                    }
                ],
            )["ImageId"]
            # moto ignores BlockDeviceMappings and makes its own snapshot: tag what the AMI
            # really references as well as ours
            refs = {
                bdm["Ebs"]["SnapshotId"]
                for bdm in self._describe([], [ami])[0].get("BlockDeviceMappings", [])
                if bdm.get("Ebs", {}).get("SnapshotId")
            }
            ec2.create_tags(Resources=[ami, snapshot, *sorted(refs - {snapshot})], Tags=tags)
        except BaseException:
            self.discard(ami, snapshot)
            raise
        finally:
            ec2.delete_volume(VolumeId=volume)
        return str(ami)

    def discard(self, ami: str | None, snapshot: str | None = None) -> None:
        """Best-effort removal of a half-registered AMI and the snapshots it references."""
        ec2 = self.clients.ec2
        snapshots = {snapshot} if snapshot else set()
        with contextlib.suppress(ClientError, IndexError):
            if ami:
                for bdm in self._describe([], [ami])[0].get("BlockDeviceMappings", []):
                    if bdm.get("Ebs", {}).get("SnapshotId"):
                        snapshots.add(bdm["Ebs"]["SnapshotId"])
                ec2.deregister_image(ImageId=ami)
        for snap in sorted(snapshots):
            with contextlib.suppress(ClientError):
                ec2.delete_snapshot(SnapshotId=snap)

"""Environment settings: `inventories/<env>/goldenimage.yml`, validated with file/field errors.

An environment is a directory under `inventories/` holding an Ansible inventory (hosts file
and group_vars) and the toolkit's own settings for that environment.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .channels import CHANNEL_RE
from .compliance import DEFAULT_GROUPS, TEST_ID
from .compliance import GROUPS as AUDIT_GROUPS
from .errors import ConfigError, NotFoundError
from .paths import default_report_dir
from .sections import (
    DEFAULT_REGION,
    LOCAL_SEARCH_WORDS,
    AwsSettings,
    NightlySettings,
    RetentionSettings,
    SandboxSettings,
    StateSettings,
    TrustSettings,
)

if TYPE_CHECKING:
    from .rotation.policy import GroupPolicy

SETTINGS_FILE = "goldenimage.yml"
IMAGE_SUITES = "tests/image"  # the image suites: common/, one directory per image, conftest.py
COMMON_SUITE = f"{IMAGE_SUITES}/common"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


M = TypeVar("M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParentSpec(_Model):
    """The image a child image is baked on (`images.<name>.parent`): another image of the same
    environment, taken from its channel, or else the parent's bake in the same run (its
    newest validated image of the current fingerprint)."""

    image: str = Field(description="an image name of this environment")
    channel: str | None = Field(default=None, description="take the parent from this channel")
    env: str | None = Field(default=None, description="must be this environment (parents never cross)")

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and not CHANNEL_RE.match(v):
            raise ValueError(f"channel {v!r}: a lowercase letter, then up to 31 of a-z, 0-9 and '-'")
        return v


class ComplianceSpec(_Model):
    """The compliance audit that gates an image's validation (`images.<name>.compliance`):
    Lynis's test groups to run in the validation boot, and what the image must reach; an
    image under it is quarantined (see compliance.py)."""

    groups: list[str] = Field(default_factory=lambda: list(DEFAULT_GROUPS), min_length=1,
                              description="Lynis test groups to run")
    min_score: int | None = Field(default=None, ge=0, le=100, description="minimum hardening index")
    must_pass: list[str] = Field(default_factory=list, description="Lynis test ids that must pass")

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            if g not in AUDIT_GROUPS:
                raise ValueError(f"unknown lynis test group {g!r} (known: {', '.join(AUDIT_GROUPS)})")
        return v

    @field_validator("must_pass")
    @classmethod
    def _tests(cls, v: list[str]) -> list[str]:
        for t in v:
            if not TEST_ID.match(t):
                raise ValueError(f"{t!r} is not a lynis test id (like SSH-7408)")
        return v


class ImageSpec(_Model):
    """One image the environment can bake: a playbook run against inventory groups."""

    playbook: str = Field(description="playbook path, relative to the project root")
    groups: list[str] = Field(default_factory=list, description="inventory groups of the build host")
    disk_size: str = Field(default="4G", pattern=r"^[0-9]+[MG]$")
    tests: list[str] | None = Field(
        default=None, min_length=1,
        description="image suite directories, relative to the project root "
                    "(default: tests/image/common and tests/image/<image> when it exists)",
    )
    parent: ParentSpec | None = Field(default=None, description="bake on this image of the environment")
    compliance: ComplianceSpec = Field(default_factory=ComplianceSpec, description="the audit that gates validation")

    @field_validator("parent", mode="before")
    @classmethod
    def _parent(cls, v: Any) -> Any:
        return {"image": v} if isinstance(v, str) else v


class BaseImageSpec(_Model):
    """Where the local target's base disk comes from.

    Default: built from the Debian archive with mmdebstrap. Or a cloud image the user
    points at: `url` (http(s) URL or local path) with its `checksum` ("sha256:<hex>").
    """

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    updates: bool = Field(default=True, description="also install from <suite>-updates (same mirror)")
    security_mirror: str = Field(
        default="http://deb.debian.org/debian-security",
        description="where <suite>-security comes from; empty: no security suite",
    )
    packages: list[str] = Field(default_factory=list, description="extra packages in the base")
    size: str = Field(default="3G", pattern=r"^[0-9]+[MG]$")
    url: str | None = None
    checksum: str | None = None

    @field_validator("checksum")
    @classmethod
    def _checksum(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
            raise ValueError("must be 'sha256:' followed by 64 hex digits")
        return v


class QemuSpec(_Model):
    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    cpus: int = Field(default=2, ge=1, le=64)
    memory: int = Field(default=1024, ge=256, description="MiB")
    boot_timeout: int = Field(default=600, ge=10, description="seconds to wait for SSH")


class Settings(_Model):
    target: Literal["local", "aws", "sandbox"] = "local"
    images: dict[str, ImageSpec]
    base: BaseImageSpec = BaseImageSpec()
    qemu: QemuSpec = QemuSpec()
    region: str | None = None
    state: StateSettings | None = Field(default=None, description="a shared registry in a bucket")
    trust: TrustSettings | None = Field(default=None, description="signing and trusted keys (see trust.py)")
    extra: dict[str, Any] = Field(default_factory=dict, description="target-specific settings")


class Environment:
    """A loaded environment: its name, directories and validated settings."""

    def __init__(self, root: Path, name: str, settings: Settings) -> None:
        self.root = root
        self.name = name
        self.settings = settings

    @property
    def directory(self) -> Path:
        return self.root / "inventories" / self.name

    # -- typed sections of `extra:`, each parsed once --------------------------------------
    @functools.cached_property
    def aws(self) -> AwsSettings:
        """`extra.aws`: the AWS target's settings (defaults when absent)."""
        return self._section("aws", AwsSettings)

    @functools.cached_property
    def sandbox(self) -> SandboxSettings:
        """`extra.sandbox`: the loopback AWS API and the fleet it is seeded with."""
        result = self._section("sandbox", SandboxSettings)
        for gname, group in result.seed.groups.items():
            if group.image not in self.settings.images:
                raise ConfigError(
                    f"{self.rel(self.settings_file)}: field extra.sandbox.seed.groups.{gname}.image: "
                    f"unknown image {group.image!r} (known: {', '.join(sorted(self.settings.images))})"
                )
        return result

    @functools.cached_property
    def retention(self) -> RetentionSettings:
        """`extra.retention`: what `invoke gc` keeps, per image name of this environment."""
        result = self._section("retention", RetentionSettings)
        for name in result.images:
            if name not in self.settings.images:
                raise ConfigError(
                    f"{self.rel(self.settings_file)}: field extra.retention.images.{name}: "
                    f"unknown image {name!r} (known: {', '.join(sorted(self.settings.images))})"
                )
        for i, name in enumerate(result.shared_may_go):
            if name not in self.settings.images:
                raise ConfigError(
                    f"{self.rel(self.settings_file)}: field extra.retention.shared_may_go[{i}]: "
                    f"unknown image {name!r} (known: {', '.join(sorted(self.settings.images))})"
                )
        for i, place in enumerate(result.local_search):
            if place not in LOCAL_SEARCH_WORDS and not place.startswith(("/", "~")):
                raise ConfigError(
                    f"{self.rel(self.settings_file)}: field extra.retention.local_search[{i}]: {place!r} is "
                    f"neither an absolute directory nor one of {', '.join(LOCAL_SEARCH_WORDS)}"
                )
        return result

    @functools.cached_property
    def nightly(self) -> NightlySettings:
        """`extra.nightly`: the nightly job's channel, groups to rotate, gc mode, reports."""
        result = self._section("nightly", NightlySettings)
        for i, group in enumerate(result.rotate):
            if group not in self.rotation:
                raise ConfigError(
                    f"{self.rel(self.settings_file)}: field extra.nightly.rotate[{i}]: unknown group "
                    f"{group!r} (groups of extra.rotation.groups: {', '.join(sorted(self.rotation)) or 'none'})"
                )
        return result

    def report_dir(self, override: str | Path | None = None) -> Path:
        """Where the nightly reports are: `override` (--report-dir), else
        `extra.nightly.report_dir`, else the store's (`paths.default_report_dir`); a relative
        path is the project's."""
        out = Path(override or self.nightly.report_dir or default_report_dir(self.name)).expanduser()
        return out if out.is_absolute() else self.root / out

    @functools.cached_property
    def rotation(self) -> dict[str, GroupPolicy]:
        """`extra.rotation.groups`: each group's rotation policy (`rotation.policy`)."""
        from .rotation.policy import load_policies

        return load_policies(self.settings.extra, self.rel(self.settings_file))

    @property
    def parents(self) -> dict[str, str | None]:
        """Image name -> the name of its parent image (None: baked on the base)."""
        return {n: s.parent.image if s.parent else None for n, s in self.settings.images.items()}

    @property
    def bake_parents(self) -> dict[str, str | None]:
        """The parents a bake waits for: a parent taken from a channel is not baked first
        (the child takes whatever the channel points at)."""
        return {n: s.parent.image if s.parent and not s.parent.channel else None
                for n, s in self.settings.images.items()}

    @property
    def region(self) -> str:
        return self.settings.region or DEFAULT_REGION

    def _section(self, key: str, model: type[M]) -> M:
        raw = self.settings.extra.get(key) or {}
        where = f"{self.rel(self.settings_file)}: field extra.{key}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{where}{'.' + loc if loc else ''}: {err['msg']}") from None

    @property
    def settings_file(self) -> Path:
        return self.directory / SETTINGS_FILE

    def image(self, name: str) -> ImageSpec:
        try:
            return self.settings.images[name]
        except KeyError:
            known = ", ".join(sorted(self.settings.images)) or "none"
            raise NotFoundError(
                f"unknown image {name!r} in {self.rel(self.settings_file)} (known: {known})"
            ) from None

    def suites(self, name: str) -> list[Path]:
        """The image suite directories that validate image `name`: its `tests:` list, else
        tests/image/common, then tests/image/<ancestor> for each ancestor (a child keeps its
        parent's promises) and tests/image/<name>, those that exist (an image no longer in
        the settings, validated again, gets the default)."""
        spec = self.settings.images.get(name)
        if spec is not None and spec.tests is not None:
            return [self.root / t for t in spec.tests]
        from .ancestry import lineage

        chain = lineage(self.parents, name) if name in self.settings.images else [name]
        own = [self.root / IMAGE_SUITES / n for n in chain]
        return [self.root / COMMON_SUITE] + [d for d in own if d.is_dir()]

    def compliance(self, name: str) -> ComplianceSpec:
        """The audit that gates image `name` (the default one for an image no longer in the
        settings, validated again)."""
        spec = self.settings.images.get(name)
        return spec.compliance if spec is not None else ComplianceSpec()

    def suite_note(self, name: str) -> str | None:
        """A line for the bake output when image `name` gets the common checks only."""
        spec = self.settings.images.get(name)
        if (spec is None or spec.tests is None) and not (self.root / IMAGE_SUITES / name).is_dir():
            return f"{name}: no {IMAGE_SUITES}/{name}/, so the common checks only"
        return None

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def project_root() -> Path:
    """The project checkout: $GOLDENIMAGE_ROOT, else the directory holding tasks.py."""
    env = os.environ.get("GOLDENIMAGE_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "inventories").is_dir() and (d / "packer").is_dir():
            return d
    raise ConfigError(f"no project here: {here} has no inventories/ and packer/")


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _check_suite_dir(root: Path, rel: str, field: str, entry: str) -> None:
    """A `tests:` entry must name a directory inside the project."""
    path = Path(entry)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{rel}: field {field}: {entry} must be relative to the project root, inside it")
    full = root / path
    if not full.exists():
        raise ConfigError(f"{rel}: field {field}: {entry} does not exist")
    if not full.is_dir():
        raise ConfigError(f"{rel}: field {field}: {entry} is not a directory")


def environment(env: Environment | str, root: Path | None = None) -> Environment:
    """`env` itself when it is already parsed, else the named environment's settings: a
    command takes either, so that a run composing several (nightly) parses them once."""
    return env if isinstance(env, Environment) else load_environment(env, root)


def load_environment(name: str, root: Path | None = None) -> Environment:
    root = root or project_root()
    inv = root / "inventories"
    if not NAME_RE.match(name) or not (inv / name).is_dir():
        known = sorted(p.name for p in inv.iterdir() if (p / SETTINGS_FILE).is_file()) if inv.is_dir() else []
        raise NotFoundError(
            f"unknown environment {name!r}: no inventories/{name}/{SETTINGS_FILE} "
            f"(known: {', '.join(known) or 'none'})"
        )
    path = inv / name / SETTINGS_FILE
    rel = f"inventories/{name}/{SETTINGS_FILE}"
    if not path.is_file():
        raise NotFoundError(f"unknown environment {name!r}: {rel} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{rel}{where}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{rel}: expected a mapping at the top level")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{rel}: field {_field_path(err['loc'])}: {err['msg']}") from None
    for image, spec in settings.images.items():
        if not NAME_RE.match(image):
            raise ConfigError(f"{rel}: field images.{image}: image names are [a-z][a-z0-9-]*")
        if not (root / spec.playbook).is_file():
            raise ConfigError(f"{rel}: field images.{image}.playbook: {spec.playbook} does not exist")
        for i, entry in enumerate(spec.tests or []):
            _check_suite_dir(root, rel, f"images.{image}.tests[{i}]", entry)
    _check_parents(settings, name, rel)
    return Environment(root, name, settings)


def _check_parents(settings: Settings, env: str, rel: str) -> None:
    """Every parent is an image of this environment, and no image is its own ancestor."""
    known = ", ".join(sorted(settings.images))
    for image, spec in sorted(settings.images.items()):
        if spec.parent is None:
            continue
        field = f"images.{image}.parent"
        if spec.parent.env is not None and spec.parent.env != env:
            raise ConfigError(
                f"{rel}: field {field}.env: parent {spec.parent.image!r} of environment "
                f"{spec.parent.env!r}: a parent must be an image of this environment ({env!r}, "
                f"target {settings.target!r}), built and registered where its children are")
        if spec.parent.image not in settings.images:
            raise ConfigError(f"{rel}: field {field}.image: unknown image {spec.parent.image!r} (known: {known})")
    parents = {n: s.parent.image if s.parent else None for n, s in settings.images.items()}
    from .ancestry import find_cycle

    cycle = find_cycle(parents)
    if cycle:
        raise ConfigError(f"{rel}: field images.{cycle[0]}.parent: a parent cycle: {' -> '.join(cycle)}")

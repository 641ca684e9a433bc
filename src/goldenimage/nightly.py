"""`invoke nightly`: drift check -> bake what changed -> promote -> rotate -> gc -> report.

One run per environment at a time (a non-blocking lock under the store). Each step records
its outcome, seconds and detail; a failed step stops what depends on it:

- drift failed -> no bake (and so nothing to promote or rotate);
- an image failed (build, validation) -> that image is not promoted, and no group rotates;
- a promotion failed -> no group rotates;
- gc runs after the rest whatever happened (it re-checks every use itself).

The report (JSON + Markdown) is written whatever happened, to the report directory, to
`$GITHUB_STEP_SUMMARY` when set, and POSTed to the webhook if one is set (its failure is
noted in the report and never changes the exit code).

Drift, cheapest first, per image against its newest validated image:
- the base disk (local, sandbox): the Debian archive vs the base's record
  (`adapters.archive`, `drift`); a drifted base is marked stale, so the bake rebuilds it and
  every image on it gets a new fingerprint;
- every fingerprint input (`invoke fingerprint --against`): templates, playbooks, roles,
  inventory, suites, tool versions and the base identity -- which for AMIs is the base AMI
  the filter resolves to now.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import ancestry, commands, drift, models, nightly_report, pkgdiff
from . import fingerprint as fp
from .adapters import archive, baseimage, webhook
from .errors import ConfigError, GoldenImageError, OperationFailed
from .fsutil import atomic_write_bytes, atomic_write_json, file_lock
from .locks import LockHeld
from .models import VALIDATED, ImageRecord
from .paths import base_cache_dir, store_dir
from .progress import Reporter
from .sections import WebhookSpec
from .settings import Environment, environment
from .targets import ImageRegistry, Target, target_for

Result = dict[str, Any]
BakeImages = Callable[..., Result]  # (env, jobs, reporter, *, images=None, force=None)
GC_WAIT = 600.0  # seconds the gc step waits for another run's gc (one nightly job per leaf image)


# -- the bake step: one function, replaced by goldenimage.family.bake_all once image families land
def _bake_images(env: Environment, jobs: int | None, reporter: Reporter, *,
                 images: list[str] | None = None, force: list[str] | None = None) -> Result:
    """Bake every image of the environment (or `images`, with their parents), parents first,
    independent ones `jobs` at a time (`family.bake_all`), those in `force` rebuilt
    whatever their fingerprint (their packages drifted): {env, ok, images: [{image, state:
    built|skipped|failed|blocked, image_id, status, fingerprint, previous_id, error}]}."""
    from .family import bake_all

    result = bake_all(env, images, jobs, set(force or ()), reporter)
    result.pop("exit_code", None)
    return result


def newest_validated(reg: ImageRegistry, name: str) -> ImageRecord | None:
    return models.newest_validated(reg.list(name))


def lock_path(env_name: str, images: list[str] | None = None) -> Path:
    tag = f"{env_name}-{'-'.join(sorted(images))}" if images else env_name
    return store_dir() / "locks" / f"nightly-{tag}.lock"


@contextlib.contextmanager
def run_lock(env_name: str, target: Target | None = None, images: list[str] | None = None) -> Iterator[None]:
    """The nightly lock of the environment (of `images` in it, for `--image`), not waited
    for: a second run of the same selection stops at once. With shared state (`state:`) also
    the lease `nightly/<env>` (`nightly-images/<env>/<a>.<b>`), so that a second machine's
    run stops too. Runs of different selections (one job per leaf image) go side by side:
    the images they share are serialized by their bake leases, gc by its own."""
    path = lock_path(env_name, images)
    what = f"invoke nightly --env {env_name}" + (f" --image {','.join(sorted(images))}" if images else "")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(path, wait=False))
        except OperationFailed:
            raise OperationFailed(f"another `{what}` is running (it holds {path}); this run did nothing") from None
        if target is not None and target.shared_state() is not None:
            lease = f"nightly-images/{env_name}/{'.'.join(sorted(images))}" if images else f"nightly/{env_name}"
            try:
                stack.enter_context(target.lease(lease, "nightly").held(f"nightly in {env_name}"))
            except LockHeld as held:
                raise OperationFailed(f"{held.message}; this run did nothing") from None
        yield


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Run:
    env: Environment
    target: Target
    reporter: Reporter
    jobs: int | None
    bake_images: BakeImages
    root: Path | None
    names: list[str]
    doc: Result = field(default_factory=dict)
    previous: dict[str, ImageRecord | None] = field(default_factory=dict)
    base_dirs: dict[str, Path] = field(default_factory=dict)  # image -> its base disk's cache dir
    security: set[tuple[str, str]] = field(default_factory=set)
    force: set[str] = field(default_factory=set)  # images whose packages drifted: rebuilt whatever the fingerprint
    get: archive.Fetch = archive.fetch
    stale: dict[Path, str] = field(default_factory=dict)  # base disks to build again, with the reason
    _extra: dict[str, str] | None = None

    @property
    def steps(self) -> list[Result]:
        steps: list[Result] = self.doc["steps"]
        return steps

    def outcome(self, step: str) -> str | None:
        return next((s["outcome"] for s in self.steps if s["step"] == step), None)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Result]:
        """Time a step; a failure inside is recorded in the step, not raised -- so the report
        is still written -- except an interruption (Ctrl-C, SIGTERM), recorded and raised."""
        row: Result = {"step": name, "outcome": nightly_report.DONE, "detail": ""}
        start = time.monotonic()
        try:
            with self.reporter.phase(f"nightly {name}"):
                try:
                    yield row
                except GoldenImageError as exc:
                    row.update(outcome=nightly_report.FAILED, detail=exc.message, exit_code=exc.exit_code)
                    self.reporter.warn(f"nightly {name} failed: {exc.message}")
                except KeyboardInterrupt:
                    row.update(outcome=nightly_report.FAILED, detail="interrupted", exit_code=1)
                    raise
                except Exception as exc:  # a bug: recorded, so that the report still tells what ran
                    what = f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, OSError):
                        what = f"internal error: {what}"
                    row.update(outcome=nightly_report.FAILED, detail=what, exit_code=1)
                    self.reporter.warn(f"nightly {name} failed: {what}")
        finally:
            row["seconds"] = round(time.monotonic() - start, 3)
            self.steps.append(row)

    # -- drift ----------------------------------------------------------------------------
    def check_drift(self, *, plan: bool = False) -> None:
        """Per image (the selected ones and their ancestors): its own packages (its SBOM)
        against the archive indexes of the apt sources it installs from, then its
        fingerprint inputs. A package fault in the archive check is recorded (one line per
        unreadable index, naming the URL) and fails the step, but images that drifted for
        another reason are still baked; those whose only possible reason is the archive are
        `unknown`. With `plan`, nothing is written (no base disk is marked stale)."""
        out: Result = {"drift": False, "bases": [], "images": [], "archive": {}}
        self.doc["drift"] = out
        with self.step("drift") as row:
            reg = self.target.registry()
            parents = self.env.bake_parents
            checked = ancestry.order(parents, self.names)
            manifests: dict[str, Result | None] = {}
            for name in checked:
                prev = self.previous[name] = newest_validated(reg, name)
                manifests[name] = reg.manifest(prev.id) if prev else None
            if self.target.bases is not None:  # another machine may have built or marked a base
                for source in sorted({str((m.get("base") or {}).get("source") or "") for m in manifests.values() if m}):
                    if (directory := baseimage.cached_dir(base_cache_dir(), source)) is not None:
                        self.target.bases.sync(directory.parent, directory.name, self.reporter, publish=not plan)
            installed = {n: drift.installed_from_manifest(m) if m else None for n, m in manifests.items()}
            indexes = archive.Indexes({p.name for pkgs in installed.values() for p in pkgs or []},
                                      lambda url: self.get(self.target.archive_url(url)),
                                      cache=store_dir() / "cache" / "archive", write_cache=not plan)
            items: dict[str, Result] = {}
            for name in checked:
                prev, manifest = self.previous[name], manifests[name]
                item: Result = {"image": name, "previous_id": prev.id if prev else None, "drift": False,
                                "drifted": False, "state": drift.CURRENT, "reasons": [], "packages_checked": 0,
                                "indexes": [], "newer": []}
                items[name] = item
                out["images"].append(item)
                if prev is None or manifest is None:
                    item.update(drift=True, drifted=True, state="rebuild", reasons=["no validated image yet"])
                    continue
                sources = drift.sources_from_manifest(manifest) or self.base_sources(name, manifests)
                pkgs = installed[name]
                arch = drift.image_arch(pkgs or [])
                verdict = drift.check_image(name, pkgs, sources, indexes.of(sources or [], arch))
                item.update({k: v for k, v in verdict.as_dict().items() if k not in ("image", "reasons")})
                reasons = verdict.reasons()
                if verdict.drifted:
                    self.force.add(name)
                    base = self.base_disk_drift(name, manifest, verdict, out)
                else:
                    base = self.base_disk_state(name, manifest, out)
                reasons += base
                parent = parents.get(name)
                if parent in items and items[parent]["drift"]:
                    reasons.append(f"parent {parent} is rebuilt")
                elif not base:
                    # a base disk to build again, or a parent rebuilt: the fingerprint changes with
                    # it, and computing it now would build that base disk (minutes; and --plan
                    # builds nothing)
                    reasons += self.input_drift(name, prev)
                item.update(reasons=reasons, drift=bool(reasons), drifted=verdict.drifted)
                if reasons:
                    item["state"] = "rebuild"
                elif verdict.state == drift.UNKNOWN:
                    item["note"] = verdict.note or "an index of its sources could not be read"
            if not plan:
                for directory, reason in self.stale.items():
                    if baseimage.stale_reason(directory) is None:
                        baseimage.mark_stale(directory, reason, _now(), self.target.bases)
            self.security |= {(n, v) for (s, _), idx in indexes.read.items() if s.security and idx
                              for n, entries in idx.items() for v, _, _ in entries}
            out["drift"] = any(i["drift"] for i in out["images"])
            out["archive"] = {"indexes": sorted({x for i in out["images"] for x in i.get("indexes", [])}),
                              "bytes_read": indexes.bytes_read, "from_cache": indexes.cached,
                              "errors": sorted(indexes.errors.values())}
            drifted = [i["image"] for i in out["images"] if i["drift"]]
            unknown = [i["image"] for i in out["images"] if i["state"] == drift.UNKNOWN]
            row["detail"] = (f"drift: {', '.join(drifted)}" if drifted else "no drift") + (
                f"; unknown: {', '.join(unknown)}" if unknown else "")
            if indexes.errors:
                raise OperationFailed(f"{row['detail']}; " + "; ".join(sorted(indexes.errors.values())))

    def base_sources(self, name: str, manifests: dict[str, Result | None]) -> list[drift.Source] | None:
        """An image that records no apt sources (made before they were recorded) installs
        from those of the base disk at the root of its family, when that is known."""
        for n in reversed(ancestry.lineage(self.env.bake_parents, name)):
            m = manifests.get(n)
            if m is None:
                continue
            record = self._base_record(m)
            if record and record.get("archive", {}).get("sources"):
                return [drift.Source.from_dict(s) for s in record["archive"]["sources"]]
        return None

    def _base_record(self, manifest: Result) -> Result | None:
        source = str((manifest.get("base") or {}).get("source") or "")
        directory = baseimage.cached_dir(base_cache_dir(), source) if source else None
        if directory is None:
            return None
        return baseimage.read_record(directory)

    def base_disk_state(self, name: str, manifest: Result, out: Result) -> list[str]:
        """A base disk that is gone or already marked stale: the bake builds it again."""
        source = str((manifest.get("base") or {}).get("source") or "")
        directory = baseimage.cached_dir(base_cache_dir(), source) if source else None
        if directory is None:
            return []
        self.base_dirs[name] = directory
        entry: Result = {"base": source, "drift": False, "reason": ""}
        if baseimage.read_record(directory) is None:
            entry.update(drift=True, reason="no longer cached: the bake builds it again")
        elif (stale := baseimage.stale_reason(directory)) is not None:
            entry.update(drift=True, reason=f"already marked stale: {stale}")
        if entry["drift"] and source not in {b["base"] for b in out["bases"]}:
            out["bases"].append(entry)
        return [f"base {source}: {entry['reason']}"] if entry["drift"] else []

    def base_disk_drift(self, name: str, manifest: Result, verdict: drift.ImageDrift, out: Result) -> list[str]:
        """A newer version of a package the base disk itself holds: the disk is marked stale
        so that the bake builds it again from the archive (its roles would keep the old one)."""
        source = str((manifest.get("base") or {}).get("source") or "")
        directory = baseimage.cached_dir(base_cache_dir(), source) if source else None
        record = baseimage.read_record(directory) if directory else None
        if directory is None or record is None:
            return self.base_disk_state(name, manifest, out) if directory else []
        self.base_dirs[name] = directory
        on_disk = {str(p["name"]) for p in (record.get("archive") or {}).get("installed", [])}
        newer = [n for n in verdict.newer if n.name in on_disk]
        if not newer:
            return []
        reason = drift.describe(newer)
        self.stale.setdefault(directory, reason)  # marked once every image is checked (not by --plan)
        if source not in {b["base"] for b in out["bases"]}:
            out["bases"].append({"base": source, "drift": True, "reason": reason,
                                 "newer": [n.as_dict() for n in newer]})
        return [f"base {source}: {reason}: rebuilt from the archive"]

    def resolved_extra(self, env: Environment, image: str, reporter: Reporter) -> dict[str, str]:
        """`commands.bake_extra` once per run: the base identity and tool versions are the
        environment's, the same for every image (a child's base is set from its parent)."""
        if self._extra is None:
            self._extra = commands.bake_extra(env, image, reporter)
        return dict(self._extra)

    def input_drift(self, name: str, prev: ImageRecord) -> list[str]:
        """Reasons from `invoke fingerprint --against <previous>`; [] when every input is the same."""
        try:
            res = commands.fingerprint_cmd(self.env, name, False, prev.id, self.reporter, root=self.root,
                                           resolve_extra=self.resolved_extra)
        except ConfigError as exc:
            if "no fingerprint_inputs" not in exc.message:
                raise
            return [f"previous image {prev.id} has no recorded inputs to compare"]
        against = res["images"][0]["against"]
        if against["same"]:
            return []
        base = prev.extra.get("base_ami") if isinstance(prev.extra.get("base_ami"), str) else None
        return nightly_report.input_reasons(against, base)

    # -- bake, promote, rotate, gc --------------------------------------------------------
    def bake(self) -> None:
        self.doc["bake"] = {"ok": True, "images": []}
        with self.step("bake") as row:
            if self.outcome("drift") != nightly_report.DONE and not self.doc["drift"].get("archive"):
                row.update(outcome=nightly_report.SKIPPED, detail="the drift check failed")
                return
            if not self.doc["drift"]["drift"]:
                row.update(outcome=nightly_report.SKIPPED, detail="no drift: nothing to bake")
                return
            chosen = None if self.names == sorted(self.env.settings.images) else list(self.names)
            forced = sorted(self.force & {i["image"] for i in self.doc["drift"]["images"] if i["drift"]})
            extra: Result = {"force": forced} if forced else {}
            result = self.bake_images(self.env, self.jobs, self.reporter, images=chosen, **extra)
            self.doc["bake"] = result
            for img in result["images"]:
                if not img.get("previous_id") and self.previous.get(img["image"]):
                    img["previous_id"] = self.previous[img["image"]].id  # type: ignore[union-attr]
            bad = [i for i in result["images"] if i["state"] in ("failed", "blocked")]
            built = [i["image"] for i in result["images"] if i["state"] == "built"]
            row["detail"] = (f"built {', '.join(built)}" if built else "nothing new") + (
                f"; failed {', '.join(i['image'] for i in bad)}" if bad else "")
            if bad or not result.get("ok", True):
                raise OperationFailed(row["detail"])

    def new_images(self) -> list[Result]:
        return [i for i in self.doc.get("bake", {}).get("images", [])
                if i.get("state") == "built" and i.get("status") == VALIDATED and i.get("image_id")]

    def promote(self, channel: str) -> None:
        self.doc["promotions"] = []
        with self.step("promote") as row:
            new = self.new_images()
            if not new:
                row.update(outcome=nightly_report.SKIPPED, detail="no newly validated image")
                return
            failed = []
            for img in new:
                entry: Result = {"image": img["image"], "image_id": img["image_id"], "channel": channel}
                try:
                    res = commands.promote(self.env, img["image_id"], channel, self.reporter, root=self.root)
                except GoldenImageError as exc:
                    entry.update(outcome="failed", error=exc.message)
                    failed.append(img["image"])
                else:
                    entry.update(outcome="done", previous=res.get("previous"), changed=res.get("changed"))
                self.doc["promotions"].append(entry)
            row["detail"] = f"{len(new) - len(failed)} promoted to {channel}" + (
                f"; failed: {', '.join(failed)}" if failed else "")
            if failed:
                raise OperationFailed(row["detail"])

    def rotate(self, groups: list[str], channel: str) -> None:
        self.doc["rotation"] = []
        with self.step("rotate") as row:
            if not groups:
                row.update(outcome=nightly_report.SKIPPED, detail="no group listed in extra.nightly.rotate")
                return
            blocked = [s for s in ("bake", "promote") if self.outcome(s) == nightly_report.FAILED]
            promoted = {p["image"] for p in self.doc.get("promotions", []) if p["outcome"] == "done"}
            for group in groups:
                policy = self.env.rotation[group]
                if policy.image and policy.image not in self.names:
                    continue  # another image's group (--image): its own run rotates it
                entry: Result = {"group": group, "image": policy.image, "channel": channel}
                self.doc["rotation"].append(entry)
                if blocked:
                    entry.update(outcome="skipped", detail=f"not rotated: {' and '.join(blocked)} failed")
                    continue
                if policy.image not in promoted:
                    entry.update(outcome="skipped", detail=f"no new {policy.image or 'image'} on {channel}")
                    continue
                from .rotation.commands import rotate_command

                try:
                    res = rotate_command(self.reporter, env=self.env, group=group, channel=channel)
                except GoldenImageError as exc:
                    entry.update(outcome="failed", detail=exc.message, exit_code=exc.exit_code)
                    continue
                code = int(res.get("exit_code", 0))
                entry.update(outcome="done" if code == 0 else "failed",
                             detail=str(res.get("reason") or res.get("outcome") or ""),
                             to_image=res.get("image_id") or res.get("to_image"), exit_code=code)
            failed = [e for e in self.doc["rotation"] if e["outcome"] == "failed"]
            done = [e["group"] for e in self.doc["rotation"] if e["outcome"] == "done"]
            row["detail"] = (f"rotated {', '.join(done)}" if done else "nothing rotated") + (
                f"; failed {', '.join(e['group'] for e in failed)}" if failed else "")
            if blocked:
                row.update(outcome=nightly_report.SKIPPED)
            if failed:
                err = ConfigError(row["detail"]) if any(e.get("exit_code") == 2 for e in failed) \
                    else OperationFailed(row["detail"])
                raise err

    def gc(self, mode: str) -> None:
        self.doc["gc"] = {"mode": mode}
        with self.step("gc") as row:
            if mode == "off":
                row.update(outcome=nightly_report.SKIPPED, detail="extra.nightly.gc is off")
                return
            from . import gc

            try:
                res = gc.gc(self.env, mode == "apply", self.reporter, root=self.root, lock_wait=GC_WAIT)
            except GoldenImageError as exc:
                self.doc["gc"]["error"] = exc.message
                raise
            applied = {a["image_id"]: a for a in res.get("applied", [])}
            changes = [{"image_id": d["image_id"], "action": d["action"], "reason": d.get("reason", ""),
                        "reclaim_bytes": d.get("reclaim_bytes", 0),
                        **({"outcome": applied[d["image_id"]]["outcome"],
                            "detail": applied[d["image_id"]].get("detail", "")} if d["image_id"] in applied else {})}
                       for d in [*res.get("decisions", []), *res.get("leftovers", [])] if d.get("action") != "keep"]
            self.doc["gc"].update(changes=changes, reclaim_bytes=res.get("reclaim_bytes", 0),
                                  reclaimed_bytes=res.get("reclaimed_bytes", 0),
                                  kept=sum(1 for d in res.get("decisions", []) if d.get("action") == "keep"))
            row["detail"] = f"{mode}: {len(changes)} change(s)"
            if int(res.get("exit_code", 0)):
                raise OperationFailed(f"gc --apply: {sum(1 for c in changes if c.get('outcome') != 'done')} "
                                      "change(s) failed or were skipped")

    # -- the report's image details -------------------------------------------------------
    def image_details(self) -> None:
        reg = self.target.registry()
        rows: list[Result] = []
        for img in self.doc.get("bake", {}).get("images", []):
            row = dict(img)
            rows.append(row)
            if not img.get("image_id") or img.get("state") not in ("built", "failed"):
                continue
            try:
                new = reg.manifest(img["image_id"])
            except GoldenImageError:
                continue  # a failed build registered nothing
            row["validation"] = {k: v for k, v in (new.get("validation") or {}).items()
                                 if k in ("status", "passed", "failed", "errors", "failures")} or None
            prev_id = img.get("previous_id")
            if not prev_id:
                row["packages_note"] = "no previous image to compare with"
                continue
            old = reg.manifest(prev_id)
            old_inputs, new_inputs = old.get("fingerprint_inputs"), new.get("fingerprint_inputs")
            if isinstance(old_inputs, dict) and isinstance(new_inputs, dict):
                d = fp.diff(old_inputs, new_inputs)
                row["inputs_changed"] = nightly_report.input_reasons({**d, "now": {}}) if any(d.values()) else []
            row["packages"] = self.package_diff(img["image"], old, new)
            if row["packages"] is None:
                row["packages_note"] = "a manifest has no package list"
        self.doc["images"] = rows

    def package_diff(self, name: str, old: Result, new: Result) -> Result | None:
        a, b = pkgdiff.packages_from_manifest(old), pkgdiff.packages_from_manifest(new)
        if a is None or b is None:
            return None
        sources: dict[str, str] = {}
        directory = self.base_dirs.get(name)
        record = baseimage.read_record(directory) if directory else None
        arch_record = (record or {}).get("archive") or {}
        for p in arch_record.get("installed", []):
            sources[str(p["name"])] = str(p.get("source") or p["name"])
        for m in (old, new):  # the images' own SBOMs name the source packages
            for pkg in drift.installed_from_manifest(m) or []:
                if pkg.source:
                    sources[pkg.name] = pkg.source
        first = pkgdiff.diff(a, b, sources=sources, security=self.security)
        upgraded = {c["name"] for c in first["changes"] if c["kind"] in ("upgraded", "added")}
        if upgraded and not self.security and arch_record.get("sources"):
            try:  # which new versions came from the security suite: its index, read once
                self.security |= archive.security_versions(
                    [drift.Source.from_dict(s) for s in arch_record["sources"]], str(arch_record.get("arch") or "amd64"),
                    upgraded)
            except OperationFailed as exc:
                self.reporter.warn(f"cannot read the security suite's index to mark updates: {exc}")
                return first
            return pkgdiff.diff(a, b, sources=sources, security=self.security)
        return first


def nightly(env: Environment | str, reporter: Reporter, *, images: list[str] | None = None, jobs: int | None = None,
            report_dir: str | None = None,
            webhook_url: str | None = None, root: Path | None = None,
            bake_images: BakeImages | None = None, plan: bool = False,
            fetch: archive.Fetch | None = None) -> Result:
    """The nightly job; the result is the report (with `exit_code`). With `plan`, the drift
    check alone: what tonight's run would rebuild and why; nothing is baked, written or
    recorded (the run lock is taken and released, so a plan never overlaps a run)."""
    env = environment(env, root)
    cfg = env.nightly  # bad settings: exit 2 before anything runs
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: {jobs} must be at least 1")
    for name in images or []:
        env.image(name)  # unknown: exit 2 naming the settings file
    names = sorted(set(images)) if images else sorted(env.settings.images)
    hook = cfg.webhook
    if webhook_url:
        try:
            hook = (hook.model_copy(update={"url": WebhookSpec(url=webhook_url).url}) if hook
                    else WebhookSpec(url=webhook_url))
        except ValidationError:
            raise ConfigError(f"--webhook: {webhook_url!r} is not an http(s) URL") from None
    out_dir = env.report_dir(report_dir)
    target = target_for(env)
    if plan:
        with run_lock(env.name, target, names if images else None):
            return plan_run(_Run(env, target, reporter, jobs, bake_images or _bake_images, root, names,
                                 get=fetch or archive.fetch))
    with run_lock(env.name, target, names if images else None):
        started = datetime.now(UTC)
        run = _Run(env, target, reporter, jobs, bake_images or _bake_images, root, names,
                   get=fetch or archive.fetch)
        run.doc.update(env=env.name, target=target.name, images_selected=names, started=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       settings=cfg.model_dump(exclude={"webhook"}), steps=[])
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        tag = f"{env.name}-{'-'.join(names)}" if images else env.name
        run.doc["report"] = {"json": str(out_dir / f"nightly-{tag}-{stamp}.json"),
                             "markdown": str(out_dir / f"nightly-{tag}-{stamp}.md")}
        interrupted: KeyboardInterrupt | None = None
        try:
            run.check_drift()
            run.bake()
            run.promote(cfg.channel)
            run.rotate(list(cfg.rotate), cfg.channel)
            run.gc(cfg.gc)
        except KeyboardInterrupt as exc:  # stopped: the report says how far it got
            interrupted = exc
        with run.step("report") as row:
            run.image_details()
            row["detail"] = run.doc["report"]["json"]
        doc = run.doc
        doc["finished"] = _now()
        doc["exit_code"] = nightly_report.exit_code(doc["steps"])
        doc["ok"] = doc["exit_code"] == 0
        doc["streak"] = record_streak(tag, doc["ok"], cfg.failure_streak, doc["finished"],
                                      doc["report"]["json"], reporter)
        if doc["streak"]["alarm"]:
            doc["exit_code"] = nightly_report.STREAK_EXIT
        doc["summary"] = nightly_report.headline(doc)
        doc["webhook"] = {"outcome": "off"}
        if interrupted is not None:
            write_report(doc, Path(doc["report"]["json"]), Path(doc["report"]["markdown"]), reporter)
            raise interrupted
        if hook is not None:
            doc["webhook"] = webhook.post(doc, hook)
            if doc["webhook"]["outcome"] != "sent":
                reporter.warn(f"webhook {hook.url}: {doc['webhook']['error']} (the job's result is unchanged)")
        write_report(doc, Path(doc["report"]["json"]), Path(doc["report"]["markdown"]), reporter)
        doc["site"] = regenerate_site(env, out_dir, reporter)
        return doc


def regenerate_site(env: Environment, report_dir: Path, reporter: Reporter) -> Result:
    """The registry site (`invoke site`, its default directory) with this run in it; a
    failure is a warning and never changes the job's result."""
    from . import site

    try:
        made = site.site(env, None, reporter, root=env.root, report_dir=report_dir)
    except (GoldenImageError, OSError) as exc:
        reporter.warn(f"cannot write the registry site: {exc} (the job's result is unchanged)")
        return {"outcome": "failed", "error": str(exc)}
    return {"outcome": "written", "index": made["index"]}


def streak_path(tag: str) -> Path:
    return store_dir() / "nightly" / f"streak-{tag}.json"


def record_streak(tag: str, ok: bool, limit: int, at: str, report: str, reporter: Reporter) -> Result:
    """Consecutive failed runs of the environment (`tag`: its name, or with --image its name
    and the images, as the report files are named: one CI job per family keeps its own
    count), this one included (0 after a good run); `alarm` once it reaches `limit`
    (extra.nightly.failure_streak)."""
    path = streak_path(tag)
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        old = {}
    failed = 0 if ok else int(old.get("failed", 0) or 0) + 1
    doc: Result = {"failed": failed, "limit": limit, "alarm": failed >= limit,
                   "since": (old.get("since") or at) if failed else None,
                   "last_ok": at if ok else old.get("last_ok"), "last_report": report}
    try:
        atomic_write_json(path, doc)
    except OSError as exc:
        reporter.warn(f"cannot record the failure streak in {path}: {exc}")
    return doc


def plan_run(run: _Run) -> Result:
    """`nightly --plan`: the drift check, as a report of what the run would do."""
    run.doc.update(env=run.env.name, target=run.target.name, images_selected=run.names, plan=True,
                   started=_now(), steps=[])
    run.check_drift(plan=True)
    d = run.doc["drift"]
    images = [{"image": i["image"], "previous_id": i.get("previous_id"), "rebuild": i["drift"],
               "state": i["state"], "drifted": i.get("drifted", False), "reasons": i.get("reasons", []),
               "packages_checked": i.get("packages_checked", 0), "indexes": i.get("indexes", []),
               "newer": i.get("newer", []), "unreadable": i.get("unreadable", []),
               **({"note": i["note"]} if i.get("note") else {})} for i in d.get("images", [])]
    step = run.steps[0] if run.steps else {}
    failed = step.get("outcome") == nightly_report.FAILED
    return {"env": run.env.name, "target": run.target.name, "plan": True, "images": images,
            "archive": d.get("archive", {}), "bases": d.get("bases", []),
            "rebuild": [i["image"] for i in images if i["rebuild"]],
            "error": step.get("detail") if failed else None,
            "exit_code": int(step.get("exit_code", 1)) if failed else 0}


def human_plan(r: Result) -> list[str]:
    a = r.get("archive") or {}
    lines = [f"nightly --plan {r.get('env')}: " + (f"would rebuild {', '.join(r['rebuild'])}" if r.get("rebuild")
                                                   else "would rebuild nothing")]
    for i in r.get("images", []):
        what = "REBUILD" if i["rebuild"] else i["state"]
        lines.append(f"  {i['image']:<10} {what:<8} {i['packages_checked']} packages against "
                     f"{len(i['indexes'])} index(es)" + (f" ({i['note']})" if i.get("note") else ""))
        lines += [f"      {reason}" for reason in i.get("reasons", [])]
    for idx in a.get("indexes", []):
        lines.append(f"  index {idx}")
    lines += [f"  error: {e}" for e in a.get("errors", [])]
    lines.append(f"  {a.get('bytes_read', 0)} index bytes read")
    return lines


def write_report(doc: Result, json_path: Path, md_path: Path, reporter: Reporter) -> None:
    """The JSON and Markdown files, and the Markdown appended to $GITHUB_STEP_SUMMARY."""
    text = nightly_report.markdown(doc)
    try:
        atomic_write_json(json_path, doc)
        atomic_write_bytes(md_path, text.encode())
    except OSError as exc:
        reporter.warn(f"cannot write the report to {json_path.parent}: {exc}")
        doc["exit_code"] = doc["exit_code"] or 1
        doc["ok"] = False
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            reporter.warn(f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): {exc}")


def human_nightly(r: Result) -> list[str]:
    if r.get("plan"):
        return human_plan(r)
    lines = [f"nightly {r.get('env')}: {r.get('summary') or nightly_report.headline(r)}"]
    for s in r.get("steps", []):
        lines.append(f"  {s['step']:<8} {s['outcome']:<8} {s.get('seconds', 0):7.1f}s  {s.get('detail', '')}")
    hook = r.get("webhook") or {}
    if hook.get("outcome") == "failed":
        lines.append(f"  webhook failed after {hook.get('attempts')} attempt(s): {hook.get('error')}")
    if r.get("report"):
        lines.append(f"report: {r['report']['json']}")
        lines.append(f"        {r['report']['markdown']}")
    if (r.get("site") or {}).get("outcome") == "written":
        lines.append(f"site:   {r['site']['index']}")
    return lines

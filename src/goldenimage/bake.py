"""`invoke bake`: fingerprint → (skip if a validated image has it) → build → validate → register.

The artifact that is validated is the artifact that is registered: the final qcow2, after
the hygiene role, booted through an overlay with a fresh key. Everything a bake makes lives
in a private workspace of the store until the last step moves it into place, so an
interrupted or failed bake registers nothing and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, fingerprint, hostsetup, sbom, timing
from .adapters import baseimage, packer, proc, qemu, testinfra
from .errors import ConfigError, GoldenImageError, TemplateError, ValidationFailed
from .fsutil import atomic_write_json, file_lock, sha256_file
from .paths import base_cache_dir, store_dir
from .progress import Reporter
from .settings import Environment, load_environment
from .store import ImageRecord, LocalStore

BUILD_USER = "gi"
TIMINGS = "timings.json"  # beside build.log: where the build's time went (goldenimage.timing)
BAKE_TOOLS = ("qemu-system-x86_64", "qemu-img", "genisoimage", "ssh", "ssh-keygen")  # packages: hostsetup.TOOLS


@dataclass(frozen=True)
class Tools:
    packer: packer.Packer
    ansible: str
    qemu: str

    def versions(self) -> dict[str, str]:
        return {"packer": self.packer.version_text, "ansible-core": self.ansible, "qemu": self.qemu,
                "goldenimage": __version__}


def detect_tools(*, local: bool = True) -> Tools:
    """The host tools of a bake; an AMI bake (`local=False`) boots nothing here."""
    for tool in BAKE_TOOLS if local else ("ssh", "ssh-keygen"):
        proc.which(tool, hostsetup.TOOLS[tool][0])
    from ansible.release import __version__ as ansible_version

    return Tools(packer.Packer.detect(), ansible_version, qemu.qemu_version() if local else "")


def fingerprint_extra(base_identity: str, packer_version: str, ansible_version: str) -> dict[str, str]:
    """The fingerprint inputs that are not files: the base identity and the tool versions."""
    return {"base:image": base_identity, "tool:packer": packer_version, "tool:ansible-core": ansible_version}


def pick_image(env: Environment, image: str | None) -> str:
    if image:
        env.image(image)
        return image
    names = sorted(env.settings.images)
    if len(names) == 1:
        return names[0]
    if "web" in names:
        return "web"
    raise ConfigError(f"{env.rel(env.settings_file)} defines several images ({', '.join(names)}): "
                      "choose one with --image")


def git_state(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class NewImage:
    """The image a bake is making: what the build stamps into it and validation expects."""

    name: str
    fingerprint: str
    created: dt.datetime

    @classmethod
    def start(cls, name: str, fingerprint: str) -> NewImage:
        return cls(name, fingerprint, now_utc())

    @property
    def id(self) -> str:
        return f"{self.name}-{self.created:%Y%m%d-%H%M%S}-{self.fingerprint[:8]}"

    @property
    def build_time(self) -> str:
        return self.created.isoformat().replace("+00:00", "Z")

    def facts(self) -> dict[str, str]:
        return {"image_name": self.name, "image_id": self.id, "fingerprint": self.fingerprint,
                "build_time": self.build_time}


def packer_build(env: Environment, img: NewImage, tools: Tools, ws: Path, source: str, reporter: Reporter,
                 *, grace: float = 90, **values: Any) -> None:
    """Stage the templates and the inventory in `ws`, write the build's variables (`values`
    are the source's own), then `packer validate` and `packer build -only=source`; Packer's
    log is `ws/image/build.log`, where each Packer step and Ansible task took is
    `ws/image/timings.json`."""
    staged = tools.packer.stage(env.root / "packer", ws / "packer")
    shutil.copytree(env.directory, ws / "inventory")
    atomic_write_json(ws / "extra-vars.json", {f"goldenimage_{k}": v for k, v in img.facts().items()})
    var_file = ws / "build.pkrvars.json"
    atomic_write_json(var_file, common_packer_vars(env, img.name, ws, image_id=img.id,
                                                   fingerprint=img.fingerprint, **values))
    tools.packer.validate(staged, var_file, source, rel_to=env.root, work=ws)
    steps: list[tuple[float, str]] = []
    try:
        tools.packer.build(staged, var_file, source, reporter=reporter, work=ws,
                           log=ws / "image" / "build.log", grace=grace, steps=steps)
    finally:  # kept with the image, or with a failed build's logs
        times = ws / packer.TASK_TIMES
        tasks = timing.task_times(times.read_text().splitlines() if times.is_file() else [])
        atomic_write_json(ws / "image" / TIMINGS, timing.summary(tasks, timing.step_times(steps, time.time())))


@contextlib.contextmanager
def logs_kept_on_failure(store: LocalStore, ws: Path, image_id: Callable[[], str]) -> Iterator[None]:
    """A failed bake registers nothing, but keeps its logs (`keep_logs`); an error of ours
    then says where they are."""
    try:
        yield
    except BaseException as err:
        logs = keep_logs(store, ws, image_id())
        if logs is not None and isinstance(err, GoldenImageError):
            err.message += f" (logs: {logs})"
        raise


def bake(env_name: str, image: str | None, force: bool, reporter: Reporter) -> dict[str, Any]:
    env = load_environment(env_name)
    name = pick_image(env, image)
    if env.settings.target == "aws":
        from .aws.bake import bake_ami

        return bake_ami(env, name, force, reporter, detect_tools(local=False))
    tools = detect_tools()
    remote = None
    if env.settings.target == "sandbox":
        from .aws.context import registry_for

        remote = registry_for(env)  # a sandbox that is not running is an error now, not after the bake
    store = LocalStore(store_dir())
    result: dict[str, Any] = {"image": name, "env": env.name, "skipped": False}

    lock = store.root / "locks" / f"{name}.lock"

    def waiting() -> None:
        reporter.info(f"another bake of {name!r} is running; waiting for it to finish")

    with file_lock(lock, on_wait=waiting):
        check_templates(env, name, tools)
        with reporter.phase("base", "base disk image"):
            base = baseimage.ensure_base_image(env.settings.base, base_cache_dir(), reporter)
            accel = qemu.choose_accelerator(env.settings.qemu.accelerator, base.path, base_cache_dir(), reporter)
            reporter.info(f"    base {base.identity[:19]}… ({base.source}); accelerator {accel}")

        with reporter.phase("fingerprint"):
            inputs = fingerprint.collect(env.root, env, name,
                                         extra=fingerprint_extra(base.identity, tools.packer.version_text,
                                                                 tools.ansible))
            fp = fingerprint.compute(inputs)
            reporter.info(f"    fingerprint {fp}")
        result["fingerprint"] = fp

        if not force:
            hit = store.find_by_fingerprint(name, fp)
            if hit is not None and remote is not None and _revoked_remotely(remote, hit):
                reporter.warn(f"{hit.id} is revoked in {env.name}: it may not be used again, baking anew")
                hit = None
            if hit is not None:
                reporter.info(f"up to date: {hit.id}")
                result.update(skipped=True, image_id=hit.id, status=hit.status,
                              artifact=str(store.image_dir(hit.id) / hit.artifact),
                              durations=reporter.durations)
                if remote is not None:
                    result["registered"] = _register_remote(env, remote, store, hit, reporter)
                return result

        with store.workspace() as ws:
            with logs_kept_on_failure(store, ws, lambda: str(result.get("image_id", "unknown"))):
                record, manifest = _build_validate(env, name, base, accel, tools,
                                                   inputs, fp, ws, reporter, result)
            with reporter.phase("register"):
                manifest["durations"] = dict(reporter.durations)
                store.put(record, manifest, ws / "image")
            result.update(image_id=record.id, status=record.status,
                          artifact=str(store.image_dir(record.id) / record.artifact),
                          durations=reporter.durations, slowest_tasks=manifest["timings"]["slowest_tasks"])
            if remote is not None and record.status == "validated":
                result["registered"] = _register_remote(env, remote, store, record, reporter)
            if record.status != "validated":
                exc = ValidationFailed(
                    f"image {record.id} failed validation ({len(manifest['validation']['failures'])} "
                    f"failing checks); quarantined at {store.image_dir(record.id)}",
                    manifest["validation"]["failures"],
                )
                exc.result = {**result, "failures": manifest["validation"]["failures"]}
                raise exc
            return result


def keep_logs(store: LocalStore, ws: Path, image_id: str) -> Path | None:
    """A failed bake registers nothing, but its logs are kept for the post-mortem."""
    logs = {"build.log": ws / "image" / "build.log", "build-serial.log": ws / "build-serial.log",
            "validate-serial.log": ws / "validate" / "serial.log"}
    found = {name: path for name, path in logs.items() if path.is_file()}
    if not found:
        return None
    dest = store.root / "failed" / image_id
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        shutil.copy2(path, dest / name)
    return dest


def _revoked_remotely(remote: Any, local: ImageRecord) -> bool:
    """Whether the AMI that stands for the local image `local` has been revoked."""
    return any(r.status == "revoked" and r.extra.get("local_id") == local.id for r in remote.list(local.name))


def _register_remote(env: Environment, remote: Any, store: LocalStore, rec: ImageRecord,
                     reporter: Reporter) -> dict[str, Any]:
    """Sandbox target: the locally validated image also stands as an AMI there (once)."""
    existing = remote.find_by_fingerprint(rec.name, rec.fingerprint)
    if existing is not None:
        return {"image_id": existing.id, "new": False}
    from .aws import commands as aws_commands

    with reporter.phase("register-remote", f"register {rec.id} in {env.name}"):
        done = aws_commands.register_baked_image(env, rec, store.manifest(rec.id), reporter)
    return {"image_id": done["image"]["id"], "new": True}


def check_templates(env: Environment, name: str, tools: Tools) -> None:
    """`packer validate` the staged templates with placeholder values: Packer's own file:line
    for a malformed template, before any slow step."""
    with tempfile.TemporaryDirectory(prefix="goldenimage-check-") as tmp:
        work = Path(tmp)
        staged = tools.packer.stage(env.root / "packer", work / "packer")
        var_file = work / "check.pkrvars.json"
        (work / "inventory").mkdir()
        key = work / "check_key"
        qemu.make_key(key)
        placeholders = {"fingerprint": "0" * 64, "image_id": f"{name}-check", "ssh_private_key_file": str(key),
                        "base_image": str(work / "base.qcow2"), "base_image_checksum": "sha256:" + "0" * 64}
        atomic_write_json(var_file, common_packer_vars(env, name, work, **placeholders))
        tools.packer.validate(staged, var_file, "qemu.local", rel_to=env.root, work=work)


def common_packer_vars(env: Environment, name: str, ws: Path, **values: Any) -> dict[str, Any]:
    """The variables of every build (both sources) for workspace `ws`; `values` add or override."""
    spec, q = env.image(name), env.settings.qemu
    doc: dict[str, Any] = {
        "image_name": name, "playbook": str(env.root / spec.playbook),
        "inventory_directory": str(ws / "inventory"), "groups": spec.groups,
        "extra_vars_file": str(ws / "extra-vars.json"), "roles_path": str(env.root / "roles"),
        "manifest_path": str(ws / "packer-manifest.json"), "ssh_username": BUILD_USER,
        "output_directory": str(ws / "output"), "disk_size": spec.disk_size,
        "cpus": q.cpus, "memory": q.memory, "ssh_timeout": f"{q.boot_timeout}s",
        "serial_log": str(ws / "build-serial.log"),
    }
    doc.update(values)
    return doc


def _build_validate(
    env: Environment, name: str, base: baseimage.BaseImage,
    accel: str, tools: Tools, inputs: list[fingerprint.FingerprintInput], fp: str, ws: Path,
    reporter: Reporter, result: dict[str, Any],
) -> tuple[ImageRecord, dict[str, Any]]:
    root = env.root
    img = NewImage.start(name, fp)
    image_id, created, build_time = img.id, img.created, img.build_time
    result["image_id"] = image_id
    image_dir = ws / "image"
    image_dir.mkdir()

    with reporter.phase("build", f"packer build of {name} ({image_id})"):
        key = ws / "build_key"
        pubkey = qemu.make_key(key)
        seeds = qemu.seed_files(ws / "seed", BUILD_USER, pubkey, name)
        packer_build(env, img, tools, ws, "qemu.local", reporter, base_image=str(base.path),
                     base_image_checksum=base.identity, accelerator=accel, ssh_private_key_file=str(key),
                     seed_files=[str(s) for s in seeds])
        key.unlink()
        pk_manifest = packer.read_manifest(ws / "packer-manifest.json")
        artifact = ws / "output" / "disk.qcow2"
        if not artifact.is_file():
            raise TemplateError(f"packer reported success but {artifact.name} is missing")
        shutil.move(str(artifact), image_dir / "disk.qcow2")
        shutil.copy2(ws / "packer-manifest.json", image_dir / "packer-manifest.json")

    with reporter.phase("validate", "boot the final image and run tests/image"):
        suite, packages = validate_disk(env, image_dir / "disk.qcow2", accel, img.facts(), ws / "validate",
                                        reporter)
        shutil.copy2(suite.junit, image_dir / "junit.xml")

    status = "validated" if suite.ok else "quarantined"
    manifest: dict[str, Any] = {
        "id": image_id, "name": name, "env": env.name, "fingerprint": fp,
        "fingerprint_inputs": fingerprint.as_manifest(inputs),
        "created": build_time, "status": status, "artifact": "disk.qcow2",
        "artifact_sha256": sha256_file(image_dir / "disk.qcow2"),
        "base": {"source": base.source, "identity": base.identity, "path": str(base.path)},
        "tools": tools.versions(), "accelerator": accel, "git": git_state(root),
        "built_by": f"{getpass.getuser()}@{socket.gethostname()}",
        "packages": [{"name": n, "version": v, "arch": a} for n, v, a in packages],
        "sbom": "sbom.cdx.json",
        "validation": {"status": status, **suite.as_dict(), "junit": "junit.xml"},
        "packer_manifest": pk_manifest,
        "timings": json.loads((image_dir / TIMINGS).read_text()),
    }
    atomic_write_json(image_dir / "sbom.cdx.json",
                      sbom.build(packages, image_name=name, fingerprint=fp, now=created))
    record = ImageRecord(id=image_id, name=name, env=env.name, fingerprint=fp, created=build_time,
                         status=status, artifact="disk.qcow2")
    return record, manifest


def validate_disk(
    env: Environment, disk: Path, accel: str, expect: dict[str, Any], work: Path, reporter: Reporter
) -> tuple[testinfra.SuiteResult, list[tuple[str, str, str]]]:
    """Boot `disk` through an overlay with a fresh key and run `tests/image/` against it."""
    q = env.settings.qemu
    with qemu.boot(disk, work, accelerator=accel, cpus=q.cpus, memory=q.memory,
                   timeout=q.boot_timeout, reporter=reporter, user=BUILD_USER) as vm:
        pub = Path(f"{vm.key}.pub").read_text().strip()
        suite = testinfra.run_suite(env.root / "tests" / "image", vm.host, vm.ssh_config, {
            **expect, "validation_user": BUILD_USER, "validation_pubkey": pub,
        }, work, reporter)
        packages = _packages(vm)
    reporter.info(f"    testinfra: {suite.passed} passed, {suite.failed} failed, {suite.errors} errors")
    return suite, packages


def validate(env_name: str, image_id: str | None, reporter: Reporter) -> dict[str, Any]:
    """`invoke validate`: boot a registered image again and rerun the image suite."""
    from .commands import required

    required(image_id=image_id)
    assert image_id is not None
    env = load_environment(env_name)
    if env.remote:
        from .aws import commands as aws_commands

        return aws_commands.validate(env, image_id, reporter)
    detect_tools()
    store = LocalStore(store_dir())
    rec = store.get(image_id)
    manifest = store.manifest(image_id)
    disk = store.image_dir(image_id) / rec.artifact
    accel = qemu.choose_accelerator(env.settings.qemu.accelerator, disk, base_cache_dir(), reporter)
    with store.workspace() as ws, reporter.phase("validate", f"boot {image_id} and run tests/image"):
        suite, _ = validate_disk(env, disk, accel, {
            "image_name": rec.name, "image_id": rec.id, "fingerprint": rec.fingerprint,
            "build_time": manifest["created"],
        }, ws, reporter)
    return {"image_id": image_id, "status": rec.status, "ok": suite.ok, "checks": suite.as_dict(),
            "durations": reporter.durations, "exit_code": 0 if suite.ok else 1}


def human_validate(result: dict[str, Any]) -> list[str]:
    c = result["checks"]
    verdict = "passed" if result["ok"] else "FAILED"
    lines = [f"{verdict}: {result['image_id']} ({c['passed']} passed, {c['failed']} failed, {c['errors']} errors)"]
    return lines + [f"  {f}" for f in c["failures"]]


def _packages(vm: qemu.Vm) -> list[tuple[str, str, str]]:
    res = vm.ssh(r"dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n'")
    out: list[tuple[str, str, str]] = []
    for ln in res.stdout.splitlines():
        parts = ln.split("\t")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
    return out


def human_bake(result: dict[str, Any]) -> list[str]:
    if result.get("skipped"):
        return [f"up to date: {result['image_id']} (fingerprint {result['fingerprint'][:12]})"]
    d = result.get("durations", {})
    phases = ", ".join(f"{k} {v:.0f}s" for k, v in d.items())
    return [
        f"{result['status']}: {result['image_id']}",
        f"  fingerprint {result['fingerprint']}",
        f"  artifact    {result['artifact']}",
        f"  phases      {phases}",
        *(f"  {ln}" for ln in timing.human({"slowest_tasks": result.get("slowest_tasks") or []})),
    ]


def images(env_name: str, image: str | None, image_id: str | None, reporter: Reporter) -> dict[str, Any]:
    """`invoke images`: the environment's images; with an id, that image's full provenance."""
    env = load_environment(env_name)
    if image is not None:
        env.image(image)
    if env.remote:
        from .aws import commands as aws_commands
        from .aws.context import registry_for

        if image_id is not None:
            reg = registry_for(env)
            return {"image": reg.get(image_id).summary(), "manifest": reg.manifest(image_id)}
        return aws_commands.images(env, reporter, image=image)
    store = LocalStore(store_dir())
    if image_id is not None:
        rec = store.get(image_id)
        directory = store.image_dir(image_id)
        manifest = store.manifest(image_id)
        sbom_file = directory / str(manifest.get("sbom", "sbom.cdx.json"))
        return {
            "image": rec.summary(), "directory": str(directory), "manifest": manifest,
            "sbom": json.loads(sbom_file.read_text()) if sbom_file.is_file() else None,
            "junit": str(directory / "junit.xml"),
        }
    return {"images": [r.summary() for r in store.list(image)], "store": str(store.root), "env": env.name}


def human_images(result: dict[str, Any]) -> list[str]:
    if "manifest" in result:
        m, rec = result["manifest"], result["image"]
        lines = [f"{k:<12} {rec.get(k)}" for k in ("id", "name", "status", "fingerprint", "created")]
        lines.append(f"{'channels':<12} {', '.join(rec.get('channels') or []) or '-'}")
        for key in ("base", "tools", "git", "validation"):
            if key in m:
                lines.append(f"{key:<12} {json.dumps(m[key], sort_keys=True, default=str)}")
        if "directory" in result:
            lines.append(f"{'directory':<12} {result['directory']}")
        return lines + timing.human(m.get("timings") or {}, top=timing.SLOWEST)
    if result.get("target") in ("aws", "sandbox"):
        from .aws import commands as aws_commands

        return aws_commands.human_images(result)
    rows = result["images"]
    if not rows:
        return [f"no images in {result['store']}"]
    head = f"{'ID':<34} {'NAME':<8} {'FINGERPRINT':<14} {'CREATED':<21} {'STATUS':<12} CHANNELS"
    return [head] + [
        f"{r['id']:<34} {r['name']:<8} {r['fingerprint'][:12]:<14} {r['created']:<21} {r['status']:<12} "
        f"{','.join(r['channels']) or '-'}"
        for r in rows
    ]


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=True, default=str)

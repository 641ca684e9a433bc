"""The local target's base disk: a self-booting Debian qcow2 built from the archive.

The recipe (mmdebstrap root filesystem, MBR + one ext4 partition, extlinux boot loader,
cloud-init for a NoCloud seed) is keyed by the hash of its inputs; the finished disk is
cached under that key together with its own content hash, which is the base identity that
image fingerprints use. A user may instead point the environment at a cloud image (path or
URL plus checksum): then that file, verified, is the base.

The archive the disk was built from is recorded with it (`base.json`, key `archive`): its
sources (suite, -updates, -security), the Date and sha256 of each source's Release file
fetched just before mmdebstrap ran, and the installed packages (name, version, arch, source
package). Nightly's drift check compares the archive with that record; a drifted base is
marked stale (`stale.json` beside it) and the next `ensure_base_image` rebuilds it under the
same recipe key. Its content hash -- the base identity -- changes with the new packages, so
every image's fingerprint changes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import drift
from ..errors import ConfigError, OperationFailed
from ..fsutil import atomic_write_json, file_lock, sha256_file
from ..progress import Reporter
from ..settings import BaseImageSpec
from ..state import ABSENT, Backend, Conflict
from . import archive, proc

RECIPE_VERSION = "5"  # 5: suite-updates and suite-security sources; the archive record
PACKAGES = (
    "systemd-sysv", "openssh-server", "python3", "python3-apt", "sudo",
    "linux-image-cloud-amd64", "ifupdown", "isc-dhcp-client", "iproute2", "netbase",
    "cloud-init", "cloud-guest-utils", "ca-certificates", "curl",
)
PART_START = 2048  # sectors of 512 bytes
MBR_BIN = Path("/usr/lib/EXTLINUX/mbr.bin")
ROOT_UUID = "5c8f3a1e-3d1b-4f0e-9b7a-60d1e11d0b45"  # fixed: the recipe is reproducible
ARCH = "amd64"
RECORD = "base.json"
STALE = "stale.json"
DISK = "base.qcow2"
INSTALLED_FORMAT = r"${Package}\t${Version}\t${Architecture}\t${source:Package}\n"

EXTLINUX_CONF = """\
SERIAL 0 115200
DEFAULT linux
TIMEOUT 1
PROMPT 0
LABEL linux
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0
"""

HOOKS = (
    # cloud-init owns the network (a NoCloud seed or its fallback DHCP on eth0).
    'echo "goldenimage" > "$1/etc/hostname"',
    f'echo "UUID={ROOT_UUID} / ext4 defaults,errors=remount-ro 0 1" > "$1/etc/fstab"',
    'printf "auto lo\\niface lo inet loopback\\n\\nsource /etc/network/interfaces.d/*\\n" '
    '> "$1/etc/network/interfaces"',
    'printf "datasource_list: [ NoCloud, None ]\\n" > "$1/etc/cloud/cloud.cfg.d/90-datasource.cfg"',
    'printf "locale: C.UTF-8\\n" > "$1/etc/cloud/cloud.cfg.d/91-locale.cfg"',
    'rm -f "$1"/etc/ssh/ssh_host_*',
    ': > "$1/etc/machine-id"',
    'rm -f "$1/var/lib/dbus/machine-id"',
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
)


@dataclass(frozen=True)
class BaseImage:
    path: Path
    sha256: str
    source: str  # "mmdebstrap:<recipe key>" or the user's url

    @property
    def identity(self) -> str:
        return f"sha256:{self.sha256}"


def archive_sources(spec: BaseImageSpec) -> list[drift.Source]:
    """The apt sources the base is built from: the suite, its -updates (unless `updates:
    false`) and its -security suite (unless `security_mirror` is empty), component main."""
    out = [drift.Source(spec.mirror, spec.suite)]
    if spec.updates:
        out.append(drift.Source(spec.mirror, f"{spec.suite}-updates"))
    if spec.security_mirror:
        out.append(drift.Source(spec.security_mirror, f"{spec.suite}{drift.SECURITY_MARK}"))
    return out


def recipe_key(spec: BaseImageSpec, mmdebstrap_version: str) -> str:
    doc = {
        "recipe": RECIPE_VERSION,
        "suite": spec.suite,
        "mirror": spec.mirror,
        "sources": [s.as_dict() for s in archive_sources(spec)],
        "packages": sorted({*PACKAGES, *spec.packages}),
        "size": spec.size,
        "hooks": list(HOOKS),
        "mmdebstrap": mmdebstrap_version,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def mmdebstrap_version() -> str:
    """The installed mmdebstrap's version (a recipe input), asked once while it is unchanged."""
    from .hostcache import version_output

    return version_output(["mmdebstrap", "--version"], hint="mmdebstrap").split()[-1]


def is_at_hand(spec: BaseImageSpec, cache: Path) -> bool:
    """`ensure_base_image` would neither build nor download: the disk is cached (not stale),
    or the user's image is a local file or already downloaded."""
    if spec.url:
        if not spec.url.startswith(("http://", "https://")):
            return True
        want = (spec.checksum or ":").split(":", 1)[1]
        return (cache / "downloads" / want / Path(spec.url).name).is_file()
    final = cache / recipe_key(spec, mmdebstrap_version())
    return (final / RECORD).is_file() and not (final / STALE).is_file()


def ensure_base_image(spec: BaseImageSpec, cache: Path, reporter: Reporter,
                      shared: SharedBases | None = None, *, need_bytes: bool = True) -> BaseImage:
    """Return the base disk for `spec`, building or fetching it only when not cached. With
    `shared`, the shared record of the recipe is this machine's record (a base another
    machine built is this one's too, without mmdebstrap), a base built here is published,
    and the disk's bytes are downloaded only with `need_bytes` (a build needs them, an
    identity does not: then the returned path may not exist yet)."""
    if spec.url:
        return _user_image(spec, cache, reporter)
    version = mmdebstrap_version()
    key = recipe_key(spec, version)
    final = cache / key
    if shared is not None:
        shared.sync(cache, key, reporter)
    with file_lock(cache / f"{key}.lock"):
        meta = final / RECORD
        stale = final / STALE
        if meta.is_file() and not stale.is_file():
            doc = json.loads(meta.read_text())
            if (final / DISK).is_file():
                reporter.info(f"    base image cached: {final / DISK}")
            elif shared is not None and need_bytes:
                shared.download(cache, key, reporter)
            return BaseImage(final / DISK, doc["sha256"], f"mmdebstrap:{key}")
        if stale.is_file():
            why = json.loads(stale.read_text()).get("reason", "")
            reporter.info(f"    base image {key} is stale ({why}): rebuilding it")
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache))
        try:
            sources = archive_sources(spec)
            try:
                releases = [r.as_dict() for r in archive.releases(sources)]
            except OperationFailed as exc:  # recorded as unknown: the next drift check reads the indexes
                reporter.warn(f"base image: cannot record the archive's Release files: {exc}")
                releases = []
            disk = _build(spec, work, reporter)
            digest = sha256_file(disk)
            installed = drift.parse_installed((work / "installed.tsv").read_text())
            atomic_write_json(work / RECORD, {
                "sha256": digest, "recipe": key, "suite": spec.suite, "mirror": spec.mirror,
                "packages": sorted({*PACKAGES, *spec.packages}), "mmdebstrap": version,
                "archive": {"sources": [s.as_dict() for s in sources], "releases": releases, "arch": ARCH,
                            "installed": [p.as_dict() for p in installed]},
            })
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if shared is not None:
        digest = shared.publish(cache, key, reporter)
    return BaseImage(final / DISK, digest, f"mmdebstrap:{key}")


class SharedBases:
    """Base disks in the environment's shared state, keyed by their recipe as in the local
    cache: the record `bases/<recipe key>.json` (this module's `base.json`, plus `stale`
    when a drift check found the archive newer) and the disk as a blob under its sha256.

    The shared record is the truth: a machine whose cached record names other bytes (another
    machine rebuilt the base) takes the shared one and drops its disk; a base built here is
    published only where the shared record is missing or stale, so two machines that both
    built one end up on the same (the first published). A fresh machine thereby knows every
    base's identity and archive record, and decides that nothing changed, without mmdebstrap
    or a download."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @staticmethod
    def record_key(key: str) -> str:
        return f"bases/{key}.json"

    def sync(self, cache: Path, key: str, reporter: Reporter, *, publish: bool = True) -> None:
        """This machine's record of base `key` brought in line with the shared one. With
        `publish`, what only this machine knows is shared: a base the shared state has not
        (built before the state was shared), a stale mark."""
        got = self.backend.get(self.record_key(key))
        final = cache / key
        if got is None:
            if publish and read_record(final) is not None and stale_reason(final) is None and (final / DISK).is_file():
                self.publish(cache, key, reporter)
            return
        doc = json.loads(got.data)
        shared_stale = doc.pop("stale", None)
        with file_lock(cache / f"{key}.lock"):
            local = read_record(final)
            if local is None or local.get("sha256") != doc.get("sha256"):
                if local is not None:
                    reporter.info(f"    base image {key}: the shared state holds another build of it "
                                  f"(sha256 {str(doc.get('sha256'))[:12]}…): using that one")
                final.mkdir(parents=True, exist_ok=True)
                (final / DISK).unlink(missing_ok=True)
                (final / STALE).unlink(missing_ok=True)
                atomic_write_json(final / RECORD, doc)
                local_stale = None
            else:
                local_stale = stale_reason(final)
            if shared_stale and local_stale is None:
                atomic_write_json(final / STALE, shared_stale)
        if publish and local_stale is not None and not shared_stale:
            self.mark_stale(key, json.loads((final / STALE).read_text()))

    def mark_stale(self, key: str, stale: dict[str, Any]) -> None:
        """The shared record marked stale (once: a marked record is left as it is)."""
        for _ in range(20):
            got = self.backend.get(self.record_key(key))
            if got is None:
                return
            doc = json.loads(got.data)
            if doc.get("stale"):
                return
            doc["stale"] = stale
            try:
                self.backend.put(self.record_key(key), _dump(doc), expect=got.version)
                return
            except Conflict:
                continue

    def publish(self, cache: Path, key: str, reporter: Reporter) -> str:
        """The disk built here, uploaded, then its record (last: a reader never sees a record
        without its disk); the sha256 of the base now shared, which is another machine's when
        that one published first."""
        final = cache / key
        doc = read_record(final)
        assert doc is not None
        digest = str(doc["sha256"])
        got = self.backend.get(self.record_key(key))
        current = json.loads(got.data) if got else None
        if current is not None and not current.get("stale"):
            if current.get("sha256") != digest:
                self.sync(cache, key, reporter)
            return str(current["sha256"])
        size = (final / DISK).stat().st_size
        with reporter.phase("upload", f"base disk {key} ({size / 2**20:.0f} MiB) to {self.backend.name}"):
            self.backend.put_blob(final / DISK, digest)
        try:
            self.backend.put(self.record_key(key), _dump(doc), expect=got.version if got else ABSENT)
        except Conflict:  # another machine published its build meanwhile: that one is the base
            self.sync(cache, key, reporter)
            shared = read_record(final)
            return str((shared or doc)["sha256"])
        return digest

    def download(self, cache: Path, key: str, reporter: Reporter) -> Path:
        """The disk of base `key` from the shared state, its sha256 checked on the way."""
        doc = read_record(cache / key)
        assert doc is not None
        with reporter.phase("download", f"base disk {key} from {self.backend.name}"):
            return self.backend.get_blob(str(doc["sha256"]), cache / key / DISK)


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def _user_image(spec: BaseImageSpec, cache: Path, reporter: Reporter) -> BaseImage:
    assert spec.url is not None
    if not spec.checksum:
        raise ConfigError("base.url is set but base.checksum is missing (sha256:<hex>)")
    want = spec.checksum.split(":", 1)[1]
    if spec.url.startswith(("http://", "https://")):
        path = cache / "downloads" / want / Path(spec.url).name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            reporter.step(f"downloading {spec.url}")
            try:
                with urllib.request.urlopen(spec.url, timeout=60) as resp, tmp.open("wb") as fh:
                    shutil.copyfileobj(resp, fh, 1 << 20)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise ConfigError(f"base.url {spec.url}: cannot download: {exc}") from None
            os.replace(tmp, path)
    else:
        path = Path(spec.url).expanduser()
        if not path.is_file():
            raise ConfigError(f"base.url {spec.url}: no such file")
    got = sha256_file(path)
    if got != want:
        raise ConfigError(f"base.checksum: {path} has sha256:{got}, expected {spec.checksum}")
    return BaseImage(path.resolve(), got, spec.url)


@contextlib.contextmanager
def _loop(raw: Path, offset: int) -> Iterator[str]:
    dev = proc.output(["losetup", "-f", "--show", "-o", str(offset), str(raw)], what="losetup").strip()
    try:
        yield dev
    finally:
        proc.run(["losetup", "-d", dev])


@contextlib.contextmanager
def _mounted(dev: str, where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    proc.output(["mount", dev, str(where)], what="mount")
    try:
        yield where
    finally:
        proc.run(["umount", "-l", str(where)])


def _build(spec: BaseImageSpec, work: Path, reporter: Reporter) -> Path:
    if os.geteuid() != 0:
        raise ConfigError("building the base image needs root (loop devices, mount): run as root "
                          "or set base.url/base.checksum to a cloud image")
    for tool in ("sfdisk", "losetup", "mkfs.ext4", "extlinux", "qemu-img", "mount"):
        proc.which(tool, "via `invoke setup`")
    if not MBR_BIN.is_file():
        raise ConfigError(f"{MBR_BIN} missing: install syslinux-common (`invoke setup`)")
    rootfs = work / "rootfs.tar"
    packages = ",".join(sorted({*PACKAGES, *spec.packages}))
    reporter.step(f"mmdebstrap {spec.suite} from {', '.join(s.suite for s in archive_sources(spec))}")
    record = installed_hook(work / "installed.tsv")
    argv = [
        "mmdebstrap", "--variant=minbase", f"--include={packages}",
        "--aptopt=Acquire::Retries \"3\"",
        f"--customize-hook={record}",
        *[f"--customize-hook={h}" for h in HOOKS],
        spec.suite, str(rootfs),
        *[f"deb {s.uri} {s.suite} {s.component}" for s in archive_sources(spec)],
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    res = proc.run(argv, env=env, on_line=lambda ln: reporter.step(f"mmdebstrap: {ln}"))
    if res.returncode != 0:
        last = "; ".join(ln.strip() for ln in res.lines[-5:] if ln.strip())
        raise OperationFailed(f"mmdebstrap failed (exit {res.returncode}): {last}")

    raw = work / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(_size_bytes(spec.size))
    reporter.step("partitioning (MBR, one bootable ext4 partition)")
    sfdisk = subprocess.run(
        ["sfdisk", "--quiet", str(raw)], input=f"label: dos\nstart={PART_START}, type=83, bootable\n",
        capture_output=True, text=True,
    )
    if sfdisk.returncode != 0:
        raise OperationFailed(f"sfdisk failed: {sfdisk.stderr.strip()}")
    mnt = work / "mnt"
    with _loop(raw, PART_START * 512) as dev:
        proc.output(["mkfs.ext4", "-q", "-F", "-O", "^64bit,^metadata_csum", "-L", "root",
                     "-U", ROOT_UUID, "-E", f"hash_seed={uuid.UUID(ROOT_UUID)}", dev], what="mkfs.ext4")
        with _mounted(dev, mnt):
            reporter.step("unpacking the root filesystem")
            proc.output(["tar", "-C", str(mnt), "--numeric-owner", "--xattrs", "--xattrs-include=*",
                         "-xf", str(rootfs)], what="tar")
            boot = mnt / "boot" / "extlinux"
            boot.mkdir(parents=True, exist_ok=True)
            (boot / "extlinux.conf").write_text(EXTLINUX_CONF.format(uuid=ROOT_UUID))
            reporter.step("installing extlinux")
            proc.output(["extlinux", "--install", str(boot)], what="extlinux --install")
    rootfs.unlink()
    with raw.open("r+b") as fh:
        fh.write(MBR_BIN.read_bytes()[:440])
    disk = work / "base.qcow2"
    reporter.step("converting to compressed qcow2")
    proc.output(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(disk)], what="qemu-img convert")
    raw.unlink()
    return disk


def installed_hook(out: Path) -> str:
    """The mmdebstrap customize hook writing the installed packages (name, version, arch,
    source package) to `out`, from dpkg's own database in the new root ("$1")."""
    return f"dpkg-query --admindir=\"$1/var/lib/dpkg\" -W -f='{INSTALLED_FORMAT}' > {shlex.quote(str(out))}"


def _size_bytes(size: str) -> int:
    unit = {"M": 1 << 20, "G": 1 << 30}[size[-1]]
    return int(size[:-1]) * unit


# -- the archive record and nightly's drift check -------------------------------------------
def cached_dir(cache: Path, source: str) -> Path | None:
    """The cache directory of an mmdebstrap base named by an image's `base.source`
    ("mmdebstrap:<key>"); None for a user's cloud image."""
    if not source.startswith("mmdebstrap:"):
        return None
    return cache / source.split(":", 1)[1]


def read_record(directory: Path) -> dict[str, Any] | None:
    """The base's `base.json`, None when the base is not cached."""
    meta = directory / RECORD
    if not meta.is_file():
        return None
    doc: dict[str, Any] = json.loads(meta.read_text())
    return doc


def stale_reason(directory: Path) -> str | None:
    path = directory / STALE
    if not path.is_file():
        return None
    return str(json.loads(path.read_text()).get("reason", "stale"))


def mark_stale(directory: Path, reason: str, at: str, shared: SharedBases | None = None) -> None:
    """The next `ensure_base_image` of this recipe rebuilds the base (the old disk stays in
    place, and in use, until the new one replaces it), on every machine that shares it."""
    with file_lock(directory.parent / f"{directory.name}.lock"):
        atomic_write_json(directory / STALE, {"reason": reason, "at": at})
    if shared is not None:
        shared.mark_stale(directory.name, {"reason": reason, "at": at})


def record_releases(directory: Path, releases: list[drift.ReleaseState]) -> None:
    """The archive moved but nothing installed in the base is newer: the Release files of now
    become the record, so that the next check stops at the cheap step again."""
    with file_lock(directory.parent / f"{directory.name}.lock"):
        doc = read_record(directory)
        if doc is None or "archive" not in doc:
            return
        doc["archive"]["releases"] = [r.as_dict() for r in releases]
        atomic_write_json(directory / RECORD, doc)

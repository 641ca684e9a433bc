"""Who uses a local disk image: running QEMU processes (libvirt's domains are QEMU
processes too), libvirt domain definitions, and qcow2 files whose backing chain reaches it.

`invoke gc` gathers these once per run, and again right before each step, in the places
`extra.retention.local_search` names, so that an image a VM boots from or an overlay builds
on is never removed.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..retention import Reference

QCOW2_MAGIC = b"QFI\xfb"


def qemu_processes(proc: Path = Path("/proc")) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every running process whose program is QEMU (`qemu-system-*`, `qemu-kvm`)."""
    out: list[tuple[int, list[str]]] = []
    me = os.getpid()
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return out
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (proc / entry.name / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if argv and os.path.basename(argv[0]).startswith("qemu"):
            out.append((int(entry.name), argv))
    return sorted(out)


def vm_references(images: Mapping[str, Path], proc: Path = Path("/proc")) -> list[Reference]:
    """A reference for each running QEMU process (`qemu-system-*`, `qemu-img`, `qemu-nbd`, ...)
    that uses an image: its arguments name the image's directory or disk, or a disk file
    whose backing chain leads to the image's disk (a VM booted through an overlay kept
    anywhere)."""
    by_disk = {Path(os.path.realpath(d)): i for i, d in images.items()}
    refs: set[Reference] = set()
    for pid, argv in qemu_processes(proc):
        for image_id, disk in images.items():
            if any(str(disk) in a or str(disk.parent) + os.sep in a for a in argv):
                refs.add(Reference(image_id, "vm", f"qemu pid {pid}"))
        for path in _disk_arguments(argv):
            for link in _backing_chain(path):
                used = by_disk.get(link)
                if used is not None:
                    refs.add(Reference(used, "vm", f"qemu pid {pid}"))
    return sorted(refs, key=lambda r: (r.image_id, r.where))


def _disk_arguments(argv: list[str]) -> list[Path]:
    """Absolute paths in QEMU arguments (`file=/x.qcow2,if=virtio`, `-hda /x.qcow2`) that are files."""
    out = []
    for arg in argv[1:]:
        for part in arg.split(","):
            value = part.split("=", 1)[1] if "=" in part else part
            if value.startswith(os.sep) and os.path.isfile(value):
                out.append(Path(value))
    return out


def _backing_chain(path: Path, depth: int = 16) -> list[Path]:
    """`path` and the files its qcow2 backing chain leads to, resolved (at most `depth`)."""
    chain = [Path(os.path.realpath(path))]
    current: Path | None = path
    for _ in range(depth):
        current = qcow2_backing_file(current) if current is not None else None
        if current is None:
            break
        real = Path(os.path.realpath(current))
        if real in chain:
            break
        chain.append(real)
    return chain


def qcow2_backing_file(path: Path) -> Path | None:
    """The backing file a qcow2 image names in its header (resolved against its directory),
    or None (not a qcow2, or no backing file)."""
    try:
        with path.open("rb") as fh:
            header = fh.read(20)
            if len(header) < 20 or header[:4] != QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if not offset or not size or size > 4096:
                return None
            fh.seek(offset)
            name = fh.read(size).decode(errors="replace")
    except OSError:
        return None
    backing = Path(name)
    return backing if backing.is_absolute() else path.parent / backing


def backing_references(images: Mapping[str, Path], roots: Iterable[Path]) -> list[Reference]:
    """A reference for each qcow2 under `roots` whose backing chain (overlay on overlay on
    ...) reaches an image's disk."""
    by_disk: dict[Path, str] = {}
    for image_id, disk in images.items():
        by_disk[Path(os.path.realpath(disk))] = image_id
    refs: list[Reference] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for f in sorted(_walk(root, "*.qcow2")):
            real = Path(os.path.realpath(f))
            if real in seen or real in by_disk:
                continue
            seen.add(real)
            for link in _backing_chain(f)[1:]:
                used = by_disk.get(link)
                if used is not None:
                    refs.append(Reference(used, "backing file of", str(f)))
                    break
    return refs


def _walk(root: Path, pattern: str) -> list[Path]:
    """Files matching `pattern` under `root`; a directory that cannot be read is passed over."""
    out = []
    try:
        for f in root.rglob(pattern):
            try:
                if f.is_file():
                    out.append(f)
            except OSError:
                continue
    except OSError:
        pass
    return out


_SOURCE_FILE = re.compile(r"""<source\b[^>]*\bfile\s*=\s*(["'])(.*?)\1""")


def domain_references(images: Mapping[str, Path], roots: Iterable[Path]) -> list[Reference]:
    """A reference for each libvirt domain definition (`*.xml` with a `<domain`, e.g. under
    /etc/libvirt/qemu: a VM defined there, running or not) whose disks (`<source file=...>`)
    are an image's disk or back onto it."""
    by_disk = {Path(os.path.realpath(d)): i for i, d in images.items()}
    refs: set[Reference] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for f in sorted(_walk(root, "*.xml")):
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            if "<domain" not in text:
                continue
            for _, disk in _SOURCE_FILE.findall(text):
                for link in _backing_chain(Path(disk)):
                    used = by_disk.get(link)
                    if used is not None:
                        refs.add(Reference(used, "vm definition", f"{f} (disk {disk})"))
    return sorted(refs, key=lambda r: (r.image_id, r.where))


def tree_size(path: Path) -> int:
    """Bytes the files under `path` take on disk (allocated blocks: a sparse qcow2 counts
    what it really holds)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total

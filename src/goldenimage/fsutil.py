"""Small filesystem primitives: atomic writes, file locks, content hashes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import OperationFailed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(
    path: Path, *, wait: bool = True, what: str = "", on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """An exclusive advisory lock on `path` (released by the kernel if the process dies).

    Held by someone else: with `wait`, call `on_wait` once and block; else fail at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise OperationFailed(f"{what or path} is locked by another process") from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # a zombie: exited, not yet reaped
    return True


@contextlib.contextmanager
def short_tempdir(prefix: str) -> Iterator[Path]:
    """A private directory with a short path under the system temp dir, removed on exit.

    For unix sockets (ssh control sockets, Packer's plugin sockets): a socket path longer
    than 107 bytes cannot be bound, and work directories can be nested deep."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def tar_length(path: Path, record: int = 10240) -> int:
    """Bytes of the tar archive written at the start of `path` (e.g. a raw disk `tar -cf`
    wrote to), through its end-of-archive blocks and rounded up to tar's record size;
    0 when `path` starts with no archive or an unreadable one."""
    try:
        with tarfile.open(path, "r:") as tar:
            if not tar.getmembers():
                return 0
            end = tar.offset + 2 * tarfile.BLOCKSIZE
    except (OSError, tarfile.TarError):
        return 0
    return -(-end // record) * record

"""Shared state: one interface, two backends (a directory, an S3-compatible bucket).

The shape of Terraform's state managers: everything the catalog, channel and gc logic needs
of a place to keep state is

- **records** — small documents under a key, read with their version and written by
  compare-and-swap: `put(key, data, expect=VERSION)` succeeds only if the record still has
  that version, `expect=ABSENT` only if it does not exist yet (`Conflict` otherwise), so two
  writers never lose an update;
- **blobs** — large files stored under their SHA-256 (`blobs/sha256/<hex>`), uploaded straight
  to the digest's key (a multipart upload appears only when it completes), hashed on the way
  and removed again if the bytes are not the digest's, checked against the digest when
  fetched;
- **leases** (`state.lease`) built on the records.

`DirectoryBackend` keeps them in a directory (versions are content hashes, CAS under a file
lock, atomic renames); `BucketBackend` in a bucket (versions are ETags, CAS by S3's
conditional writes `If-Match` / `If-None-Match: *`, which S3, MinIO, Ceph RGW and moto
honour). Code above this module is written once against `Backend`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import GoldenImageError, IntegrityError, OperationFailed
from ..fsutil import file_lock, sha256_file

ABSENT = ""  # `expect=ABSENT`: create only (the record must not exist)
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
Progress = Callable[[int], None]  # bytes transferred so far


class Conflict(GoldenImageError):
    """A compare-and-swap lost: the record changed (or appeared) since it was read."""

    exit_code = 1


@dataclass(frozen=True)
class Versioned:
    data: bytes
    version: str  # opaque: the next `put(expect=...)` names it


class Backend(Protocol):
    name: str  # where, for messages ("dir /srv/state", "s3://bucket/prefix")

    def get(self, key: str) -> Versioned | None: ...

    def put(self, key: str, data: bytes, *, expect: str | None = None) -> str: ...

    def delete(self, key: str, *, expect: str | None = None) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def put_blob(self, path: Path, digest: str, progress: Progress | None = None) -> str: ...

    def get_blob(self, digest: str, dest: Path, progress: Progress | None = None) -> Path: ...

    def has_blob(self, digest: str) -> bool: ...


def check_key(key: str) -> str:
    if not KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"not a state key: {key!r}")
    return key


def blob_key(digest: str) -> str:
    hexd = digest.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"blobs/sha256/{hexd}"


def _version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DirectoryBackend:
    """Records and blobs as files under `root`; one file lock serialises the CAS."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"dir {root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> Versioned | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return Versioned(data, _version_of(data))

    def _locked(self) -> Any:
        return file_lock(self.root / ".lock")

    def put(self, key: str, data: bytes, *, expect: str | None = None) -> str:
        path = self._path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._check(key, expect)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return _version_of(data)

    def _check(self, key: str, expect: str | None) -> None:
        if expect is None:
            return
        now = self.get(key)
        if expect == ABSENT and now is not None:
            raise Conflict(f"{self.name}: {key} exists already")
        if expect != ABSENT and (now is None or now.version != expect):
            raise Conflict(f"{self.name}: {key} changed since it was read")

    def delete(self, key: str, *, expect: str | None = None) -> None:
        with self._locked():
            self._check(key, expect)
            self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root
        out = []
        for dirpath, _, files in os.walk(base):
            for f in files:
                rel = (Path(dirpath) / f).relative_to(base).as_posix()
                if rel.startswith(prefix) and not f.startswith("."):
                    out.append(rel)
        return sorted(out)

    def put_blob(self, path: Path, digest: str, progress: Progress | None = None) -> str:
        dest = self._path(blob_key(digest))
        if dest.is_file():
            return blob_key(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            if sha256_file(Path(tmp)) != digest.removeprefix("sha256:"):
                raise IntegrityError(f"{path}: its bytes changed while they were stored ({digest})")
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        if progress:
            progress(dest.stat().st_size)
        return blob_key(digest)

    def get_blob(self, digest: str, dest: Path, progress: Progress | None = None) -> Path:
        src = self._path(blob_key(digest))
        if not src.is_file():
            raise OperationFailed(f"{self.name}: no blob {digest}")
        _fetch_checked(lambda tmp: shutil.copyfile(src, tmp), digest, dest)
        if progress:
            progress(dest.stat().st_size)
        return dest

    def has_blob(self, digest: str) -> bool:
        return self._path(blob_key(digest)).is_file()


def _fetch_checked(fetch: Callable[[Path], Any], digest: str, dest: Path) -> None:
    """`fetch` into a temporary file beside `dest`, which appears only with the right bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        fetch(tmp)
        actual = sha256_file(tmp)
        if actual != digest.removeprefix("sha256:"):
            raise IntegrityError(f"blob {digest}: the bytes fetched have sha256 {actual}: refused")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class BucketBackend:
    """Records and blobs in an S3-compatible bucket under `prefix`. `s3` is a boto3 S3
    client (retries: botocore's standard mode, which covers resets, throttling and 5xx)."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "") -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix.strip("/")
        self.name = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _code(self, exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def get(self, key: str) -> Versioned | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.s3.exceptions.NoSuchKey:
            return None
        return Versioned(obj["Body"].read(), str(obj["ETag"]))

    def put(self, key: str, data: bytes, *, expect: str | None = None) -> str:
        kw: dict[str, str] = {}
        if expect == ABSENT:
            kw["IfNoneMatch"] = "*"
        elif expect is not None:
            kw["IfMatch"] = expect
        try:
            res = self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **kw)
        except Exception as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                what = "exists already" if expect == ABSENT else "changed since it was read"
                raise Conflict(f"{self.name}: {key} {what}") from None
            raise
        return str(res["ETag"])

    def delete(self, key: str, *, expect: str | None = None) -> None:
        if expect not in (None, ABSENT):
            now = self.get(key)
            if now is None:
                return
            if now.version != expect:
                raise Conflict(f"{self.name}: {key} changed since it was read")
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(key),
                              **({"IfMatch": expect} if expect else {}))

    def list(self, prefix: str) -> list[str]:
        start = self._key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            out += [o["Key"][cut:] for o in page.get("Contents", [])]
        return sorted(out)

    def has_blob(self, digest: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(blob_key(digest)))
        except Exception as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def put_blob(self, path: Path, digest: str, progress: Progress | None = None) -> str:
        """Upload straight to the digest's key (multipart above 8 MiB, boto3's transfer manager
        with its default part size), hashing the bytes as they are sent. A multipart upload
        appears only when it completes, so a reader never sees half a blob, and a killed upload
        leaves only parts the bucket's lifecycle rule aborts. Bytes that are not the digest's
        (the file changed while it was sent) are deleted again and refused; until then they
        cannot be used either, as every reader checks a blob's sha256 before use (get_blob)."""
        if self.has_blob(digest):
            return blob_key(digest)
        key = self._key(blob_key(digest))
        with path.open("rb") as fh:
            reader = _Hashing(fh)
            self.s3.upload_fileobj(reader, self.bucket, key, Callback=_counter(progress))
        if reader.hexdigest() != digest.removeprefix("sha256:"):
            etag = self.s3.head_object(Bucket=self.bucket, Key=key)["ETag"]
            self.s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
            raise IntegrityError(f"{path}: the bytes sent have sha256 {reader.hexdigest()}, not {digest}: "
                                 "not published")
        return blob_key(digest)

    def get_blob(self, digest: str, dest: Path, progress: Progress | None = None) -> Path:
        """Download in 64 MiB ranges (measured against moto, 128 MiB: 341 MiB/s where boto3's
        default 8 MiB ranges give 109; an upload is the other way round, bench/README.md)."""
        from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped, unused-ignore]

        key, cfg = self._key(blob_key(digest)), TransferConfig(multipart_threshold=64 << 20,
                                                               multipart_chunksize=64 << 20)
        _fetch_checked(lambda tmp: self.s3.download_file(self.bucket, key, str(tmp), Callback=_counter(progress),
                                                         Config=cfg), digest, dest)
        return dest


def _counter(progress: Progress | None) -> Callable[[int], None]:
    """boto3's transfer callback (bytes since the last call) as `progress` (bytes so far)."""
    done = [0]

    def seen(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0])

    return seen


class _Hashing:
    """A file object that hashes what is read from it, in order (the transfer manager reads
    an unseekable source one part after the other)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.h = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.fh.read(n)
        self.h.update(data)
        return data

    def hexdigest(self) -> str:
        return self.h.hexdigest()

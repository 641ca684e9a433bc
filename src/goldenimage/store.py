"""The local image store: one directory per image and a catalog that indexes them.

Layout under `paths.store_dir()`:

    catalog.json            index of registered images and channels (written atomically)
    catalog.lock            flock held while the catalog is read-modify-written
    images/<id>/            a registered image: disk.qcow2, manifest.json, junit.xml, ...
    quarantine/<id>/        an image that failed validation (never registered)
    .tmp/<token>/           work in progress of a running bake (removed on exit or by the
                            next bake once its owner process is gone)

An image becomes visible only by a rename of its finished directory into `images/` and an
atomic rewrite of the catalog, so a crash never leaves a half-registered image.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError, NotFoundError
from .fsutil import atomic_write_json, file_lock

CATALOG_VERSION = 1
STATUSES = ("validated", "quarantined", "revoked")


@dataclass(frozen=True)
class ImageRecord:
    """What the catalog knows of one image (the full story is its manifest)."""

    id: str
    name: str
    env: str
    fingerprint: str
    created: str
    status: str
    artifact: str
    channels: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "env": self.env,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "status": self.status,
            "artifact": self.artifact,
            "channels": list(self.channels),
            **self.extra,
        }


class Registry(Protocol):
    """What every image registry (local store, AWS) offers."""

    def put(self, record: ImageRecord, manifest: dict[str, Any], files: Path) -> ImageRecord: ...

    def get(self, image_id: str) -> ImageRecord: ...

    def list(self, name: str | None = None) -> list[ImageRecord]: ...

    def find_by_fingerprint(self, name: str, fingerprint: str) -> ImageRecord | None: ...

    def manifest(self, image_id: str) -> dict[str, Any]: ...


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStore:
    """The local target's registry: a directory with a catalog."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images_dir = root / "images"
        self.quarantine_dir = root / "quarantine"
        self.tmp_dir = root / ".tmp"
        self.catalog_path = root / "catalog.json"
        self.lock_path = root / "catalog.lock"

    # -- catalog -------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.catalog_path.read_text())
        except FileNotFoundError:
            return {"version": CATALOG_VERSION, "images": {}, "channels": {}}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.catalog_path}: corrupt catalog: {exc}") from None
        doc.setdefault("images", {})
        doc.setdefault("channels", {})
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        doc["version"] = CATALOG_VERSION
        atomic_write_json(self.catalog_path, doc)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write the catalog under the store lock; written back on success."""
        with file_lock(self.lock_path):
            doc = self._read()
            before = json.dumps(doc, sort_keys=True)
            yield doc
            if json.dumps(doc, sort_keys=True) != before:
                self._write(doc)

    def _record(self, doc: dict[str, Any], entry: dict[str, Any]) -> ImageRecord:
        name = entry["name"]
        channels = tuple(
            sorted(
                ch
                for ch, hist in doc["channels"].get(name, {}).items()
                if hist and hist[-1].get("image_id") == entry["id"]
            )
        )
        known = {"id", "name", "env", "fingerprint", "created", "status", "artifact", "channels"}
        return ImageRecord(
            id=entry["id"],
            name=name,
            env=entry["env"],
            fingerprint=entry["fingerprint"],
            created=entry["created"],
            status=entry["status"],
            artifact=entry["artifact"],
            channels=channels,
            extra={k: v for k, v in entry.items() if k not in known},
        )

    # -- Registry ------------------------------------------------------------------------
    def put(self, record: ImageRecord, manifest: dict[str, Any], files: Path) -> ImageRecord:
        """Register a finished image: move `files` into place, then index it atomically."""
        atomic_write_json(files / "manifest.json", manifest)
        target = (self.quarantine_dir if record.status == "quarantined" else self.images_dir) / record.id
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.locked() as doc:
            if target.exists() or record.id in doc["images"]:
                raise ConfigError(f"image id {record.id} already exists in {self.root}")
            os.replace(files, target)
            if record.status != "quarantined":
                entry = record.summary()
                entry.pop("channels", None)
                doc["images"][record.id] = entry
        return record

    def get(self, image_id: str) -> ImageRecord:
        doc = self._read()
        entry = doc["images"].get(image_id)
        if entry is None:
            q = self.quarantine_dir / image_id / "manifest.json"
            if q.is_file():
                m = json.loads(q.read_text())
                return ImageRecord(
                    id=image_id, name=m["name"], env=m["env"], fingerprint=m["fingerprint"],
                    created=m["created"], status="quarantined", artifact=m["artifact"],
                )
            raise NotFoundError(f"unknown image id {image_id!r} in {self.root}")
        return self._record(doc, entry)

    def list(self, name: str | None = None, *, quarantined: bool = True) -> list[ImageRecord]:
        doc = self._read()
        out = [self._record(doc, e) for e in doc["images"].values()]
        if quarantined and self.quarantine_dir.is_dir():
            out.extend(self.get(p.name) for p in self.quarantine_dir.iterdir()
                       if (p / "manifest.json").is_file())
        if name is not None:
            out = [r for r in out if r.name == name]
        return sorted(out, key=lambda r: (r.created, r.id))

    def find_by_fingerprint(self, name: str, fingerprint: str) -> ImageRecord | None:
        hits = [
            r for r in self.list(name, quarantined=False)
            if r.fingerprint == fingerprint and r.status == "validated"
        ]
        return hits[-1] if hits else None

    def manifest(self, image_id: str) -> dict[str, Any]:
        rec = self.get(image_id)
        base = self.quarantine_dir if rec.status == "quarantined" else self.images_dir
        doc: dict[str, Any] = json.loads((base / image_id / "manifest.json").read_text())
        return doc

    def image_dir(self, image_id: str) -> Path:
        rec = self.get(image_id)
        return (self.quarantine_dir if rec.status == "quarantined" else self.images_dir) / rec.id

    # -- work in progress ----------------------------------------------------------------
    def sweep_stale(self) -> list[Path]:
        """Remove work directories whose owning process is gone (a killed bake)."""
        removed: list[Path] = []
        if not self.tmp_dir.is_dir():
            return removed
        for d in self.tmp_dir.iterdir():
            try:
                pid = int((d / "owner.pid").read_text())
            except (FileNotFoundError, ValueError):
                pid = 0
            if pid and _pid_alive(pid):
                continue
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        return removed

    @contextlib.contextmanager
    def workspace(self) -> Iterator[Path]:
        """A private directory for one bake; removed on exit unless handed to `put`."""
        self.sweep_stale()
        d = self.tmp_dir / uuid.uuid4().hex[:12]
        d.mkdir(parents=True)
        (d / "owner.pid").write_text(str(os.getpid()))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

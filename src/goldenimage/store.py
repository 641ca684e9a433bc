"""The local image store: one directory per image and a catalog that indexes them.

Layout under `paths.store_dir()`:

    catalog.json            index of registered images and channels (written atomically)
    catalog.lock            flock held while the catalog is read-modify-written
    images/<id>/            a registered image: disk.qcow2, manifest.json, junit.xml, ...
    quarantine/<id>/        an image that failed validation (never registered)
    failed/<id>/            the logs of a bake that failed or was interrupted
    .tmp/<token>/           work in progress of a running bake (removed on exit or by the
                            next bake once its owner process is gone)

An image becomes visible only by a rename of its finished directory into `images/` and an
atomic rewrite of the catalog, so a crash never leaves a half-registered image.

`invoke gc` records an image's retention stage (`deprecated`, `disabled`) in the catalog's
`retention` map; a disabled image is never promoted nor skipped to by a bake, and
`restore` takes the stage back. A delete rewrites the catalog without the image first, then
renames its directory into `.tmp/` and removes it there (a crash in between leaves at most
a directory nothing indexes; one under `.tmp/` is swept by the next bake).

Shared state (`state:` in an environment's settings, `state.open_backend`): the catalog is a
record of a `state.Backend` (a bucket), every catalog change a compare-and-swap on its
version, retried when another machine changed it first (no update is lost, every channel's
history is one sequence of moves whoever made them); the files of a registered image are
blobs keyed by their sha256, uploaded before the record that names them is written.
`images/<id>/` is then this machine's cache: a file is downloaded (and its digest checked)
only when it is read, the qcow2 only when its bytes are needed. Without `state:` the catalog
is the same record in the store directory (`DirectoryBackend`), so the logic above the
backend is one. A file's stat proof (`artifact_proof`) is knowledge of this machine's
files: it is kept in the local `proofs.json`, never in the shared catalog.
"""

from __future__ import annotations

import builtins
import contextlib
import getpass
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from . import channels as ch
from .adapters.proc import kill_processes_mentioning
from .errors import ConfigError, IntegrityError, NotFoundError, OperationFailed
from .fsutil import atomic_write_json, pid_alive, sha256_file
from .models import (
    CORRUPT,
    QUARANTINED,
    REVOKED,
    STATUSES,
    VALIDATED,
    ChannelHistory,
    ImageRecord,
    history_entry,
)
from .state import ABSENT, Backend, Conflict, DirectoryBackend, blob_key

T = TypeVar("T")
Transfer = Callable[[str, int, int], None]  # (file name, bytes so far, its size or 0)
DISABLED = "disabled"  # a retention stage (see `retention`): unusable until restored

__all__ = ["STATUSES", "ImageRecord", "LocalStore", "current_user"]

CATALOG_VERSION = 1
CATALOG = "catalog.json"  # the catalog's key on the backend
PROOFS = "proofs.json"  # this machine's stat proofs, beside its cache
PROOF = "artifact_proof"  # proofs.json entry: the artifact's stat when its bytes were last hashed
FILES = "files"  # shared catalog entry: {file name: sha256} of the image's blobs
CAS_ATTEMPTS = 50
PROOF_SETTLED_NS = 2 * 10**9  # a proof is recorded only for a file unchanged for this long


def artifact_proof(path: Path, now_ns: int | None = None) -> dict[str, int] | None:
    """What proves, without reading it, that a local file still holds the bytes it held when
    this was taken: size, mtime, ctime, inode and device.

    Any write, truncate or replace changes one of them: a write moves mtime and ctime; `utime`
    can set mtime back but sets ctime to now, and nothing short of the system clock sets ctime
    back; a copy renamed over the file has another inode. The kernel stamps ctime from a coarse
    clock (a few ms), so two changes within one tick may share it: a file changed less than
    `PROOF_SETTLED_NS` ago gets no proof (None), and is hashed in full the next time."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    now_ns = time.time_ns() if now_ns is None else now_ns
    if now_ns - max(st.st_ctime_ns, st.st_mtime_ns) < PROOF_SETTLED_NS:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino, "device": st.st_dev}


def same_file(proof: Any, path: Path) -> bool:
    """`path` is unchanged since `proof` (an `artifact_proof`) was taken."""
    if not isinstance(proof, dict):
        return False
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return proof == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                     "inode": st.st_ino, "device": st.st_dev}


def _per_file(progress: Transfer | None, name: str, size: int) -> Callable[[int], None] | None:
    """A blob transfer's progress (bytes so far) as `progress(file name, bytes so far, size)`."""
    if progress is None:
        return None
    return lambda done: progress(name, done, size)


def current_user() -> str:
    """Who moves a channel or revokes an image, for the record."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (some containers)
        return "unknown"


class LocalStore:
    """The local target's registry: a catalog record on a state backend (the store directory
    itself unless the environment shares its state) and one directory per image."""

    def __init__(self, root: Path, shared: Backend | None = None) -> None:
        self.root = root
        self.shared = shared
        self.records: Backend = shared if shared is not None else DirectoryBackend(root)
        self.images_dir = root / "images"
        self.quarantine_dir = root / "quarantine"
        self.tmp_dir = root / ".tmp"
        self.catalog_path = root / CATALOG  # without shared state
        self._local = DirectoryBackend(root)

    @property
    def where(self) -> str:
        return self.shared.name if self.shared is not None else str(self.root)

    # -- catalog -------------------------------------------------------------------------
    def _parse(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            return {"version": CATALOG_VERSION, "images": {}, "channels": {}}
        try:
            doc: dict[str, Any] = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.where}: corrupt catalog {CATALOG}: {exc}") from None
        doc.setdefault("images", {})
        doc.setdefault("channels", {})
        return doc

    def _read(self) -> dict[str, Any]:
        got = self.records.get(CATALOG)
        return self._parse(got.data if got else None)

    def _update(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Read-modify-write the catalog: `change` edits the document it is given and returns
        the result; the document is written back (if it changed) by compare-and-swap on the
        version that was read. When another writer came first, `change` runs again on the
        newer document: it must only decide and edit, and do its side effects after."""
        delay = 0.01
        for _ in range(CAS_ATTEMPTS):
            got = self.records.get(CATALOG)
            doc = self._parse(got.data if got else None)
            before = json.dumps(doc, sort_keys=True)
            result = change(doc)
            if json.dumps(doc, sort_keys=True) == before:
                return result
            doc["version"] = CATALOG_VERSION
            try:
                self.records.put(CATALOG, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n",
                                 expect=got.version if got else ABSENT)
                return result
            except Conflict:
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
        raise OperationFailed(f"{self.where}: the catalog changed under every one of {CAS_ATTEMPTS} attempts "
                              "to update it; try again")

    # -- this machine's proofs --------------------------------------------------------------
    def _proof(self, image_id: str) -> Any:
        got = self._local.get(PROOFS)
        return json.loads(got.data).get(image_id) if got else None

    def _set_proof(self, image_id: str, proof: dict[str, int] | None) -> None:
        for _ in range(CAS_ATTEMPTS):
            got = self._local.get(PROOFS)
            doc = json.loads(got.data) if got else {}
            if proof is None:
                if image_id not in doc:
                    return
                doc.pop(image_id)
            else:
                doc[image_id] = proof
            try:
                self._local.put(PROOFS, json.dumps(doc, sort_keys=True).encode(), expect=got.version if got else ABSENT)
                return
            except Conflict:
                continue

    def _record(self, doc: dict[str, Any], entry: dict[str, Any]) -> ImageRecord:
        name = entry["name"]
        channels = tuple(
            sorted(
                ch
                for ch, hist in doc["channels"].get(name, {}).items()
                if hist and hist[-1].get("image_id") == entry["id"]
            )
        )
        known = {"id", "name", "env", "fingerprint", "created", "status", "artifact", "channels", PROOF, FILES}
        stage = doc.get("retention", {}).get(entry["id"])
        return ImageRecord(
            id=entry["id"],
            name=name,
            env=entry["env"],
            fingerprint=entry["fingerprint"],
            created=entry["created"],
            status=entry["status"],
            artifact=entry["artifact"],
            channels=channels,
            extra={**{k: v for k, v in entry.items() if k not in known},
                   **({"stage": stage["stage"], "stage_at": stage["at"]} if stage else {})},
        )

    # -- Registry ------------------------------------------------------------------------
    def put(self, record: ImageRecord, manifest: dict[str, Any], files: Path,
            progress: Transfer | None = None, fence: tuple[str, int] | None = None) -> ImageRecord:
        """Register a finished image: move `files` into place, then index it atomically, with
        the proof of its artifact's bytes (`artifact_proof`) that lets `verified` skip the
        full hash while the file is untouched. With shared state the files are uploaded as
        blobs first (`progress(name, bytes so far, size)`), and the catalog entry that names
        them is written last: a reader never sees half an image."""
        atomic_write_json(files / "manifest.json", manifest)
        target = (self.quarantine_dir if record.status == QUARANTINED else self.images_dir) / record.id
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise ConfigError(f"image id {record.id} already exists in {self.root}")
        entry: dict[str, Any] = {}
        if record.status != QUARANTINED:
            entry = record.summary()
            entry.pop("channels", None)
            if self.shared is not None:
                entry[FILES] = self._upload(files, manifest, progress)

        def add(doc: dict[str, Any]) -> None:
            if entry and doc["images"].get(record.id) == entry:
                return  # our write landed and its answer was lost: the retry finds it (ids are unique)
            if fence is not None:
                self._check_fence(doc, *fence)
            if record.id in doc["images"]:
                raise ConfigError(f"image id {record.id} already exists in {self.where}")
            if entry:
                doc["images"][record.id] = entry

        os.replace(files, target)  # first: a crash before the record leaves a directory nothing indexes
        try:
            self._update(lambda doc: None if record.status == QUARANTINED else add(doc))
        except BaseException:
            os.replace(target, files)
            raise
        if self.shared is not None:  # a blob this image shares with one gc removed meanwhile: sent again
            for name, digest in sorted((entry.get(FILES) or {}).items()):
                if not self.shared.has_blob(digest):
                    self.shared.put_blob(target / name, digest)
        if entry and manifest.get("artifact_sha256"):
            self._set_proof(record.id, artifact_proof(target / record.artifact))
        return record

    # -- fencing: the catalog knows the newest token of every lease a write was made under --
    @staticmethod
    def _check_fence(doc: dict[str, Any], lease: str, token: int) -> None:
        seen = int(doc.get("fences", {}).get(lease, 0))
        if seen > token:
            raise OperationFailed(f"lease {lease} was taken over (token {seen}, this run's {token}): "
                                  "this run registers nothing")

    def fence(self, lease: str, token: int) -> None:
        """Record that `lease` is now held under `token`, in the catalog itself: from now on
        a write made under an older token (a holder that paused, lost its lease and woke up)
        is refused by the same compare-and-swap that would make it."""
        def raise_fence(doc: dict[str, Any]) -> None:
            self._check_fence(doc, lease, token)
            doc.setdefault("fences", {})[lease] = token

        self._update(raise_fence)

    def _upload(self, files: Path, manifest: dict[str, Any],
                progress: Transfer | None) -> dict[str, str]:
        assert self.shared is not None
        out: dict[str, str] = {}
        for f in sorted(p for p in files.iterdir() if p.is_file()):
            digest = manifest.get("artifact_sha256") if f.name == manifest.get("artifact") else None
            digest = digest or sha256_file(f)
            self.shared.put_blob(f, digest, _per_file(progress, f.name, f.stat().st_size))
            out[f.name] = digest
        return out

    def _cached(self, image_id: str, name: str, entry: dict[str, Any]) -> Path:
        """`images/<id>/<name>`, downloaded from the shared store first if this machine does
        not have it (its digest checked on the way)."""
        path = self.images_dir / image_id / name
        digest = (entry.get(FILES) or {}).get(name)
        if self.shared is None or digest is None or path.is_file():
            return path
        self.shared.get_blob(digest, path)
        return path

    def record_file(self, image_id: str, name: str) -> Path | None:
        """One of an image's record files (its attestation, say; not the artifact) on this
        machine, downloaded from the shared store first (digest checked); None: it has none."""
        entry = self._read()["images"].get(image_id)
        path = (self.quarantine_dir / image_id / name if entry is None
                else self._cached(image_id, name, entry))
        return path if path.is_file() else None

    def fetch(self, image_id: str, progress: Transfer | None = None) -> Path:
        """The image's directory with its records on this machine (manifest, SBOM, junit,
        timings, package index: downloaded from the shared store where missing); the
        artifact comes only through `verified`, which checks its bytes."""
        entry = self._read()["images"].get(image_id)
        if entry is None or self.shared is None:
            return self.image_dir(image_id)
        for name, digest in sorted((entry.get(FILES) or {}).items()):
            path = self.images_dir / image_id / name
            if name != entry.get("artifact") and not path.is_file():
                self.shared.get_blob(digest, path, _per_file(progress, name, 0))
        return self.images_dir / image_id

    def get(self, image_id: str) -> ImageRecord:
        doc = self._read()
        entry = doc["images"].get(image_id)
        if entry is None:
            q = self.quarantine_dir / image_id / "manifest.json"
            if q.is_file():
                m = json.loads(q.read_text())
                stage = doc.get("retention", {}).get(image_id)
                return ImageRecord(
                    id=image_id, name=m["name"], env=m["env"], fingerprint=m["fingerprint"],
                    created=m["created"], status=QUARANTINED, artifact=m["artifact"],
                    extra={"stage": stage["stage"], "stage_at": stage["at"]} if stage else {},
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
        hits = self._with_fingerprint(name, fingerprint)
        return hits[-1] if hits else None

    def _with_fingerprint(self, name: str, fingerprint: str) -> builtins.list[ImageRecord]:
        return [
            r for r in self.list(name, quarantined=False)
            if r.fingerprint == fingerprint and r.status == VALIDATED and r.extra.get("stage") != DISABLED
        ]

    def find_intact(self, name: str, fingerprint: str) -> tuple[ImageRecord | None, builtins.list[str]]:
        """What a bake may skip to: the newest validated image with `fingerprint` whose
        artifact still holds the bytes its manifest records (`verified`). Each newer one whose
        bytes changed is marked corrupt on the way; the reasons come back with the hit."""
        refused: builtins.list[str] = []
        doc = self._read()
        for hit in reversed(self._with_fingerprint(name, fingerprint)):
            digest = self._remote_only(hit, doc)
            if digest is not None:  # in the shared store only: its blob was hashed when it was published
                assert self.shared is not None
                if self.shared.has_blob(digest):
                    return hit, refused
                refused.append(f"image {hit.id}: its {hit.artifact} ({digest}) is not in {self.where}")
                continue
            try:
                self.verified(hit.id)
            except IntegrityError as err:
                refused.append(err.message)
                continue
            return hit, refused
        return None, refused

    def _remote_only(self, rec: ImageRecord, doc: dict[str, Any]) -> str | None:
        """The artifact's blob digest (in the catalog `doc`) when the image's bytes are in the
        shared store and not on this machine (a skip then needs no download: the bytes are
        checked when a build, validate or export fetches them); None otherwise."""
        if self.shared is None or (self.image_dir(rec.id) / rec.artifact).is_file():
            return None
        digest = ((doc["images"].get(rec.id) or {}).get(FILES) or {}).get(rec.artifact)
        return str(digest) if digest else None

    def verified(self, image_id: str) -> Path:
        """The image's artifact, once it is known to hold the bytes of the manifest's
        `artifact_sha256`: its `artifact_proof` still holds (the file's stat is the one
        recorded when it was last hashed), else its sha256 is computed and compared (and a new
        proof recorded when it matches). With shared state a missing file is downloaded (the
        download is checked against the digest), and a cached copy whose bytes changed is
        dropped and downloaded again: the image itself is only as bad as its blob.

        On a mismatch (or a missing file) the image is marked `corrupt` in the catalog, so no
        bake skips to it, builds on it or promotes it again, and IntegrityError names the image
        and both hashes. A manifest without the hash (made before it was recorded) is trusted."""
        rec = self.get(image_id)
        path = self.image_dir(image_id) / rec.artifact
        if rec.status == CORRUPT:
            bad = rec.extra.get("corrupt") or {}
            raise IntegrityError(f"image {image_id} is marked corrupt: its {rec.artifact} has sha256 "
                                 f"{bad.get('actual')}, its manifest {bad.get('expected')}")
        expected = self.manifest(image_id).get("artifact_sha256")
        if not expected:
            return path
        if same_file(self._proof(image_id), path):
            return path
        entry = self._read()["images"].get(image_id) or {}
        if self.shared is not None and (entry.get(FILES) or {}).get(rec.artifact):
            if path.is_file() and sha256_file(path) == expected:
                self._set_proof(image_id, artifact_proof(path))
                return path
            path.unlink(missing_ok=True)  # not there, or this machine's copy changed: the blob again
            try:
                self._cached(image_id, rec.artifact, entry)
            except IntegrityError as err:
                self._mark_corrupt(image_id, expected, "(blob differs)")
                raise IntegrityError(f"image {image_id}: {err.message}: marked corrupt, nothing will use it") from None
            self._set_proof(image_id, artifact_proof(path))
            return path
        proof = artifact_proof(path)
        actual = sha256_file(path) if path.is_file() else "(missing)"
        if actual != expected:
            self._mark_corrupt(image_id, expected, actual)
            raise IntegrityError(f"image {image_id}: {path} has sha256 {actual}, its manifest says {expected}: "
                                 "marked corrupt, nothing will use it")
        if proof is not None and same_file(proof, path):  # unchanged while it was hashed
            self._set_proof(image_id, proof)
        return path

    def _mark_corrupt(self, image_id: str, expected: str, actual: str) -> None:
        def mark(doc: dict[str, Any]) -> None:
            entry = doc["images"].get(image_id)
            if entry is not None:
                entry.update(status=CORRUPT, corrupt={"expected": expected, "actual": actual,
                                                      "at": ch.timestamp(datetime.now(UTC))})
        self._update(mark)
        self._set_proof(image_id, None)

    def manifest(self, image_id: str) -> dict[str, Any]:
        doc = self._read()
        entry = doc["images"].get(image_id)
        if entry is None:
            path = self.quarantine_dir / image_id / "manifest.json"
            if not path.is_file():
                raise NotFoundError(f"unknown image id {image_id!r} in {self.where}")
        else:
            path = self._cached(image_id, "manifest.json", entry)
        out: dict[str, Any] = json.loads(path.read_text())
        return out

    # -- channels and revocation ---------------------------------------------------------
    def _usable(self, doc: dict[str, Any], image_id: str) -> dict[str, Any]:
        """The catalog entry of an image that may be promoted; ConfigError otherwise."""
        entry = doc["images"].get(image_id)
        if entry is None:
            rec = self.get(image_id)  # NotFoundError if unknown; a quarantined record else
            raise ConfigError(
                f"image {image_id} is {rec.status}: it failed validation and can never be promoted"
            )
        status = entry.get("status")
        if status == REVOKED:
            why = entry.get("revoked_reason", "")
            raise ConfigError(
                f"image {image_id} is revoked{f' ({why})' if why else ''}: it can never be promoted"
            )
        if status != VALIDATED:
            raise ConfigError(f"image {image_id} is {status}: only validated images can be promoted")
        stage = doc.get("retention", {}).get(image_id, {})
        if stage.get("stage") == DISABLED:
            raise ConfigError(
                f"image {image_id} was disabled by gc at {stage.get('at')}: it can't be promoted "
                "until it is restored"
            )
        return dict(entry)

    def promote(
        self, image_id: str, channel: str, user: str | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """Point `channel` at `image_id`; a no-op (`changed: false`) if it already does.

        The move (time, user, from, to) is appended to the channel's history.
        """
        ch.check_channel(channel)
        user, now = user or current_user(), now or datetime.now(UTC)
        self._usable(self._read(), image_id)  # the clear refusals first, then the bytes
        self.verified(image_id)

        op = uuid.uuid4().hex[:16]  # this promote's own mark on its move

        def move_channel(doc: dict[str, Any]) -> tuple[str, str | None, dict[str, Any] | None]:
            entry = self._usable(doc, image_id)
            hist = doc["channels"].setdefault(entry["name"], {}).setdefault(channel, [])
            if hist and hist[-1].get("op") == op:  # our write landed, its answer was lost: the retry finds it
                return entry["name"], hist[-1].get("from"), hist[-1]
            was = ch.current(hist)
            move = ch.promote_entry(hist, image_id, user, now)
            if move is not None:
                hist.append({**move, "op": op})
            return entry["name"], was, move

        name, was, move = self._update(move_channel)
        return {
            "image": name,
            "channel": channel,
            "image_id": image_id,
            "previous": was,
            "changed": move is not None,
            "at": move["at"] if move else None,
            "user": user,
        }

    def revoke(
        self, image_id: str, reason: str, user: str | None = None, now: datetime | None = None
    ) -> dict[str, Any]:
        """Revoke an image for good; every channel on it falls back (see `channels`), and
        the fallback is recorded in the channel's history too."""
        reason = ch.clean_reason(reason)
        user, now = user or current_user(), now or datetime.now(UTC)

        def revoke_entry(doc: dict[str, Any]) -> dict[str, Any]:
            entry = doc["images"].get(image_id)
            if entry is None:
                rec = self.get(image_id)  # NotFoundError if unknown
                raise ConfigError(
                    f"image {image_id} is {rec.status}: it was never registered as usable, "
                    "there is nothing to revoke"
                )
            name = entry["name"]
            previous_status = entry.get("status")
            result = {"image_id": image_id, "image": name, "previous_status": previous_status}
            if previous_status == REVOKED:
                return {
                    **result,
                    "reason": entry.get("revoked_reason", ""),
                    "changed": False,
                    "at": entry.get("revoked_at"),
                    "user": entry.get("revoked_by"),
                    "channels_moved": {},
                    "channels_left": [],
                }
            at = ch.timestamp(now)
            entry.update(status=REVOKED, revoked_reason=reason, revoked_at=at, revoked_by=user)

            def valid(other: str) -> bool:
                e = doc["images"].get(other)
                return e is not None and e.get("status") == VALIDATED

            moved: dict[str, str] = {}
            left: builtins.list[str] = []
            for channel, hist in sorted(doc["channels"].get(name, {}).items()):
                move = ch.fallback_entry(hist, image_id, valid, user, now, reason)
                if move is not None:
                    hist.append(move)
                    if move["image_id"]:
                        moved[channel] = move["image_id"]
                    else:
                        left.append(channel)
            return {**result, "reason": reason, "changed": True, "at": at, "user": user,
                    "channels_moved": moved, "channels_left": left}

        return self._update(revoke_entry)

    def history(self, name: str, channel: str) -> ChannelHistory:
        """Every move of the channel, oldest first (`models.history_entry`); `status` is the
        current status of the move's image (None for a move to nothing)."""
        ch.check_channel(channel)
        doc = self._read()
        out = []
        for n, e in enumerate(doc["channels"].get(name, {}).get(channel, []), start=1):
            image = doc["images"].get(e.get("image_id") or "")
            out.append(history_entry(
                n, at=e.get("at", ""), image_id=e.get("image_id"), previous=e.get("from"),
                action=e.get("action", "promote"), user=e.get("user"), reason=e.get("reason"),
                status=image.get("status") if image else None))
        return out

    def previous(self, name: str, channel: str) -> dict[str, Any] | None:
        """The entry before the current one: exactly where the channel pointed before."""
        return ch.previous(self.history(name, channel))

    def rollback_target(self, name: str, channel: str) -> str | None:
        return ch.rollback_target(self.history(name, channel))

    def channel_map(self, name: str | None = None) -> dict[str, dict[str, str | None]]:
        """`{image name: {channel: current image id or None}}`."""
        chans = self._read()["channels"]
        return {
            n: {c: ch.current(h) for c, h in sorted(chans[n].items())}
            for n in sorted(chans)
            if name is None or n == name
        }

    def histories(self, names: Iterable[str] | None = None) -> dict[str, dict[str, ChannelHistory]]:
        """Every channel's history (`history` shape), `{image name: {channel: history}}`;
        with `names`, of those image names only."""
        chans = self._read()["channels"]
        wanted = set(chans) if names is None else set(names)
        return {n: {c: self.history(n, c) for c in sorted(chans[n])} for n in sorted(chans) if n in wanted}

    # -- moving in (invoke store.push) ------------------------------------------------------
    def push(self, dest: LocalStore, progress: Transfer | None = None) -> dict[str, Any]:
        """Copy this store's registered images (their files as blobs), retention stages and
        channel histories into `dest` (a store on shared state). Images `dest` has already
        are left as they are; a channel `dest` already has keeps its own history (`kept`).
        Idempotent: a second push copies nothing."""
        doc = self._read()
        there = dest._read()
        pushed: builtins.list[str] = []
        for image_id, entry in sorted(doc["images"].items()):
            if image_id in there["images"]:
                continue
            files = self.images_dir / image_id
            manifest = json.loads((files / "manifest.json").read_text())
            copied = dict(entry)
            copied.pop(PROOF, None)
            if dest.shared is not None:
                copied[FILES] = dest._upload(files, manifest, progress)

            def add(d: dict[str, Any], image_id: str = image_id, copied: dict[str, Any] = copied) -> None:
                d["images"].setdefault(image_id, copied)
                stage = doc.get("retention", {}).get(image_id)
                if stage is not None:
                    d.setdefault("retention", {}).setdefault(image_id, stage)

            dest._update(add)
            pushed.append(image_id)
        channels: builtins.list[str] = []
        kept: builtins.list[str] = []

        def merge(d: dict[str, Any]) -> None:
            channels.clear()
            kept.clear()
            for name, chans in sorted(doc["channels"].items()):
                for channel, hist in sorted(chans.items()):
                    mine = d["channels"].setdefault(name, {})
                    if mine.get(channel):
                        kept.append(f"{name}/{channel}")
                    else:
                        mine[channel] = hist
                        channels.append(f"{name}/{channel}")

        dest._update(merge)
        return {"from": self.where, "to": dest.where, "images": pushed, "channels": channels, "kept": kept}

    # -- retention (invoke gc) -----------------------------------------------------------
    @property
    def failed_dir(self) -> Path:
        return self.root / "failed"

    def set_stage(self, image_id: str, stage: str, now: datetime,
                  still_used: Callable[[], str | None] = lambda: None) -> str | None:
        """Record that `image_id` entered a retention stage (`deprecated`, `disabled`).

        `still_used` is asked under the store lock; if it names a use, nothing changes and
        that reason is returned. None: recorded."""
        self.get(image_id)  # NotFoundError if unknown

        def enter(doc: dict[str, Any]) -> str | None:
            why = still_used()
            if why is None:
                doc.setdefault("retention", {})[image_id] = {"stage": stage, "at": ch.timestamp(now)}
            return why

        return self._update(enter)

    def restore(self, image_id: str) -> dict[str, Any] | None:
        """Take an image's retention stage back (usable again); the stage it had, if any."""
        self.get(image_id)  # NotFoundError if unknown
        def take_back(doc: dict[str, Any]) -> dict[str, Any] | None:
            stage: dict[str, Any] | None = doc.get("retention", {}).pop(image_id, None)
            return stage

        return self._update(take_back)

    def remove(self, image_id: str, still_used: Callable[[], str | None]) -> str | None:
        """Delete an image: its catalog entry and retention stage, then its directory.

        `still_used` is asked under the store lock (no promote can run meanwhile); if it
        names a use, nothing is removed and that reason is returned. None: removed.
        """
        rec = self.get(image_id)
        directory = (self.quarantine_dir if rec.status == QUARANTINED else self.images_dir) / image_id
        trash = self.tmp_dir / f"gc-{uuid.uuid4().hex[:12]}"

        files: dict[str, str] = {}

        def drop(doc: dict[str, Any]) -> str | None:
            why = still_used()
            if why is None:
                files.clear()
                files.update((doc["images"].pop(image_id, None) or {}).get(FILES) or {})
                doc.get("retention", {}).pop(image_id, None)
            return why

        why = self._update(drop)
        if why is not None:
            return why
        self._set_proof(image_id, None)
        self._drop_blobs(set(files.values()))
        if directory.exists():
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return None

    def _drop_blobs(self, digests: set[str]) -> None:
        """The shared blobs of a removed image that no other image names, deleted: each is
        looked up in the catalog as it is right before its delete (another image registered
        meanwhile may share it; `put` re-uploads a blob it named that was deleted under it)."""
        if self.shared is None or not digests:
            return
        for digest in sorted(digests):
            named = {d for e in self._read()["images"].values() for d in (e.get(FILES) or {}).values()}
            if digest not in named:
                self.shared.delete(blob_key(digest))

    def image_dir(self, image_id: str) -> Path:
        rec = self.get(image_id)
        return (self.quarantine_dir if rec.status == QUARANTINED else self.images_dir) / rec.id

    # -- work in progress ----------------------------------------------------------------
    def sweep_stale(self) -> builtins.list[Path]:
        """Remove work directories whose owning process is gone (a killed bake), and stop
        whatever still runs on them."""
        removed: builtins.list[Path] = []
        if not self.tmp_dir.is_dir():
            return removed
        for d in self.tmp_dir.iterdir():
            try:
                pid = int((d / "owner.pid").read_text())
            except (FileNotFoundError, ValueError):
                pid = 0
            if pid and pid_alive(pid):
                continue
            kill_processes_mentioning(str(d))  # a VM or Packer that outlived its bake
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

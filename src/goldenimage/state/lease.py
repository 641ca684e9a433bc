"""Leases on a state backend: locks that expire, with a heartbeat and fencing.

A lease is a record `leases/<name>` holding its holder (host, pid, user), when it was taken,
when it expires and a fencing `token` that grows with every holder. Taking a free lease is a
create-only write; taking over an expired one is a compare-and-swap on the version that was
read (two takers: one wins); a heartbeat moves the expiry by CAS and fails if the lease was
taken over meanwhile. Every write made under a lease goes through `fenced_put`, which puts the
token into the record and refuses the write when the record already carries a higher token
(a newer holder wrote it): a holder that was paused past its expiry and wakes up cannot
overwrite its successor's work (Kleppmann, "How to do distributed locking").

Times come from `clock` (wall clock, seconds); every wait sleeps with backoff.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import OperationFailed
from ..locks import Lock
from . import ABSENT, Backend, Conflict

Clock = Callable[[], float]


class LeaseHeld(OperationFailed):
    """Someone else holds the lease (the message names them, and since when)."""


class LeaseLost(OperationFailed):
    """This holder's lease expired and was taken over, or a newer holder wrote the record."""


def holder() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return {"host": socket.gethostname(), "pid": os.getpid(), "user": user}


@dataclass(frozen=True)
class Lease:
    name: str
    holder: dict[str, Any]
    token: int
    since: float
    expires: float
    version: str = ""  # the backend version of the lease record as this holder wrote it

    def describe(self, now: float) -> str:
        h = self.holder
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
        left = self.expires - now
        state = f"expires in {left:.0f}s" if left > 0 else f"expired {-left:.0f}s ago"
        return f"lease {self.name} is held by {h.get('user')}@{h.get('host')} pid {h.get('pid')} since {since} ({state})"

    def body(self) -> bytes:
        doc = {k: v for k, v in asdict(self).items() if k != "version"}
        return json.dumps(doc, sort_keys=True).encode()


def _key(name: str) -> str:
    return f"leases/{name}"


def read(backend: Backend, name: str) -> Lease | None:
    got = backend.get(_key(name))
    if got is None:
        return None
    doc = json.loads(got.data)
    return Lease(name=doc["name"], holder=doc["holder"], token=int(doc["token"]), since=float(doc["since"]),
                 expires=float(doc["expires"]), version=got.version)


def try_acquire(backend: Backend, name: str, ttl: float, *, clock: Clock = time.time,
                who: dict[str, Any] | None = None) -> Lease:
    """Take the lease now or raise LeaseHeld (naming the holder)."""
    now = clock()
    current = read(backend, name)
    if current is not None and current.expires > now:
        raise LeaseHeld(current.describe(now))
    token = (current.token + 1) if current is not None else 1
    mine = Lease(name, who or holder(), token, now, now + ttl)
    try:
        version = backend.put(_key(name), mine.body(), expect=current.version if current else ABSENT)
    except Conflict:
        other = read(backend, name)
        raise LeaseHeld(other.describe(clock()) if other else f"lease {name} was just taken") from None
    return replace(mine, version=version)


def acquire(backend: Backend, name: str, ttl: float, *, wait: float = 0.0, clock: Clock = time.time,
            sleep: Callable[[float], None] = time.sleep, on_wait: Callable[[str], None] | None = None,
            who: dict[str, Any] | None = None) -> Lease:
    """Take the lease, waiting up to `wait` seconds for its holder to release it or for it to
    expire (polling with backoff, at most every `ttl / 4` seconds)."""
    deadline = clock() + wait
    delay = 0.05
    told = False
    while True:
        try:
            return try_acquire(backend, name, ttl, clock=clock, who=who)
        except LeaseHeld as held:
            if clock() >= deadline:
                raise
            if on_wait is not None and not told:
                on_wait(str(held))
                told = True
            sleep(min(delay, max(0.0, deadline - clock())))
            delay = min(delay * 2, max(0.05, ttl / 4))


def heartbeat(backend: Backend, lease: Lease, ttl: float, *, clock: Clock = time.time) -> Lease:
    """Move the expiry; LeaseLost if someone took the lease over since."""
    moved = replace(lease, expires=clock() + ttl)
    try:
        version = backend.put(_key(lease.name), moved.body(), expect=lease.version)
    except Conflict:
        raise LeaseLost(f"lease {lease.name} (token {lease.token}) was taken over: stop") from None
    return replace(moved, version=version)


def release(backend: Backend, lease: Lease) -> None:
    """Give the lease back (a no-op if it was taken over meanwhile)."""
    with contextlib.suppress(Conflict):
        backend.delete(_key(lease.name), expect=lease.version)


def still_held(backend: Backend, lease: Lease, now: float) -> bool:
    """The lease record is still this holder's (its token) and not expired at `now`."""
    current = read(backend, lease.name)
    return current is not None and current.token == lease.token and current.expires > now


def fenced_put(backend: Backend, lease: Lease, key: str, doc: dict[str, Any], *, clock: Clock = time.time) -> str:
    """Write record `key` (a JSON document) under `lease`: refused (LeaseLost) when the record
    was written under a newer lease, or when the lease itself is no longer this holder's."""
    current = backend.get(key)
    if current is not None:
        seen = json.loads(current.data).get("fence", 0)
        if int(seen) > lease.token:
            raise LeaseLost(f"{key} was written under token {seen}, newer than this holder's {lease.token}: "
                            "refused")
    if not still_held(backend, lease, clock()):
        raise LeaseLost(f"lease {lease.name} (token {lease.token}) is no longer held: {key} not written")
    body = json.dumps({**doc, "fence": lease.token}, sort_keys=True).encode()
    return backend.put(key, body, expect=current.version if current else ABSENT)


class LeaseLock(Lock):
    """A lease as one of the toolkit's locks (`locks.Lock`): taken by `held`, kept alive by a
    heartbeat thread every `ttl / 3` seconds while held, given back on release. A holder
    that dies stops its heartbeat; the lease expires `ttl` seconds later and the next taker
    takes it over. `check()` raises LeaseLost once the heartbeat found the lease taken over,
    so the holder's next write is refused instead of made."""

    def __init__(self, backend: Backend, name: str, command: str, ttl: float = 120.0) -> None:
        self.backend, self.lease_name, self.command, self.ttl = backend, name, command, ttl
        self.name = f"lease {name} on {backend.name}"
        self.lease: Lease | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def try_acquire(self) -> dict[str, Any] | None:
        try:
            self.lease = try_acquire(self.backend, self.lease_name, self.ttl,
                                     who={**holder(), "command": self.command})
        except LeaseHeld:
            current = read(self.backend, self.lease_name)
            if current is None:
                return {"holder": "someone", "command": "?", "since": "just now"}
            h = current.holder
            return {"holder": f"{h.get('user')}@{h.get('host')}", "pid": h.get("pid"),
                    "command": h.get("command", "?"),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current.since))}
        self._stop.clear()
        self.lost = None
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease {self.lease_name}", daemon=True)
        self._beat.start()
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            lease = self.lease
            if lease is None:
                return
            try:
                self.lease = heartbeat(self.backend, lease, self.ttl)
            except LeaseLost as lost:
                self.lost = lost.message
                return
            except Exception:  # a failed heartbeat is retried at the next beat; expiry decides
                continue

    def check(self) -> None:
        if self.lost is not None:
            raise LeaseLost(self.lost)
        lease = self.lease
        if lease is None or not still_held(self.backend, lease, time.time()):
            raise LeaseLost(f"lease {self.lease_name} is no longer this run's: nothing more is written")

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        if self.lease is not None:
            with contextlib.suppress(Exception):
                release(self.backend, self.lease)
            self.lease = None

"""The state backends for real: a directory, and a bucket on the moto server's S3 over HTTP
(real conditional writes). Compare-and-swap under contention, content-addressed blobs,
leases raced by threads and processes, takeover after SIGKILL, fencing, S3 faults."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from goldenimage.errors import IntegrityError
from goldenimage.state import ABSENT, BucketBackend, Conflict, DirectoryBackend, blob_key
from goldenimage.state import lease as leases
from goldenimage.state.lease import LeaseHeld, LeaseLost

pytestmark = pytest.mark.integration
BUCKET = "goldenimage-state"


def s3_client(endpoint: str, attempts: int = 1) -> Any:
    return boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                 aws_secret_access_key="testing").client(
        "s3", endpoint_url=endpoint,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": attempts}))


@pytest.fixture
def bucket(moto_endpoint: str) -> Any:
    s3 = s3_client(moto_endpoint, attempts=5)
    s3.create_bucket(Bucket=BUCKET)
    return s3


@pytest.fixture(params=["dir", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "dir":
        return DirectoryBackend(tmp_path / "state")
    s3 = request.getfixturevalue("bucket")
    return BucketBackend(s3, BUCKET, "team/local")


def test_compare_and_swap(backend: Any) -> None:
    v1 = backend.put("records/catalog.json", b"one", expect=ABSENT)
    with pytest.raises(Conflict, match="exists already"):
        backend.put("records/catalog.json", b"other", expect=ABSENT)
    v2 = backend.put("records/catalog.json", b"two", expect=v1)
    with pytest.raises(Conflict, match="changed since it was read"):
        backend.put("records/catalog.json", b"stale", expect=v1)
    got = backend.get("records/catalog.json")
    assert got.data == b"two" and got.version == v2
    assert backend.get("records/none.json") is None
    assert backend.list("records/") == ["records/catalog.json"]


def test_no_update_is_lost_among_many_writers(backend: Any) -> None:
    """8 threads each add their name to one record 5 times, read-modify-write with CAS and
    retry on Conflict: every addition is there at the end."""
    backend.put("records/moves.json", b"[]", expect=ABSENT)

    def writer(n: int) -> None:
        for i in range(5):
            while True:
                cur = backend.get("records/moves.json")
                try:
                    backend.put("records/moves.json", json.dumps([*json.loads(cur.data), f"{n}-{i}"]).encode(),
                                expect=cur.version)
                    break
                except Conflict:
                    time.sleep(0.001)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    moves = json.loads(backend.get("records/moves.json").data)
    assert sorted(moves) == sorted(f"{n}-{i}" for n in range(8) for i in range(5))


def test_blobs_are_content_addressed_and_checked(backend: Any, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(os.urandom(3 << 20))
    from goldenimage.fsutil import sha256_file

    digest = "sha256:" + sha256_file(disk)
    seen: list[int] = []
    assert backend.put_blob(disk, digest, seen.append) == blob_key(digest)
    assert backend.has_blob(digest) and seen and seen[-1] == 3 << 20
    out = backend.get_blob(digest, tmp_path / "back" / "disk.qcow2")
    assert out.read_bytes() == disk.read_bytes()
    # bytes that are not the digest's are not left under the digest, nor under tmp/
    other = tmp_path / "other.qcow2"
    other.write_bytes(b"not those bytes")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(IntegrityError):
        backend.put_blob(other, wrong)
    assert not backend.has_blob(wrong) and not backend.list("tmp/")


def test_a_blob_whose_stored_bytes_changed_is_refused(tmp_path: Path, bucket: Any) -> None:
    backend = BucketBackend(bucket, BUCKET)
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"the real image")
    from goldenimage.fsutil import sha256_file

    digest = "sha256:" + sha256_file(disk)
    backend.put_blob(disk, digest)
    bucket.put_object(Bucket=BUCKET, Key=blob_key(digest), Body=b"tampered")
    with pytest.raises(IntegrityError, match="refused"):
        backend.get_blob(digest, tmp_path / "fetched.qcow2")
    assert not (tmp_path / "fetched.qcow2").exists()


def test_exactly_one_of_many_threads_takes_a_lease(backend: Any) -> None:
    won: list[int] = []
    held: list[str] = []
    start = threading.Barrier(12)

    def take(n: int) -> None:
        start.wait()
        try:
            leases.try_acquire(backend, "bake-web", ttl=60, who={"host": "h", "pid": n, "user": "u"})
            won.append(n)
        except LeaseHeld as exc:
            held.append(str(exc))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(held) == 11
    assert all(m.startswith("lease bake-web is held by u@h pid ") or m.endswith("was just taken") for m in held)


def test_a_paused_holder_cannot_overwrite_its_successor(backend: Any) -> None:
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    a = leases.try_acquire(backend, "promote-web-stable", ttl=30, clock=clock, who={"host": "a", "pid": 1, "user": "a"})
    leases.fenced_put(backend, a, "records/channel.json", {"image": "web-1"}, clock=clock)
    with pytest.raises(LeaseHeld, match="held by a@a pid 1"):
        leases.try_acquire(backend, "promote-web-stable", ttl=30, clock=clock)
    now[0] += 31  # a is paused past its expiry
    b = leases.try_acquire(backend, "promote-web-stable", ttl=30, clock=clock, who={"host": "b", "pid": 2, "user": "b"})
    assert b.token == a.token + 1
    leases.fenced_put(backend, b, "records/channel.json", {"image": "web-2"}, clock=clock)
    with pytest.raises(LeaseLost, match="newer than this holder's"):
        leases.fenced_put(backend, a, "records/channel.json", {"image": "web-stale"}, clock=clock)
    with pytest.raises(LeaseLost, match="taken over"):
        leases.heartbeat(backend, a, ttl=30, clock=clock)
    assert json.loads(backend.get("records/channel.json").data) == {"image": "web-2", "fence": b.token}
    leases.release(backend, a)  # a no-op: not a's any more
    assert leases.read(backend, "promote-web-stable").token == b.token
    leases.release(backend, b)
    assert leases.read(backend, "promote-web-stable") is None


def _hold(endpoint: str, root: str, ready: Any) -> None:
    """A process that takes the lease and heartbeats it until it is killed."""
    backend = BucketBackend(s3_client(endpoint, 5), BUCKET) if endpoint else DirectoryBackend(Path(root))
    lease = leases.acquire(backend, "nightly-local", ttl=2, wait=30)
    ready.put(lease.token)
    while True:
        time.sleep(0.5)
        lease = leases.heartbeat(backend, lease, ttl=2)


def _race(endpoint: str, root: str, out: Any, gate: Any) -> None:
    backend = BucketBackend(s3_client(endpoint, 5), BUCKET) if endpoint else DirectoryBackend(Path(root))
    gate.wait()
    try:
        lease = leases.try_acquire(backend, "bake-cache", ttl=60)
        out.put(("won", lease.token))
    except LeaseHeld as exc:
        out.put(("held", str(exc)))


@pytest.fixture
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "s3":
        request.getfixturevalue("bucket")
        yield request.getfixturevalue("moto_endpoint"), ""
    else:
        yield "", str(tmp_path / "state")


@pytest.mark.parametrize("where", ["dir", "s3"], indirect=True)
def test_processes_race_for_a_lease_and_one_wins(where: tuple[str, str]) -> None:
    ctx = multiprocessing.get_context("spawn")
    out, gate = ctx.Queue(), ctx.Barrier(4)
    procs = [ctx.Process(target=_race, args=(*where, out, gate)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sorted(r[0] for r in results) == ["held", "held", "held", "won"], results


@pytest.mark.parametrize("where", ["dir", "s3"], indirect=True)
def test_a_killed_holders_lease_is_taken_over_after_it_expires(where: tuple[str, str]) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    holder = ctx.Process(target=_hold, args=(*where, ready))
    holder.start()
    token = ready.get(timeout=60)
    endpoint, root = where
    backend = BucketBackend(s3_client(endpoint, 5), BUCKET) if endpoint else DirectoryBackend(Path(root))
    with pytest.raises(LeaseHeld, match=f"pid {holder.pid}"):  # alive and heartbeating: held
        leases.try_acquire(backend, "nightly-local", ttl=2)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=30)
    waited: list[str] = []
    mine = leases.acquire(backend, "nightly-local", ttl=2, wait=30, on_wait=waited.append)
    assert mine.token == token + 1 and mine.holder["pid"] == os.getpid()
    assert len(waited) <= 1  # said once who holds it, then waited with backoff


class Faults:
    """S3 requests answered with a fault before they are sent: the first `n` with a
    connection reset, then `n` with 503 SlowDown; botocore's standard retries take them."""

    def __init__(self, n: int) -> None:
        self.resets = self.slowdowns = n

    def __call__(self, request: Any, **_: Any) -> Any:
        if self.resets:
            self.resets -= 1
            raise ConnectionClosedError(endpoint_url=request.url)
        if self.slowdowns:
            self.slowdowns -= 1
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

            class Raw:
                def stream(self, **_: Any) -> Iterator[bytes]:
                    yield body

            return AWSResponse(request.url, 503, {}, Raw())
        return None


def test_s3_faults_are_retried_and_a_lost_race_is_one_line(bucket: Any, moto_endpoint: str) -> None:
    s3 = s3_client(moto_endpoint, attempts=5)
    faults = Faults(2)
    s3.meta.events.register("before-send.s3", faults)
    backend = BucketBackend(s3, BUCKET, "p")
    v = backend.put("records/a.json", b"1", expect=ABSENT)  # two resets, two 503s, then through
    assert faults.resets == faults.slowdowns == 0
    assert backend.get("records/a.json").data == b"1"
    with pytest.raises(Conflict) as err:
        backend.put("records/a.json", b"2", expect=v + "x")
    assert str(err.value) == "s3://goldenimage-state/p: records/a.json changed since it was read"


def _push(endpoint: str, path: str, digest: str, started: Any) -> None:
    """Child: put_blob of `path`, telling the parent once the first parts are sent."""
    def progress(done: int) -> None:
        if done >= 16 << 20:
            started.set()

    BucketBackend(s3_client(endpoint, attempts=5), BUCKET, "team/local").put_blob(Path(path), digest, progress)


def test_a_push_killed_halfway_publishes_nothing_and_a_second_push_completes(tmp_path: Path, bucket: Any,
                                                                            moto_endpoint: str) -> None:
    """SIGKILL of a real process in the middle of a multipart upload: nothing is under the
    digest (an incomplete multipart upload is no object), and the next push publishes it."""
    from goldenimage.fsutil import sha256_file

    disk = tmp_path / "disk.qcow2"
    with disk.open("wb") as fh:
        for _ in range(96):
            fh.write(os.urandom(1 << 20))
    digest = "sha256:" + sha256_file(disk)
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    child = ctx.Process(target=_push, args=(moto_endpoint, str(disk), digest, started))
    child.start()
    assert started.wait(120), "the upload never started"
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(30)
    backend = BucketBackend(bucket, BUCKET, "team/local")
    assert not backend.has_blob(digest)
    assert not bucket.list_objects_v2(Bucket=BUCKET).get("Contents"), "a killed push left an object"
    assert bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads"), "the kill came after the upload"
    backend.put_blob(disk, digest)
    backend.get_blob(digest, tmp_path / "back.qcow2")  # the digest checked on the way
    assert sha256_file(tmp_path / "back.qcow2") == digest.removeprefix("sha256:")

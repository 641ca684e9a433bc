"""The image store on shared state, for real: two machines (two store directories) sharing one
bucket on the moto server's S3. An image registered on one is listed, promoted and used on
the other; its bytes are downloaded only when needed and checked; concurrent promotes from
several processes all land in one history; leases keep gc and bakes to one machine."""

from __future__ import annotations

import itertools
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from goldenimage.errors import IntegrityError
from goldenimage.fsutil import sha256_file
from goldenimage.models import ImageRecord
from goldenimage.state import BucketBackend, blob_key
from goldenimage.state.lease import LeaseLock
from goldenimage.store import LocalStore

from .test_state import BUCKET, s3_client

pytestmark = pytest.mark.integration


def record(i: int, name: str = "web", fp: str = "f" * 64) -> ImageRecord:
    return ImageRecord(id=f"{name}-{i}", name=name, env="local", fingerprint=fp,
                       created=f"2026-12-02T10:00:{i:02d}Z", status="validated", artifact="disk.qcow2")


def put(store: LocalStore, rec: ImageRecord, payload: bytes = b"qcow2 bytes") -> None:
    with store.workspace() as ws:
        img = ws / "image"
        img.mkdir()
        (img / "disk.qcow2").write_bytes(payload)
        (img / "sbom.cdx.json").write_text("{}")
        store.put(rec, {"id": rec.id, "name": rec.name, "env": rec.env, "fingerprint": rec.fingerprint,
                        "created": rec.created, "artifact": rec.artifact,
                        "artifact_sha256": sha256_file(img / "disk.qcow2")}, img)


@pytest.fixture
def bucket(moto_endpoint: str) -> Any:
    s3 = s3_client(moto_endpoint, attempts=5)
    s3.create_bucket(Bucket=BUCKET)
    return s3


def machine(tmp_path: Path, bucket: Any, name: str) -> LocalStore:
    return LocalStore(tmp_path / name / "store", BucketBackend(bucket, BUCKET, "team/local"))


def test_an_image_made_on_one_machine_is_used_on_another(tmp_path: Path, bucket: Any) -> None:
    a, b = machine(tmp_path, bucket, "a"), machine(tmp_path, bucket, "b")
    put(a, record(1), b"the bytes that were validated")
    assert [r.id for r in b.list("web")] == ["web-1"]
    assert b.find_by_fingerprint("web", "f" * 64).id == "web-1"  # type: ignore[union-attr]
    hit, refused = b.find_intact("web", "f" * 64)  # what a bake skips to: the blob is there, nothing downloaded
    assert hit is not None and hit.id == "web-1" and not refused
    assert not (b.images_dir / "web-1" / "disk.qcow2").exists()
    assert b.manifest("web-1")["name"] == "web"
    disk = b.images_dir / "web-1" / "disk.qcow2"
    assert not disk.exists()  # listing and reading the manifest download no artifact
    assert b.verified("web-1").read_bytes() == b"the bytes that were validated"
    moved = b.promote("web-1", "stable", user="bob")
    assert moved["changed"] and a.channel_map("web") == {"web": {"stable": "web-1"}}
    assert not (b.tmp_dir.is_dir() and any(b.tmp_dir.iterdir()))


def test_a_changed_local_copy_is_fetched_again_and_a_changed_blob_is_refused(tmp_path: Path, bucket: Any) -> None:
    a, b = machine(tmp_path, bucket, "a"), machine(tmp_path, bucket, "b")
    put(a, record(1), b"good")
    disk = b.verified("web-1")
    disk.write_bytes(b"evil")  # this machine's cache changed: the blob is still good
    assert b.verified("web-1").read_bytes() == b"good"
    assert b.get("web-1").status == "validated"
    # the blob itself replaced under its digest: nothing downloads it, the image is corrupt
    entry = json.loads(bucket.get_object(Bucket=BUCKET, Key="team/local/catalog.json")["Body"].read())
    digest = entry["images"]["web-1"]["files"]["disk.qcow2"]
    bucket.put_object(Bucket=BUCKET, Key=f"team/local/{blob_key(digest)}", Body=b"evil")
    c = machine(tmp_path, bucket, "c")
    with pytest.raises(IntegrityError, match="web-1"):
        c.verified("web-1")
    assert not (c.images_dir / "web-1" / "disk.qcow2").exists()
    assert a.get("web-1").status == "corrupt"


def _promote_many(args: tuple[str, str, int, list[str]]) -> int:
    endpoint, root, n, images = args
    store = LocalStore(Path(root), BucketBackend(s3_client(endpoint, attempts=5), BUCKET, "team/local"))
    changed = 0
    for i in range(n):
        changed += bool(store.promote(images[i % len(images)], "stable", user=f"p{root[-1]}")["changed"])
    return changed


def test_concurrent_promotes_from_processes_are_all_in_one_history(tmp_path: Path, bucket: Any,
                                                                  moto_endpoint: str) -> None:
    a = machine(tmp_path, bucket, "a")
    for i in range(1, 5):
        put(a, record(i))
    jobs = [(moto_endpoint, str(tmp_path / f"m{k}"), 6, [f"web-{k + 1}", f"web-{(k + 1) % 4 + 1}"])
            for k in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        changed = sum(pool.map(_promote_many, jobs))
    hist = a.history("web", "stable")
    assert len(hist) == changed  # every move that said it moved the channel is there
    for before, after in itertools.pairwise(hist):  # one sequence: each move starts where the last ended
        assert after["from"] == before["image_id"]


def test_two_gc_runs_on_two_machines_hold_one_lease(tmp_path: Path, bucket: Any) -> None:
    shared = BucketBackend(bucket, BUCKET, "team/local")
    first, second = LeaseLock(shared, "gc/local", "gc --apply", ttl=30), LeaseLock(shared, "gc/local", "gc --apply", ttl=30)
    with first.held("gc --apply in local"):
        other = second.try_acquire()
        assert other is not None and "gc --apply" in other["command"]
        first.check()
    assert second.try_acquire() is None
    second.release()


def test_push_copies_a_local_store_with_its_history(tmp_path: Path, bucket: Any) -> None:
    local = LocalStore(tmp_path / "laptop")
    put(local, record(1))
    put(local, record(2))
    local.promote("web-1", "stable", user="alice")
    local.promote("web-2", "stable", user="alice")
    shared = machine(tmp_path, bucket, "runner")
    pushed = local.push(shared)
    assert pushed["images"] == ["web-1", "web-2"] and pushed["channels"] == ["web/stable"]
    assert [h["image_id"] for h in shared.history("web", "stable")] == ["web-1", "web-2"]
    assert shared.verified("web-2").read_bytes() == b"qcow2 bytes"
    again = local.push(shared)
    assert again["images"] == [] and again["kept"] == ["web/stable"]  # idempotent; the bucket's history wins


def test_bad_state_settings_are_one_line_exit_2(tmp_path: Path, moto_endpoint: str, bucket: Any) -> None:
    from tests.conftest import copy_project, run_invoke

    project = copy_project(tmp_path / "project")
    settings = project / "inventories" / "local" / "goldenimage.yml"
    base = settings.read_text()
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    cases = [
        (f"state: {{bucket: no-such-bucket, endpoint_url: '{moto_endpoint}'}}\n", creds,
         "field state.bucket: there is no bucket 'no-such-bucket'"),
        (f"state: {{bucket: {BUCKET}, endpoint_url: '{moto_endpoint}'}}\n",
         {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
          "AWS_CONFIG_FILE": "/nonexistent"}, "no AWS credentials"),
        (f"state: {{bucket: {BUCKET}, prefix: team/sandbox, endpoint_url: '{moto_endpoint}'}}\n", creds,
         "holds the state of environment 'sandbox'"),
        ("state: {bucket: Not_A_Bucket}\n", creds, "state.bucket"),
    ]
    bucket.put_object(Bucket=BUCKET, Key="team/sandbox/environment.json", Body=b'{"env": "sandbox"}')
    for text, env, needle in cases:
        settings.write_text(base + text)
        res = run_invoke("images", root=project, home=tmp_path / "home", env=env)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2, res.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
        assert "Traceback" not in res.stderr


def test_images_reads_the_bucket_from_a_fresh_machine(tmp_path: Path, moto_endpoint: str, bucket: Any) -> None:
    from tests.conftest import copy_project, run_invoke

    put(machine(tmp_path, bucket, "a"), record(1))
    project = copy_project(tmp_path / "project")
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + f"state: {{bucket: {BUCKET}, prefix: team/local, "
                                                f"endpoint_url: '{moto_endpoint}'}}\n")
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    res = run_invoke("images", "--json", root=project, home=tmp_path / "fresh", env=creds)
    assert res.returncode == 0, res.stderr
    assert [i["id"] for i in json.loads(res.stdout)["images"]] == ["web-1"]
    assert not (tmp_path / "fresh" / "store" / "images" / "web-1" / "disk.qcow2").exists()


# what each S3 operation the state makes needs in IAM (a multipart upload's calls are
# PutObject; HeadObject is GetObject; HeadBucket and ListObjectsV2 are ListBucket)
S3_ACTION = {"GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
             "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
             "CompleteMultipartUpload": "s3:PutObject", "DeleteObject": "s3:DeleteObject",
             "AbortMultipartUpload": "s3:AbortMultipartUpload", "HeadBucket": "s3:ListBucket",
             "ListObjectsV2": "s3:ListBucket"}


def test_the_iam_policy_grants_every_call_the_state_makes(tmp_path: Path, bucket: Any) -> None:
    from goldenimage.aws.iam import STATE_ACTIONS, state_statements
    from goldenimage.state.bucket import claim

    seen: set[str] = set()
    bucket.meta.events.register("before-call.s3.*", lambda model, **_: seen.add(model.name))
    bucket.head_bucket(Bucket=BUCKET)
    a, b = machine(tmp_path, bucket, "a"), machine(tmp_path, bucket, "b")
    claim(a.shared, "local", "local", "state")  # type: ignore[arg-type]
    put(a, record(1), b"x" * (9 << 20))  # over boto3's multipart threshold (8 MiB)
    b.verified("web-1")
    b.promote("web-1", "stable")
    lock = LeaseLock(a.shared, "gc/local", "gc", ttl=30)  # type: ignore[arg-type]
    with lock.held("gc"):
        pass
    seen.discard("CreateBucket")
    assert seen, "no S3 call was recorded"
    unknown = seen - set(S3_ACTION)
    assert not unknown, f"S3 operations with no known IAM action: {unknown}"
    needed = {S3_ACTION[op] for op in seen}
    assert needed <= set(STATE_ACTIONS), needed - set(STATE_ACTIONS)
    granted = {a for st in state_statements(BUCKET, "team/local") for a in st["Action"]}
    assert needed <= granted


def test_store_push_from_the_command_line(tmp_path: Path, moto_endpoint: str, bucket: Any) -> None:
    from tests.conftest import copy_project, run_invoke

    laptop = tmp_path / "laptop"
    local = LocalStore(laptop / "store")
    put(local, record(1))
    local.promote("web-1", "stable", user="alice")
    project = copy_project(tmp_path / "project")
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    res = run_invoke("store.push", root=project, home=laptop, env=creds)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "field state" in res.stderr, res.stderr
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + f"state: {{bucket: {BUCKET}, endpoint_url: '{moto_endpoint}'}}\n")
    res = run_invoke("store.push", "--json", root=project, home=laptop, env=creds)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["images"] == ["web-1"] and doc["channels"] == ["web/stable"]
    fresh = run_invoke("history", "--image", "web", "--channel", "stable", "--json", root=project,
                       home=tmp_path / "runner", env=creds)
    assert fresh.returncode == 0, fresh.stderr
    assert "web-1" in fresh.stdout and "alice" in fresh.stdout


def test_a_bake_waits_for_another_machines_lease_saying_who_holds_it(tmp_path: Path, bucket: Any) -> None:
    """`bake.bake_lease` on shared state: while another machine holds
    `bake/<env>/<name>/<fingerprint>` the bake says who holds it, waits, and gives up with one
    line naming the holder; once the lease is given back it is taken. Another fingerprint of
    the same image (another branch) does not wait."""
    from types import SimpleNamespace

    from goldenimage.bake import bake_lease
    from goldenimage.locks import LockHeld
    from goldenimage.progress import Reporter

    shared = BucketBackend(bucket, BUCKET, "team/local")
    target = SimpleNamespace(env=SimpleNamespace(name="local"), shared_state=lambda: shared, fence=lambda *_: None,
                             lease=lambda name, command: LeaseLock(shared, name, command, ttl=30))
    fp, other_fp = "a" * 64, "b" * 64
    other = LeaseLock(shared, f"bake/local/web/{fp}", "bake web", ttl=30)
    assert other.try_acquire() is None
    heard: list[str] = []
    reporter = Reporter(quiet=True)
    reporter.info = heard.append  # type: ignore[method-assign]
    waiting = bake_lease(target, "web", fp, reporter, wait=0.3, sleep=lambda s: None)  # type: ignore[arg-type]
    with pytest.raises(LockHeld, match=r"bake of 'web' \(fingerprint aaaaaaaaaaaa\) is already running: "
                                       rf"lease bake/local/web/{fp} .* held by"), waiting:
        pass
    assert len(heard) == 1 and f"waiting: lease bake/local/web/{fp}" in heard[0] and "bake web" in heard[0]
    with bake_lease(target, "web", other_fp, reporter, wait=0.3) as lease:  # type: ignore[arg-type]
        assert lease is not None and lease.lease_name == f"bake/local/web/{other_fp}"
        lease.check()
    other.release()
    with bake_lease(target, "web", fp, reporter, wait=0.3) as lease:  # type: ignore[arg-type]
        assert lease is not None
        lease.check()


def test_a_deleted_images_blobs_go_unless_another_image_names_them(tmp_path: Path, bucket: Any) -> None:
    a, b = machine(tmp_path, bucket, "a"), machine(tmp_path, bucket, "b")
    put(a, record(1), b"disk one")
    put(a, record(2), b"disk two")  # both name the same SBOM bytes: one blob
    files = {i: json.loads(bucket.get_object(Bucket=BUCKET, Key="team/local/catalog.json")["Body"].read())
             ["images"][i]["files"] for i in ("web-1", "web-2")}
    assert files["web-1"]["sbom.cdx.json"] == files["web-2"]["sbom.cdx.json"]
    assert b.remove("web-1", lambda: None) is None
    shared = b.shared
    assert shared is not None
    assert not shared.has_blob(files["web-1"]["disk.qcow2"]) and not shared.has_blob(files["web-1"]["manifest.json"])
    assert shared.has_blob(files["web-2"]["sbom.cdx.json"]) and shared.has_blob(files["web-2"]["disk.qcow2"])
    # another machine's gc deletes a blob this registration found already there: it is sent again
    sbom = files["web-2"]["sbom.cdx.json"]
    real_put = shared.put

    def gc_meanwhile(key: str, data: bytes, *, expect: str | None = None) -> str:
        if key == "catalog.json" and b'"web-3"' in data:
            shared.delete(blob_key(sbom))
        return real_put(key, data, expect=expect)

    a.shared.put = gc_meanwhile  # type: ignore[method-assign, union-attr]
    put(a, record(3), b"disk three")
    assert shared.has_blob(sbom)
    assert machine(tmp_path, bucket, "c").manifest("web-3")["id"] == "web-3"
    assert b.remove("web-2", lambda: None) is None and b.remove("web-3", lambda: None) is None
    assert [k for k in bucket.list_objects_v2(Bucket=BUCKET, Prefix="team/local/blobs/").get("Contents", [])] == []


class LostAnswers:
    """The network fails halfway: the first `n` catalog writes are done by S3, but botocore
    is told their answer never came (its retry check, `needs-retry`, asked to retry a
    success), so it sends them again; the conditional write then finds the record changed."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, response: Any, request_dict: dict[str, Any], caught_exception: Any = None,
                 **_: Any) -> float | None:
        ok = response is not None and response[0].status_code == 200
        if self.n and ok and request_dict["url"].split("?")[0].endswith("/catalog.json"):
            self.n -= 1
            return 0.01  # retry after 10 ms
        return None


def test_a_catalog_write_whose_answer_is_lost_is_not_done_twice_nor_refused(tmp_path: Path,
                                                                         moto_endpoint: str) -> None:
    from .test_state import s3_client as client

    s3 = client(moto_endpoint, attempts=5)
    s3.create_bucket(Bucket=BUCKET)
    lost = LostAnswers(1)
    s3.meta.events.register("needs-retry.s3.PutObject", lost)
    store = LocalStore(tmp_path / "store", BucketBackend(s3, BUCKET, "team/local"))
    put(store, record(1))  # registered on the first try; the retry finds its own entry
    assert lost.n == 0 and [r.id for r in store.list("web")] == ["web-1"]
    put(store, record(2))
    lost.n = 1
    first = store.promote("web-1", "stable", user="alice")
    assert first["changed"] and lost.n == 0
    lost.n = 1
    second = store.promote("web-2", "stable", user="alice")
    assert second["changed"] and second["previous"] == "web-1"
    assert [(h["image_id"], h["from"]) for h in store.history("web", "stable")] == [("web-1", None), ("web-2", "web-1")]


def test_a_register_under_a_lease_taken_over_is_refused_by_the_catalog_itself(tmp_path: Path, bucket: Any) -> None:
    """Fencing in the catalog: the bake that took the lease over (token 2) recorded its token
    there when it took it; the first holder, paused past its lease and woken up before its
    heartbeat noticed, tries to register under token 1 -- the same compare-and-swap that would
    write its entry refuses it, and nothing of it is registered."""
    from goldenimage.errors import OperationFailed

    a, b = machine(tmp_path, bucket, "a"), machine(tmp_path, bucket, "b")
    a.fence("bake/local/web", 1)
    b.fence("bake/local/web", 2)  # b took the lease over
    put(b, record(2))
    refused = pytest.raises(OperationFailed, match=r"lease bake/local/web was taken over \(token 2, this run's 1\)")
    with refused, a.workspace() as ws:
        img = ws / "image"
        img.mkdir()
        (img / "disk.qcow2").write_bytes(b"late")
        a.put(record(1), {"id": "web-1", "artifact": "disk.qcow2"}, img, fence=("bake/local/web", 1))
    assert [r.id for r in a.list("web")] == ["web-2"]
    assert not (a.images_dir / "web-1").exists()
    with pytest.raises(OperationFailed, match="taken over"):
        a.fence("bake/local/web", 1)  # an old token cannot lower the fence either
    put(b, record(3))  # the holder's own writes go on


def test_a_skip_on_a_fresh_machine_needs_the_blob_not_its_download(tmp_path: Path, bucket: Any) -> None:
    a, b = machine(tmp_path, bucket, "a"), machine(tmp_path, bucket, "b")
    put(a, record(1), b"older")
    put(a, record(2), b"newer")
    digest = json.loads(bucket.get_object(Bucket=BUCKET, Key="team/local/catalog.json")["Body"].read()
                        )["images"]["web-2"]["files"]["disk.qcow2"]
    bucket.delete_object(Bucket=BUCKET, Key=f"team/local/{blob_key(digest)}")
    hit, refused = b.find_intact("web", "f" * 64)
    assert hit is not None and hit.id == "web-1"
    assert refused == [f"image web-2: its disk.qcow2 ({digest}) is not in s3://{BUCKET}/team/local"]
    assert not list(b.images_dir.rglob("*.qcow2"))


def test_a_promote_waits_for_another_machines_promote_of_the_channel(tmp_path: Path, moto_endpoint: str,
                                                                    bucket: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`promote/<env>/<image>/<channel>`: while another machine promotes web/stable, a promote
    says who holds it, waits, and gives up with one line naming the holder; another channel
    is not held up; once the lease is given back the promote goes through."""
    from goldenimage import commands
    from goldenimage.locks import LockHeld
    from goldenimage.progress import Reporter
    from tests.conftest import allow_unsigned, copy_project

    project = copy_project(tmp_path / "project")
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + f"state: {{bucket: {BUCKET}, prefix: team/local, "
                                                f"endpoint_url: '{moto_endpoint}'}}\n")
    allow_unsigned(project)  # `put` registers images without an attestation
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "GOLDENIMAGE_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(k, v)
    put(machine(tmp_path, bucket, "a"), record(1))
    other = LeaseLock(BucketBackend(bucket, BUCKET, "team/local"), "promote/local/web/stable", "promote web-9", ttl=30)
    assert other.try_acquire() is None
    monkeypatch.setattr(commands, "PROMOTE_WAIT", 0.5)
    heard: list[str] = []
    reporter = Reporter(quiet=True)
    reporter.info = heard.append  # type: ignore[method-assign]
    with pytest.raises(LockHeld, match=r"promote to web/stable is already running: lease promote/local/web/stable"):
        commands.promote("local", "web-1", "stable", reporter, root=project)
    assert any("promote web-9" in h for h in heard)
    assert commands.promote("local", "web-1", "canary", reporter, root=project)["changed"]
    other.release()
    assert commands.promote("local", "web-1", "stable", reporter, root=project)["changed"]

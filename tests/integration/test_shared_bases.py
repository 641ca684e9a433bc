"""Base disks on shared state, for real against the moto server's S3: a base built on one
machine is every machine's base (its identity known without mmdebstrap or a download, its
bytes downloaded and checked when a build needs them); a base marked stale on one machine is
stale on all; two machines that both built one end up on the same."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from goldenimage.adapters import baseimage
from goldenimage.errors import IntegrityError
from goldenimage.fsutil import atomic_write_json, sha256_file
from goldenimage.progress import Reporter
from goldenimage.settings import BaseImageSpec
from goldenimage.state import BucketBackend, blob_key

from .test_state import BUCKET, s3_client

pytestmark = pytest.mark.integration

KEY = "0123456789abcdef"
QUIET = Reporter(quiet=True)


@pytest.fixture
def shared(moto_endpoint: str) -> baseimage.SharedBases:
    s3 = s3_client(moto_endpoint, attempts=5)
    s3.create_bucket(Bucket=BUCKET)
    return baseimage.SharedBases(BucketBackend(s3, BUCKET, "team/local"))


def built(cache: Path, payload: bytes, key: str = KEY) -> str:
    """A base disk as `ensure_base_image` leaves it in `cache` after building it."""
    final = cache / key
    final.mkdir(parents=True)
    (final / baseimage.DISK).write_bytes(payload)
    digest = sha256_file(final / baseimage.DISK)
    atomic_write_json(final / baseimage.RECORD, {"sha256": digest, "recipe": key, "archive": {"installed": []}})
    return digest


def test_a_base_built_on_one_machine_is_known_on_another_without_its_bytes(tmp_path: Path,
                                                                         shared: baseimage.SharedBases) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    digest = built(a, b"the base disk")
    shared.sync(a, KEY, QUIET)  # made before the state was shared: published
    shared.sync(b, KEY, QUIET)
    assert baseimage.read_record(b / KEY)["sha256"] == digest  # type: ignore[index]
    assert not (b / KEY / baseimage.DISK).exists()  # an identity needs no bytes
    shared.download(b, KEY, QUIET)
    assert (b / KEY / baseimage.DISK).read_bytes() == b"the base disk"


def test_ensure_base_image_on_a_fresh_machine_builds_nothing(tmp_path: Path, shared: baseimage.SharedBases,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BaseImageSpec()
    key = baseimage.recipe_key(spec, baseimage.mmdebstrap_version())
    digest = built(tmp_path / "a", b"the base disk", key)
    shared.sync(tmp_path / "a", key, QUIET)

    def no_build(*_: Any) -> Path:
        raise AssertionError("the base was built again")

    monkeypatch.setattr(baseimage, "_build", no_build)
    fresh = tmp_path / "fresh"
    base = baseimage.ensure_base_image(spec, fresh, QUIET, shared, need_bytes=False)
    assert base.identity == f"sha256:{digest}" and not base.path.exists()
    assert baseimage.is_at_hand(spec, fresh)
    base = baseimage.ensure_base_image(spec, fresh, QUIET, shared)  # a build needs the bytes
    assert base.path.read_bytes() == b"the base disk"


def test_a_base_marked_stale_on_one_machine_is_stale_on_every_machine(tmp_path: Path,
                                                                     shared: baseimage.SharedBases) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    built(a, b"old base")
    shared.sync(a, KEY, QUIET)
    shared.sync(b, KEY, QUIET)
    baseimage.mark_stale(a / KEY, "openssl 3.0.1 -> 3.0.2 (security)", "2026-12-02T03:00:00Z", shared)
    shared.sync(b, KEY, QUIET)
    assert baseimage.stale_reason(b / KEY) == "openssl 3.0.1 -> 3.0.2 (security)"
    # a stale mark only this machine has (made before the state was shared) is shared too
    c = tmp_path / "c"
    built(c, b"other base", "fedcba9876543210")
    shared.sync(c, "fedcba9876543210", QUIET)
    baseimage.mark_stale(c / "fedcba9876543210", "libc6 drifted", "2026-12-02T03:00:00Z")
    shared.sync(c, "fedcba9876543210", QUIET)
    d = tmp_path / "d"
    shared.sync(d, "fedcba9876543210", QUIET)
    assert baseimage.stale_reason(d / "fedcba9876543210") == "libc6 drifted"


def test_a_rebuilt_base_replaces_the_stale_one_everywhere(tmp_path: Path, shared: baseimage.SharedBases) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    built(a, b"old base")
    shared.sync(a, KEY, QUIET)
    shared.sync(b, KEY, QUIET)
    shared.download(b, KEY, QUIET)
    baseimage.mark_stale(a / KEY, "drifted", "2026-12-02T03:00:00Z", shared)
    (a / KEY / baseimage.STALE).unlink()  # what a rebuild under the same recipe leaves
    for f in (a / KEY).iterdir():
        f.unlink()
    (a / KEY).rmdir()
    new = built(a, b"new base")
    assert shared.publish(a, KEY, QUIET) == new
    shared.sync(b, KEY, QUIET)
    assert baseimage.read_record(b / KEY)["sha256"] == new  # type: ignore[index]
    assert baseimage.stale_reason(b / KEY) is None
    assert not (b / KEY / baseimage.DISK).exists()  # the old bytes are not the base any more


def test_two_machines_that_both_built_it_end_up_on_the_first_published(tmp_path: Path,
                                                                      shared: baseimage.SharedBases) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    first = built(a, b"built on a")
    built(b, b"built on b")  # mmdebstrap's output differs from run to run
    assert shared.publish(a, KEY, QUIET) == first
    assert shared.publish(b, KEY, QUIET) == first
    assert baseimage.read_record(b / KEY)["sha256"] == first  # type: ignore[index]
    assert not (b / KEY / baseimage.DISK).exists()


def test_a_changed_blob_is_refused(tmp_path: Path, shared: baseimage.SharedBases) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    digest = built(a, b"good base")
    shared.sync(a, KEY, QUIET)
    backend = shared.backend
    assert isinstance(backend, BucketBackend)
    backend.s3.put_object(Bucket=BUCKET, Key=f"team/local/{blob_key(digest)}", Body=b"evil")
    shared.sync(b, KEY, QUIET)
    with pytest.raises(IntegrityError):
        shared.download(b, KEY, QUIET)
    assert not (b / KEY / baseimage.DISK).exists()


def test_a_fresh_machine_fingerprints_on_the_shared_base_without_mmdebstrap(tmp_path: Path, moto_endpoint: str,
                                                                         shared: baseimage.SharedBases) -> None:
    """`invoke fingerprint` on a fresh home: the base's identity comes from the bucket; the
    mmdebstrap on PATH answers only `--version` and leaves a mark if asked to build."""
    from tests.conftest import copy_project, run_invoke

    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "mmdebstrap"
    fake.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "mmdebstrap 1.3.5" && exit 0\n'
                    f'touch {tmp_path}/built; exit 1\n')
    fake.chmod(0o755)
    key = baseimage.recipe_key(BaseImageSpec(), "1.3.5")
    digest = built(tmp_path / "laptop", b"the base disk", key)
    shared.sync(tmp_path / "laptop", key, QUIET)
    project = copy_project(tmp_path / "project")
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + f"state: {{bucket: {BUCKET}, prefix: team/local, "
                                                f"endpoint_url: '{moto_endpoint}'}}\n")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "PATH": f"{tools}:{os.environ['PATH']}", "GOLDENIMAGE_BASE_CACHE": str(tmp_path / "runner-base")}
    res = run_invoke("fingerprint", "--image", "base", "--explain", "--json", root=project,
                     home=tmp_path / "runner", env=env)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "built").exists()
    assert digest in json.dumps(json.loads(res.stdout))
    assert not (tmp_path / "runner-base" / key / baseimage.DISK).exists()

"""Benchmark: shared state on an S3 endpoint (a moto server on loopback, in this process).

Prints one JSON document:
  blob_mib, blob_runs       size of the blob pushed and pulled, and how many times (medians)
  push_mib_per_s            `BucketBackend.put_blob` (multipart upload straight to the
                            digest's key, hashed on the way)
  pull_mib_per_s            `get_blob` (download to a temporary file, sha256 checked, renamed)
  plain_boto3_*_mib_per_s   the same file with plain boto3 `upload_file` / `download_file`;
  push_vs_plain, pull_vs_plain  the toolkit's throughput over plain boto3's (goal ≥ 0.9)
  lease_acquire_release_ms  median of a lease taken and given back (conditional create, delete)
  catalog_update_ms         median of one compare-and-swap catalog change (a promote)
  fresh_nightly_seconds     median wall time of a no-change `invoke nightly --json` on a fresh
                            machine: a new GOLDENIMAGE_HOME each run, nothing but the bucket
                            (catalog, base record, images' records; no base disk, no archive
                            index cache): the base identity from the bucket, the drift check
                            reading the archive's indexes from the network
  fresh_nightly_disk_bytes  bytes of image and base disks the fresh runs downloaded (0: none)
  fresh_nightly_index_bytes archive bytes a fresh run read
  warm_nightly_seconds      the same runner's next night (its home kept: index cache, records)
  load_average_1min

The family is bench/nightly.py's synthetic one (three images registered with today's
fingerprints, SBOMs at the archive's current versions), pushed with `LocalStore.push`. The
moto server runs in this process: its CPU competes with the client's, so the figures are a
floor for a real S3 endpoint's throughput on this host, not S3's.

Usage: .venv/bin/python bench/state.py [--mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import nightly as bench_nightly  # noqa: E402  (bench/nightly.py: the synthetic family)

from goldenimage.adapters import baseimage  # noqa: E402
from goldenimage.fsutil import sha256_file  # noqa: E402
from goldenimage.models import ImageRecord  # noqa: E402
from goldenimage.progress import Reporter  # noqa: E402
from goldenimage.state import BucketBackend  # noqa: E402
from goldenimage.state.bucket import s3_client  # noqa: E402
from goldenimage.state.lease import LeaseLock  # noqa: E402
from goldenimage.store import LocalStore  # noqa: E402

BUCKET = "goldenimage-bench"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def moto() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def blob_figures(backend: BucketBackend, tmp: Path, mib: int, runs: int) -> dict[str, Any]:
    """Medians over `runs`, the toolkit and plain boto3 taking turns (a new blob each run, so
    that put_blob uploads rather than finding the digest there)."""
    times: dict[str, list[float]] = {"push": [], "pull": [], "plain_push": [], "plain_pull": []}
    for run in range(runs):
        src = tmp / "blob"
        with src.open("wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1 << 20))
        digest = sha256_file(src)
        pulled = tmp / f"pulled-{run}"
        for name, call, args in (("push", backend.put_blob, (src, digest)), ("pull", backend.get_blob, (digest, pulled)),
                                 # plain boto3: upload_file / download_file, its default transfer config
                                 ("plain_push", backend.s3.upload_file, (str(src), BUCKET, "plain/blob")),
                                 ("plain_pull", backend.s3.download_file, (BUCKET, "plain/blob", str(tmp / "plain")))):
            start = time.monotonic()
            call(*args)
            times[name].append(time.monotonic() - start)
        pulled.unlink()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {"blob_mib": mib, "blob_runs": runs, "push_mib_per_s": round(mib / med["push"], 1),
            "pull_mib_per_s": round(mib / med["pull"], 1),
            "plain_boto3_push_mib_per_s": round(mib / med["plain_push"], 1),
            "plain_boto3_pull_mib_per_s": round(mib / med["plain_pull"], 1),
            "push_vs_plain": round(med["plain_push"] / med["push"], 3),
            "pull_vs_plain": round(med["plain_pull"] / med["pull"], 3)}


def small_figures(backend: BucketBackend, tmp: Path, n: int = 20) -> dict[str, Any]:
    lease = LeaseLock(backend, "bench/lease", "bench", ttl=30)
    times = []
    for _ in range(n):
        start = time.monotonic()
        assert lease.try_acquire() is None
        lease.release()
        times.append(time.monotonic() - start)
    store = LocalStore(tmp / "cas", BucketBackend(backend.s3, BUCKET, "bench-cas"))
    ids = []
    for i in range(2):
        rec = ImageRecord(id=f"web-{i}", name="web", env="local", fingerprint=f"{i:064x}",
                          created=f"2026-12-02T00:00:0{i}Z", status="validated", artifact="disk.qcow2")
        with store.workspace() as ws:
            (ws / "i").mkdir()
            (ws / "i" / "disk.qcow2").write_bytes(rec.id.encode())
            store.put(rec, {"id": rec.id, "name": "web", "env": "local", "fingerprint": rec.fingerprint,
                            "created": rec.created, "artifact": rec.artifact,
                            "artifact_sha256": sha256_file(ws / "i" / "disk.qcow2")}, ws / "i")
        ids.append(rec.id)
    cas = []
    t0 = datetime(2026, 12, 2, tzinfo=UTC)
    for k in range(n):
        start = time.monotonic()
        store.promote(ids[k % 2], "stable", user="bench", now=t0 + timedelta(seconds=k))
        cas.append(time.monotonic() - start)
    return {"lease_acquire_release_ms": round(statistics.median(times) * 1000, 1),
            "catalog_update_ms": round(statistics.median(cas) * 1000, 1)}


def nightly_figures(endpoint: str, s3: Any, tmp: Path, runs: int) -> dict[str, Any]:
    laptop = bench_nightly.synthetic_home(tmp / "laptop")
    shared = BucketBackend(s3, BUCKET, "local")
    LocalStore(laptop / "store").push(LocalStore(tmp / "unused", shared))
    for directory in (laptop / "base").iterdir():
        if directory.is_dir():
            baseimage.SharedBases(shared).sync(laptop / "base", directory.name, Reporter(quiet=True))
    project = bench_nightly.bench_project(tmp)
    settings = project / "inventories" / "local" / "goldenimage.yml"
    settings.write_text(settings.read_text() + f"state: {{bucket: {BUCKET}, endpoint_url: '{endpoint}'}}\n")
    fresh, index_bytes, doc = [], None, {}
    for n in range(runs):
        home = tmp / f"runner-{n}"
        env = {**os.environ, **CREDS, "GOLDENIMAGE_ROOT": str(project), "GOLDENIMAGE_HOME": str(home)}
        env.pop("GOLDENIMAGE_BASE_CACHE", None)
        took, doc = bench_nightly.run_nightly(env, project)
        if not doc.get("ok") or (doc.get("bake", {}).get("images") and any(
                i.get("state") == "built" for i in doc["bake"]["images"])) or doc.get("drift", {}).get("drift"):
            sys.exit(f"not a no-change run: {doc.get('summary')}: {json.dumps(doc.get('drift'))[:1500]}")
        fresh.append(took)
        index_bytes = ((doc.get("drift") or {}).get("archive") or {}).get("bytes_read")
    warm_env = {**os.environ, **CREDS, "GOLDENIMAGE_ROOT": str(project), "GOLDENIMAGE_HOME": str(tmp / "runner-0")}
    warm = [bench_nightly.run_nightly(warm_env, project)[0] for _ in range(runs)]
    return {"fresh_nightly_seconds": round(statistics.median(fresh), 3), "fresh_nightly_runs": [round(t, 3) for t in fresh],
            "fresh_nightly_index_bytes": index_bytes,
            "fresh_nightly_steps": {s["step"]: s["seconds"] for s in doc.get("steps", [])},
            "warm_nightly_seconds": round(statistics.median(warm), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ.update(CREDS)
    server, endpoint = moto()
    tmp = Path(tempfile.mkdtemp(prefix="bench-state-"))
    try:
        s3 = s3_client("us-east-1", endpoint)
        s3.create_bucket(Bucket=BUCKET)
        backend = BucketBackend(s3, BUCKET, "bench")
        out: dict[str, Any] = {}
        out.update(blob_figures(backend, tmp, args.mib, args.runs))
        out.update(small_figures(backend, tmp))
        out.update(nightly_figures(endpoint, s3, tmp, args.runs))
        # what the fresh runners downloaded of the images' and base's disks
        disks = [*tmp.glob("runner-*/store/images/*/*.qcow2"), *tmp.glob("runner-*/base/*/base.qcow2")]
        out["fresh_nightly_disk_bytes"] = sum(p.stat().st_size for p in disks)
        out["load_average_1min"] = round(os.getloadavg()[0], 2)
        print(json.dumps(out, indent=2))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Attestation benchmark: prints one JSON document.

Per image, the work a bake's register adds (build the statement from the manifest, load the
environment's Ed25519 key, sign, encode the DSSE envelope) and the work a promote, rotate or
child bake adds (load the trusted keys, open and verify the envelope, check the statement),
excluding hashing the qcow2: its digest is the one `LocalStore.verified` computes anyway.
The manifest is a realistic one (`--inputs` fingerprint inputs: role files, templates, tools).
Goal: <= 0.2 s each, per image. A throwaway GOLDENIMAGE_HOME holds the key.

    python bench/attest.py [--inputs 600] [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from goldenimage import attestation, trust  # noqa: E402
from goldenimage.progress import Reporter  # noqa: E402
from goldenimage.settings import load_environment  # noqa: E402

SHA = "c" * 64


def manifest(n_inputs: int) -> dict[str, object]:
    return {
        "id": "web-20261202-1000-abcd", "name": "web", "env": "local", "fingerprint": "f" * 64,
        "created": "2026-12-02T10:00:00Z", "status": "validated", "artifact_sha256": SHA,
        "fingerprint_inputs": {f"role:r{i // 20}/tasks/f{i}.yml": f"sha256:{i:064x}" for i in range(n_inputs)},
        "base": {"source": "parent", "identity": "sha256:" + "d" * 64},
        "parent": {"id": "base-20261202-0900-abcd", "name": "base"},
        "tools": {"packer": "1.14.2", "ansible-core": "2.19.14", "qemu": "9.2", "goldenimage": "0.1.0"},
        "validation": {"status": "validated", "passed": 120, "failed": 0, "errors": 0, "skipped": 3,
                       "suites": ["tests/image/common", "tests/image/base", "tests/image/web"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=600)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["GOLDENIMAGE_HOME"] = home
        env = load_environment("local", ROOT)
        reporter = Reporter(quiet=True)
        trust.ensure_key(env, reporter, quiet=True)
        doc = manifest(args.inputs)
        expect = attestation.Expect(image_id=str(doc["id"]), name="web", env="local", sha256=SHA,
                                    parent_id="base-20261202-0900-abcd", parent_attestation="e" * 64)
        sign_s, verify_s, envelope = [], [], b""
        for _ in range(args.runs):
            t = time.perf_counter()
            statement = attestation.statement(
                doc, attestation.local_subject(str(doc["id"]), "disk.qcow2", SHA),
                parent_attestation="e" * 64, junit_sha256="9" * 64)
            envelope = trust.sign(env, statement, reporter)
            sign_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = trust.verify(env, trust.Evidence(expect, envelope, "bench"))
            verify_s.append(time.perf_counter() - t)
            assert result["verified"]
    print(json.dumps({
        "runs": args.runs, "fingerprint_inputs": args.inputs, "envelope_bytes": len(envelope),
        "sign_seconds_median": round(statistics.median(sign_s), 5),
        "verify_seconds_median": round(statistics.median(verify_s), 5),
        "sign_seconds_max": round(max(sign_s), 5), "verify_seconds_max": round(max(verify_s), 5),
        "goal_seconds": 0.2,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()

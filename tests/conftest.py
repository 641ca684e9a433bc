"""Shared fixtures: a private project copy and toolkit home per test where needed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parent.parent

# No wall-clock limit per example: hypothesis' default 200 ms deadline is a timing assertion,
# and on a shared, loaded machine it failed properties that hold (a test's own settings may
# still set one).
hypothesis_settings.register_profile("goldenimage", deadline=None)
hypothesis_settings.load_profile("goldenimage")

# Started without job control (`.ci/run &` in a script), the suite inherits SIGINT ignored,
# and so would every bake it starts: the Ctrl-C tests would send a signal nobody hears.
# A handled signal is reset to the default in children, so this restores it for them too.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
INVOKE = [sys.executable, "-m", "invoke"]
# Every child (invoke, python -c) imports the toolkit of this checkout, as pytest itself does
# (`pythonpath` in pyproject.toml), not whichever checkout the virtualenv was installed from.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                            *filter(None, [os.environ.get("PYTHONPATH")])])


def copy_project(dest: Path) -> Path:
    """A copy of the project's inputs (templates, playbooks, roles, inventories, tests/image,
    ansible.cfg): the same fingerprints as the project itself."""
    for part in ("packer", "playbooks", "roles", "inventories", "tests/image"):
        src = ROOT / part
        if src.exists():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("tasks.py", "ansible.cfg", ".ansible-lint"):  # ansible.cfg is a fingerprint input of every image
        shutil.copy2(ROOT / name, dest / name)
    return dest


def run_invoke(*args: str, root: Path = ROOT, home: Path | None = None,
               timeout: float = 3600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `invoke ARGS` as a user would, in `root`, with its own GOLDENIMAGE_HOME."""
    e = {**os.environ, "GOLDENIMAGE_ROOT": str(root), **(env or {})}
    if home is not None:
        e["GOLDENIMAGE_HOME"] = str(home)
    return subprocess.run([*INVOKE, *args], cwd=root, env=e, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def wait_for_output(log: Path, proc: subprocess.Popen[Any], *needles: str, timeout: float, poll: float = 0.5) -> None:
    """Wait until `log` (a child's output) shows one of `needles`; fail if the child exits
    first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not any(n in log.read_text() for n in needles):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"none of {needles} within {timeout:.0f}s: {log.read_text()[-2000:]}"
        time.sleep(poll)


def use_file_base(project: Path, env: str, tmp_path: Path) -> None:
    """Point environment `env` of `project` at a stand-in base file (verified by checksum)
    and at the tcg accelerator: commands then run up to the build without mmdebstrap or a
    KVM probe."""
    import hashlib

    disk = tmp_path / "cloud.qcow2"
    disk.write_bytes(b"a stand-in base disk")
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    settings = project / "inventories" / env / "goldenimage.yml"
    text = settings.read_text().replace("accelerator: auto", "accelerator: tcg")
    text = re.sub(r"^base:\n", f"base:\n  url: {disk}\n  checksum: sha256:{digest}\n", text, count=1,
                  flags=re.MULTILINE)  # the top-level base disk, not the image named base
    settings.write_text(text)


def allow_unsigned(project: Path, env: str = "local") -> None:
    """`trust: {unsigned: allow}` in `env`'s settings: for tests whose images are registered
    without a bake (`put_validated`: no attestation) and whose subject is not trust."""
    settings = project / "inventories" / env / "goldenimage.yml"
    settings.write_text(settings.read_text() + "\ntrust: {unsigned: allow}\n")


def put_validated(store_root: Path | Any, image_id: str, fingerprint: str, env: str = "local", name: str = "web",
                  *, artifact_sha256: bool = False) -> Path:
    """Register a validated image (`web` by default) in a local store (its directory, or a
    `LocalStore` on shared state), as a finishing bake would (with `artifact_sha256`, its
    manifest records its disk's hash, as a bake's does); returns its disk."""
    from goldenimage.fsutil import sha256_file
    from goldenimage.store import ImageRecord, LocalStore

    store = store_root if isinstance(store_root, LocalStore) else LocalStore(store_root)
    with store.workspace() as ws:
        (ws / "image").mkdir()
        disk = ws / "image" / "disk.qcow2"
        disk.write_bytes(b"qcow2")
        rec = ImageRecord(id=image_id, name=name, env=env, fingerprint=fingerprint,
                          created="2026-11-26T10:00:00Z", status="validated", artifact="disk.qcow2")
        store.put(rec, {"id": rec.id, "name": name, "env": env, "fingerprint": fingerprint, "created": rec.created,
                        **({"artifact_sha256": sha256_file(disk)} if artifact_sha256 else {})}, ws / "image")
    return store.image_dir(image_id) / "disk.qcow2"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


@pytest.fixture(scope="session")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One base-disk cache for the whole session: the base is built at most once per run."""
    return tmp_path_factory.mktemp("base-cache")


@pytest.fixture(scope="session")
def base_image(base_cache: Path) -> Path:
    """The default base disk (built from the Debian archive with mmdebstrap on first use)."""
    from goldenimage.adapters.baseimage import ensure_base_image
    from goldenimage.progress import Reporter
    from goldenimage.settings import load_environment

    env = load_environment("local", ROOT)
    return ensure_base_image(env.settings.base, base_cache, Reporter()).path

"""The KVM probe: one at a time, its answer cached and shared (real QEMU, a tiny disk)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_concurrent_first_bakes_probe_once(tmp_path: Path) -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no /dev/kvm here: the probe never runs")
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    code = (
        "import sys; from pathlib import Path;"
        "from goldenimage.adapters.qemu import choose_accelerator;"
        "from goldenimage.progress import Reporter;"
        "print(choose_accelerator('auto', Path(sys.argv[1]), Path(sys.argv[2]), Reporter(quiet=True)))"
    )
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(disk), str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    answers = {o[0].strip() for o in outs}
    # a blank disk never reaches user space: both say tcg, from one probe
    assert answers == {"tcg"}
    assert json.loads((cache / "accelerator.json").read_text())["accelerator"] == "tcg"
    assert [p.name for p in cache.iterdir() if p.name.startswith(".probe-")] == []

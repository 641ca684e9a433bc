"""The final disk's compression, for real: `qemu-img convert -c` with the arguments a local
build hands Packer (`qemu_img_args.convert`), on a small disk with data in it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from goldenimage.adapters.qemu import convert_args, qemu_version

pytestmark = pytest.mark.integration


def test_compressed_final_disk_holds_the_same_bytes(tmp_path: Path) -> None:
    src, out = tmp_path / "disk.qcow2", tmp_path / "final.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "256M"], check=True)
    # compressible and incompressible clusters, with a hole between them
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", "-c", "write -P 0x00 64M 1M",
                    str(src)], check=True, capture_output=True)
    with open("/dev/urandom", "rb") as rnd:
        raw = tmp_path / "random.raw"
        raw.write_bytes(rnd.read(4 << 20))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {raw} 128M 4M", str(src)], check=True,
                   capture_output=True)
    args = convert_args(qemu_version())
    subprocess.run(["qemu-img", "convert", "-c", *args, "-O", "qcow2", str(src), str(out)], check=True)
    assert subprocess.run(["qemu-img", "compare", "-q", str(src), str(out)]).returncode == 0
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(out)], check=True,
                                     capture_output=True, text=True).stdout)
    want = "zstd" if "compression_type=zstd" in args else "zlib"
    assert info["format-specific"]["data"]["compression-type"] == want
    assert out.stat().st_size < src.stat().st_size

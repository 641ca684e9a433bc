"""fsutil.tar_length: the archive a build VM wrote at the start of a raw disk, cut out."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from goldenimage.fsutil import tar_length


def _archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_archive_on_a_disk_is_cut_at_its_end(tmp_path: Path) -> None:
    files = {"var/lib/apt/lists/x_Packages": b"Package: nginx\n" * 5000, "var/cache/apt/srcpkgcache.bin": b"\1" * 777}
    disk = tmp_path / "disk.raw"
    archive = _archive(files)
    disk.write_bytes(archive + b"\0" * (1 << 20))  # the rest of the disk: zeros
    length = tar_length(disk)
    assert length % 10240 == 0 and len(archive) <= length < len(archive) + 10240
    with disk.open("r+b") as fh:
        fh.truncate(length)
    with tarfile.open(disk) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == files  # type: ignore[union-attr]


def test_a_disk_without_an_archive_has_none(tmp_path: Path) -> None:
    zeros, junk = tmp_path / "zeros.raw", tmp_path / "junk.raw"
    zeros.write_bytes(b"\0" * 65536)
    junk.write_bytes(b"not a tar at all" * 4096)
    assert tar_length(zeros) == 0 and tar_length(junk) == 0 and tar_length(tmp_path / "missing") == 0

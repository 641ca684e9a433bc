"""adapters/imagefacts.py: the SBOM and apt sources read on an image, here run against this
host (a Debian system, as the images are) through the same shell commands."""

from __future__ import annotations

import subprocess

import pytest

from goldenimage.adapters import imagefacts
from goldenimage.errors import OperationFailed


def here(command: str) -> tuple[int, str, str]:
    res = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    return res.returncode, res.stdout, res.stderr


def test_the_packages_with_their_source_and_the_apt_sources_of_a_debian_system() -> None:
    installed, sources = imagefacts.read(here)
    by = {p.name: p for p in installed}
    assert by["libc6"].source == "glibc" and by["dpkg"].source == "dpkg" and by["libc6"].version
    assert sources and all(s.uri and s.suite for s in sources)
    doc = imagefacts.as_manifest(installed, sources)
    assert {"name", "version", "arch", "source"} <= set(doc["packages"][0])  # type: ignore[index]


def test_a_failing_dpkg_query_is_one_error() -> None:
    def broken(command: str) -> tuple[int, str, str]:
        return (127, "", "sh: dpkg-query: not found") if command.startswith("dpkg-query") else here(command)

    with pytest.raises(OperationFailed, match=r"dpkg-query on the image failed \(exit 127\): sh: dpkg-query"):
        imagefacts.read(broken)

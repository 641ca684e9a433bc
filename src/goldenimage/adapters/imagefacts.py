"""What an image holds, read on the booted image over the validation's SSH connection: its
installed packages with their source packages (the SBOM) and the apt sources it installs
from (so that nightly's drift check reads the indexes of exactly those suites)."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from .. import drift
from ..errors import OperationFailed

Run = Callable[[str], tuple[int, str, str]]  # a shell command on the image -> (exit code, stdout, stderr)


def read(run: Run) -> tuple[list[drift.Installed], list[drift.Source]]:
    """The image's packages (dpkg-query) and apt sources (/etc/apt/sources.list*, one-line
    and deb822). OperationFailed when dpkg-query fails or prints something else."""
    code, out, err = run(f"dpkg-query -W -f {shlex.quote(drift.SBOM_QUERY_FORMAT)}")
    if code != 0:
        raise OperationFailed(f"dpkg-query on the image failed (exit {code}): {err.strip()[-300:]}")
    try:
        installed = drift.parse_installed(out)
    except ValueError as exc:
        raise OperationFailed(f"dpkg-query on the image: {exc}") from None
    code, dump, err = run(drift.APT_SOURCES_DUMP)
    if code != 0:
        raise OperationFailed(f"reading the image's apt sources failed (exit {code}): {err.strip()[-300:]}")
    return installed, drift.parse_apt_sources(dump)


def as_manifest(installed: list[drift.Installed], sources: list[drift.Source]) -> dict[str, object]:
    """The manifest keys: `packages` [{name, version, arch, source}] and `apt_sources`."""
    return {"packages": [p.as_dict() for p in sorted(installed, key=lambda p: (p.name, p.arch))],
            "apt_sources": [s.as_dict() for s in sources]}

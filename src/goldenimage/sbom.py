"""SBOM of an image: the installed Debian packages as a CycloneDX JSON document.

Pure: the bake reads the package list from the final image with

    dpkg-query -W -f '${Package}\\t${Version}\\t${Architecture}\\n'

feeds the text to `parse_dpkg_query`, and the packages to `build`. Same packages, image and
time in, same document out (the serial number is derived from the content, not random).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from . import __version__
from .errors import OperationFailed

DPKG_QUERY_FORMAT = r"${Package}\t${Version}\t${Architecture}\n"
DPKG_QUERY = ["dpkg-query", "-W", "-f", DPKG_QUERY_FORMAT]
SPEC_VERSION = "1.6"
_SERIAL_NAMESPACE = uuid.UUID("6b0e3c8e-6f0c-4d55-9d36-1a6b1f0c9e51")

Package = tuple[str, str, str]  # (name, version, architecture)


def parse_dpkg_query(text: str) -> list[Package]:
    """Packages from `dpkg-query -W -f '${Package}\\t${Version}\\t${Architecture}\\n'`.

    Raises OperationFailed on a line that is not three tab-separated fields.
    """
    out: list[Package] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise OperationFailed(f"dpkg-query output line {n}: expected name, version and arch: {line!r}")
        name, version, arch = (p.strip() for p in parts)
        out.append((name, version, arch))
    return out


def purl(name: str, version: str, arch: str) -> PackageURL:
    """`pkg:deb/debian/<name>@<version>?arch=<arch>` (the version's epoch colon escaped)."""
    return PackageURL(type="deb", namespace="debian", name=name, version=version, qualifiers={"arch": arch})


def build(
    packages: Iterable[Package],
    *,
    image_name: str,
    fingerprint: str,
    now: datetime,
) -> dict[str, Any]:
    """The CycloneDX (spec 1.6) JSON document, as a dict, for an image with `packages`.

    Packages are sorted and de-duplicated; each is a `library` component whose bom-ref is
    its purl. The image itself is the metadata component (`operating-system`, version =
    fingerprint).
    """
    pkgs = sorted(set(packages))
    components = [
        Component(
            type=ComponentType.LIBRARY,
            name=name,
            version=version,
            purl=(p := purl(name, version, arch)),
            bom_ref=p.to_string(),
        )
        for name, version, arch in pkgs
    ]
    image = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=image_name,
        version=fingerprint,
        bom_ref=f"image:{image_name}@{fingerprint}",
    )
    tool = Component(type=ComponentType.APPLICATION, name="goldenimage", version=__version__)
    seed = json.dumps([image_name, fingerprint, pkgs], separators=(",", ":"))
    bom = Bom(
        components=components,
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, seed),
        metadata=BomMetaData(
            component=image,
            timestamp=now,
            tools=ToolRepository(components=[tool]),
        ),
    )
    bom.register_dependency(image, components)  # the image contains every package
    doc: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    doc.setdefault("components", [])  # the serializer omits an empty list
    return doc

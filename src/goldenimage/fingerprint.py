"""Interim fingerprint (replaced by the content-addressed fingerprint module)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FingerprintInput:
    name: str
    digest: str


def collect(root: Path, env: Any, image: str, extra: dict[str, str]) -> list[FingerprintInput]:
    out = [FingerprintInput(k, hashlib.sha256(v.encode()).hexdigest()) for k, v in extra.items()]
    for top in ("packer", "playbooks", "roles", f"inventories/{env.name}"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                out.append(FingerprintInput(str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest()))
    return out


def compute(inputs: list[FingerprintInput]) -> str:
    h = hashlib.sha256()
    for i in sorted(inputs, key=lambda i: i.name):
        h.update(f"{i.name}\0{i.digest}\n".encode())
    return h.hexdigest()


def as_manifest(inputs: list[FingerprintInput]) -> dict[str, str]:
    return {i.name: i.digest for i in sorted(inputs, key=lambda i: i.name)}

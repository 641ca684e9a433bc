"""Where the toolkit keeps its state on this host."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """$GOLDENIMAGE_HOME, else $XDG_DATA_HOME/goldenimage, else ~/.local/share/goldenimage."""
    env = os.environ.get("GOLDENIMAGE_HOME")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return (base / "goldenimage").resolve()


def store_dir() -> Path:
    return data_home() / "store"


def base_cache_dir() -> Path:
    """Cached base disks: $GOLDENIMAGE_BASE_CACHE, else <data home>/base."""
    env = os.environ.get("GOLDENIMAGE_BASE_CACHE")
    return Path(env).expanduser().resolve() if env else data_home() / "base"


def default_report_dir(env_name: str) -> Path:
    """Where `invoke nightly` writes an environment's reports unless told otherwise."""
    return store_dir() / "reports" / "nightly" / env_name

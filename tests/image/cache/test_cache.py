"""Checks of the cache image's own: memcached runs, answers on the loopback address only and
keeps its memory bound. The base image's checks (tests/image/base/) and the common ones run
too. One condition per test.

Everything is read from inside the guest through testinfra's `host` (run with --sudo).
"""

from __future__ import annotations

from typing import Any

import pytest

STATS = """
import socket, sys
s = socket.create_connection(("127.0.0.1", 11211), timeout=10)
s.sendall(b"set goldenimage 0 60 2\\r\\nok\\r\\nget goldenimage\\r\\nstats settings\\r\\nquit\\r\\n")
data = b""
while not data.endswith(b"END\\r\\n") or data.count(b"END\\r\\n") < 2:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"""


@pytest.fixture(scope="module")
def exchange(host: Any) -> str:
    """A set, a get and `stats settings` over memcached's text protocol, from inside the guest."""
    return str(host.check_output("python3 -c %s", STATS))


@pytest.fixture(scope="module")
def settings(exchange: str) -> dict[str, str]:
    return dict(ln.split(" ", 2)[1:] for ln in exchange.splitlines() if ln.startswith("STAT ") and ln.count(" ") >= 2)


def test_memcached_installed(host: Any) -> None:
    assert host.package("memcached").is_installed


def test_memcached_running_and_enabled(host: Any) -> None:
    svc = host.service("memcached")
    assert svc.is_running and svc.is_enabled


def test_listens_on_loopback_only(host: Any) -> None:
    assert host.socket("tcp://127.0.0.1:11211").is_listening
    assert not host.socket("tcp://0.0.0.0:11211").is_listening


def test_udp_is_off(settings: dict[str, str]) -> None:
    assert settings.get("udpport") == "0", settings


def test_memory_is_bounded(settings: dict[str, str]) -> None:
    assert settings.get("maxbytes") == str(64 * 2**20), settings


def test_stores_and_returns_a_value(exchange: str) -> None:
    assert "STORED" in exchange and "VALUE goldenimage 0 2\r\nok" in exchange, exchange

"""Validation waits for an SSH banner, not for any listener that accepts a connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from goldenimage.aws.validate import wait_for_ssh
from goldenimage.errors import ValidationFailed


def serve(greeting: bytes) -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                if greeting:
                    conn.sendall(greeting)
                stop.wait(3)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        srv.close()


@pytest.fixture
def sshd() -> Iterator[int]:
    yield from serve(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")


@pytest.fixture
def silent() -> Iterator[int]:
    yield from serve(b"")


def test_a_banner_is_ssh(sshd: int) -> None:
    wait_for_ssh("127.0.0.1", sshd, timeout=5, poll=0.1)


def test_a_listener_without_a_banner_is_not(silent: int) -> None:
    with pytest.raises(ValidationFailed, match=rf"^no SSH on 127.0.0.1:{silent} within 2s$"):
        wait_for_ssh("127.0.0.1", silent, timeout=2, poll=0.1)


def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ValidationFailed, match="no SSH"):
        wait_for_ssh("127.0.0.1", port, timeout=1, poll=0.1)

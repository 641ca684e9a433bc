"""The optional HTTP health source: status and served fingerprint."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from goldenimage.rotation.executor import http_fingerprint_check


@pytest.fixture
def server() -> Iterator[str]:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if self.path == "/healthz" else 503
            body = b'{"status": "ok", "fingerprint": "fp-abc123"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_fingerprint_served(server: str) -> None:
    assert http_fingerprint_check(f"{server}/healthz", 200, "fp-abc123", 2) == ""
    assert "does not serve fingerprint" in http_fingerprint_check(
        f"{server}/healthz", 200, "fp-other", 2
    )
    assert "503" in http_fingerprint_check(f"{server}/down", 200, "", 2)
    assert http_fingerprint_check("http://127.0.0.1:9/healthz", 200, "", 0.5) != ""

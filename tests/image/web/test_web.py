"""Checks of the web image's own: nginx serves the index page and `/healthz` naming the
image. The checks every image passes are in tests/image/common/. One condition per test.

Everything is read from inside the guest through testinfra's `host` (run with --sudo).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

HTTP_GET = """
import json, sys, urllib.error, urllib.request
try:
    response = urllib.request.urlopen(sys.argv[1], timeout=10)
except urllib.error.HTTPError as error:
    response = error
print(json.dumps({
    "status": response.status,
    "content_type": response.headers.get("Content-Type", ""),
    "body": response.read().decode("utf-8", "replace"),
}))
"""


def http_get(host: Any, path: str) -> dict[str, Any]:
    """GET http://127.0.0.1<path> from inside the guest (python3 is in every image)."""
    out = host.check_output("python3 -c %s %s", HTTP_GET, f"http://127.0.0.1{path}")
    return dict(json.loads(out))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthz(host: Any) -> dict[str, Any]:
    return http_get(host, "/healthz")


@pytest.fixture(scope="module")
def healthz_document(healthz: dict[str, Any]) -> dict[str, Any]:
    document = json.loads(healthz["body"])
    assert isinstance(document, dict), healthz["body"]
    return document


# --- nginx -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nginx"])
def test_package_installed(host: Any, name: str) -> None:
    assert host.package(name).is_installed


@pytest.mark.parametrize("name", ["nginx"])
def test_service_running(host: Any, name: str) -> None:
    assert host.service(name).is_running


@pytest.mark.parametrize("name", ["nginx"])
def test_service_enabled(host: Any, name: str) -> None:
    assert host.service(name).is_enabled


@pytest.mark.parametrize("spec", ["tcp://80"])
def test_listening(host: Any, spec: str) -> None:
    assert host.socket(spec).is_listening


# --- the web content -------------------------------------------------------------------------


def test_healthz_status_200(healthz: dict[str, Any]) -> None:
    assert healthz["status"] == 200


def test_healthz_content_type_json(healthz: dict[str, Any]) -> None:
    assert healthz["content_type"].split(";")[0].strip() == "application/json"


def test_healthz_reports_ok(healthz_document: dict[str, Any]) -> None:
    assert healthz_document.get("status") == "ok"


@pytest.mark.parametrize(
    ("field", "expected"),
    [("image", "image_name"), ("fingerprint", "fingerprint"), ("build_time", "build_time")],
)
def test_healthz_reports_the_image(
    healthz_document: dict[str, Any], expect: dict[str, str], field: str, expected: str
) -> None:
    assert healthz_document.get(field) == expect[expected]


def test_index_page_200(host: Any) -> None:
    assert http_get(host, "/")["status"] == 200


def test_index_page_names_the_image(host: Any, expect: dict[str, str]) -> None:
    assert expect["image_name"] in http_get(host, "/")["body"]

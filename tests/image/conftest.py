"""The image suites: testinfra against a booted FINAL image (after hygiene).

Run by the validation step as
    pytest tests/image --hosts=ssh://target --ssh-config=FILE --sudo --junitxml=...
with GOLDENIMAGE_EXPECT naming a JSON file of what this image must report:
image_name, fingerprint, build_time, validation_user (the user of this validation boot) and
validation_pubkey (the one public key line injected at this boot).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

EXPECT_ENV = "GOLDENIMAGE_EXPECT"
EXPECT_KEYS = ("image_name", "fingerprint", "build_time", "validation_user", "validation_pubkey")


@pytest.fixture(scope="session", autouse=True)
def _require_target_host(request: pytest.FixtureRequest) -> None:
    """Without --hosts testinfra would inspect the machine running pytest, not the image."""
    if not request.config.getoption("hosts", None):
        pytest.skip("tests/image runs against a booted image: pass --hosts=ssh://...")


@pytest.fixture(scope="session")
def expect() -> dict[str, str]:
    """The expectations file (GOLDENIMAGE_EXPECT); a test fails when it is unusable."""
    name = os.environ.get(EXPECT_ENV)
    if not name:
        pytest.fail(f"{EXPECT_ENV} is not set (path of the expectations JSON)", pytrace=False)
    try:
        data = json.loads(Path(name).read_text())
    except (OSError, ValueError) as exc:
        pytest.fail(f"{EXPECT_ENV}={name}: {exc}", pytrace=False)
    if not isinstance(data, dict):
        pytest.fail(f"{EXPECT_ENV}={name}: not a JSON object", pytrace=False)
    missing = [key for key in EXPECT_KEYS if not isinstance(data.get(key), str) or not data[key]]
    if missing:
        pytest.fail(f"{EXPECT_ENV}={name}: missing or empty {', '.join(missing)}", pytrace=False)
    return {key: data[key] for key in EXPECT_KEYS}

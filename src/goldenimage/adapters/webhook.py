"""POST a JSON document to a webhook: exponential back-off, bounded attempts and time.

Never raises: the outcome is data (`sent` or `failed`, attempts, last error), because a
report's delivery must not change the result of the job it reports on.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..sections import WebhookSpec

RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


def post(doc: Any, spec: WebhookSpec, *, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    body = json.dumps(doc, sort_keys=True, default=str).encode()
    start = clock()
    delay = spec.backoff
    error = ""
    attempts = 0
    for n in range(1, spec.attempts + 1):
        left = spec.deadline - (clock() - start)
        if left <= 0:
            error += " (deadline reached)"
            break
        attempts = n
        req = urllib.request.Request(spec.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "goldenimage-nightly"})
        try:
            with urllib.request.urlopen(req, timeout=min(spec.timeout, left)) as resp:
                return {"url": spec.url, "outcome": "sent", "attempts": n, "status": resp.status}
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code} {exc.reason}"
            if exc.code not in RETRYABLE_HTTP:
                break
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
        if n < spec.attempts:
            wait = min(delay, max(0.0, spec.deadline - (clock() - start)))
            if wait <= 0 and delay > 0:
                error += " (deadline reached)"
                break
            sleep(wait)
            delay *= 2
    return {"url": spec.url, "outcome": "failed", "attempts": attempts, "error": error}

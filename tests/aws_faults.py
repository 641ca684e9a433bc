"""Test helpers for AWS-side code: fault injection and call recording via botocore events.

Used by the integration and e2e suites (tests/integration/conftest.py) and reusable by any
test of code that talks to AWS through `goldenimage.aws.clients.Clients`:

- `ThrottleInjector(rate=0.3)`: answers a share of HTTP requests with the service's own
  throttling error *before* they are sent (`before-send`), so botocore's standard retry
  mode sees a real throttling response and retries it.
- `ErrorInjector(action, code)`: answers every call of one action with an error (e.g.
  `UnauthorizedOperation`), for access-denied paths.
- `CallRecorder`: records the IAM action of every API call (`before-call`).

Each installs itself on every `Clients` session created while it is active
(`clients.register_hook`); use them as context managers.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from botocore.awsrequest import AWSResponse  # type: ignore[import-untyped, unused-ignore]

from goldenimage.aws.clients import iam_action, register_hook

THROTTLE_CODES = {
    "query": ("Throttling", 400),
    "ec2": ("RequestLimitExceeded", 503),
    "json": ("ThrottlingException", 400),
    "cbor": ("ThrottlingException", 400),
}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _cbor_text(s: str) -> bytes:
    b = s.encode()
    if len(b) < 24:
        return bytes([0x60 + len(b)]) + b
    return bytes([0x78, len(b)]) + b


def _protocol(event_name: str, headers: Any) -> str:
    service = event_name.split(".")[1] if event_name.count(".") >= 1 else ""
    keys = {k.lower() for k in headers}
    if "smithy-protocol" in keys:
        return "cbor"
    if "x-amz-target" in keys:
        return "json"
    if service == "ec2":
        return "ec2"
    return "query"


def error_response(url: str, protocol: str, code: str, message: str, status: int) -> AWSResponse:
    """An HTTP error response in the wire format of `protocol` (query, ec2, json, cbor)."""
    if protocol == "cbor":
        body = (
            b"\xa2"
            + _cbor_text("__type")
            + _cbor_text(code)
            + _cbor_text("message")
            + _cbor_text(message)
        )
        headers = {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"}
    elif protocol == "json":
        body = ('{"__type":"%s","message":"%s"}' % (code, message)).encode()  # noqa: UP031
        headers = {"Content-Type": "application/x-amz-json-1.1"}
    elif protocol == "ec2":
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            "</Error></Errors><RequestID>injected</RequestID></Response>"
        ).encode()
        headers = {"Content-Type": "text/xml"}
    else:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>injected</RequestId></ErrorResponse>"
        ).encode()
        headers = {"Content-Type": "text/xml"}
    return AWSResponse(url, status, headers, _Raw(body))


class _Hooked:
    event = ""

    def __init__(self) -> None:
        self._remove: Any = None

    def handler(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def install(self) -> None:
        self._remove = register_hook(self.event, self.handler)

    def uninstall(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None

    def __enter__(self) -> Any:
        self.install()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.uninstall()


class ThrottleInjector(_Hooked):
    """Throttle `rate` of requests (seeded: reproducible), never more than
    `max_consecutive` in a row, so clients with `max_attempts > max_consecutive` finish."""

    event = "before-send"

    def __init__(self, rate: float = 0.3, *, seed: int = 1234, max_consecutive: int = 2) -> None:
        super().__init__()
        self.rate = rate
        self.max_consecutive = max_consecutive
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._streak = 0
        self.requests = 0
        self.injected = 0
        self.by_operation: dict[str, int] = {}

    def handler(self, **kwargs: Any) -> Any:
        request = kwargs.get("request")
        event_name = str(kwargs.get("event_name", ""))
        if request is None:
            return None
        with self._lock:
            self.requests += 1
            inject = self._streak < self.max_consecutive and self._rng.random() < self.rate
            self._streak = self._streak + 1 if inject else 0
            if not inject:
                return None
            self.injected += 1
            op = event_name.split(".", 1)[-1]
            self.by_operation[op] = self.by_operation.get(op, 0) + 1
        protocol = _protocol(event_name, request.headers)
        code, status = THROTTLE_CODES[protocol]
        return error_response(request.url, protocol, code, "Rate exceeded (injected)", status)


class ErrorInjector(_Hooked):
    """Answer every call of one IAM action (e.g. `ec2:DescribeImages`) with an error."""

    event = "before-send"

    def __init__(
        self,
        action: str,
        code: str = "UnauthorizedOperation",
        status: int = 403,
        message: str = "You are not authorized to perform this operation.",
    ) -> None:
        super().__init__()
        self.service_op = action
        self.code = code
        self.status = status
        self.message = message
        self.hits = 0

    def handler(self, **kwargs: Any) -> Any:
        request = kwargs.get("request")
        event_name = str(kwargs.get("event_name", ""))
        op = event_name.rsplit(".", 1)[-1]
        if request is None or not self.service_op.endswith(f":{op}"):
            return None
        self.hits += 1
        return error_response(
            request.url,
            _protocol(event_name, request.headers),
            self.code,
            self.message,
            self.status,
        )


class CallRecorder(_Hooked):
    """Every API call's IAM action, in order."""

    event = "before-call"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def handler(self, **kwargs: Any) -> Any:
        model = kwargs.get("model")
        if model is not None:
            with self._lock:
                self.calls.append(iam_action(model))
        return None

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> list[str]:
        return self.calls[mark:]

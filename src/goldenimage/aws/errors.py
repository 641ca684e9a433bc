"""botocore exceptions -> the toolkit's error tree (one line a user can act on).

Used as `with aws_errors(clients): ...` around every AWS-side command, and by the
registry's methods. Errors the toolkit raised on purpose pass through untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from ..errors import ConfigError, NotFoundError, OperationFailed
from .clients import Clients

ACCESS_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
    "AuthFailure",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
}
NOT_FOUND_PREFIXES = (
    "InvalidAMIID.",
    "InvalidInstanceID.NotFound",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateName.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidKeyPair.NotFound",
    "ParameterNotFound",
    "TargetGroupNotFound",
)
THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).strip()


def translate(exc: BaseException, clients: Clients | None = None) -> BaseException:
    """The toolkit error for a botocore exception (or `exc` itself when not botocore's)."""
    ctx = clients.ctx if clients is not None else None
    profile = (ctx.profile if ctx else None) or os.environ.get("AWS_PROFILE") or "default"
    where = f" at {ctx.endpoint_url}" if ctx and ctx.endpoint_url else ""
    if isinstance(exc, ProfileNotFound):
        return ConfigError(
            f"unknown AWS profile {profile!r}: it is not in ~/.aws/config or ~/.aws/credentials "
            "(set extra.aws.profile in the environment's goldenimage.yml, or AWS_PROFILE)"
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            f"no AWS credentials for profile {profile!r}: run `aws configure --profile {profile}` "
            "or `aws sso login`, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, NoRegionError):
        return ConfigError("no AWS region: set `region:` in the environment's goldenimage.yml")
    if isinstance(exc, EndpointConnectionError):
        return OperationFailed(f"cannot reach the AWS API{where}: {exc}")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        msg = error_message(exc)
        op = exc.operation_name
        action = clients.last_action if clients is not None and clients.last_action else op
        if not action.endswith(f":{op}"):
            action = op
        if code in ACCESS_DENIED:
            return ConfigError(
                f"access denied: {action} ({code}) for profile {profile!r}{where}: "
                f"grant it (see `invoke iam-policy`): {msg}"
            )
        if code.startswith(NOT_FOUND_PREFIXES) or code.endswith(".NotFound"):
            return NotFoundError(f"{msg or code} ({code} from {action}{where})")
        if code in THROTTLED:
            return OperationFailed(f"AWS kept throttling {action} after retries: {msg}")
        return OperationFailed(f"{action} failed{where}: {code}: {msg}")
    if isinstance(exc, BotoCoreError):
        return OperationFailed(f"AWS SDK error{where}: {exc}")
    return exc


@contextlib.contextmanager
def aws_errors(clients: Clients | None = None) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        new = translate(exc, clients)
        if new is exc:
            raise
        raise new from exc


@contextlib.contextmanager
def code_means(prefix: str, error: Callable[[str], Exception]) -> Iterator[None]:
    """Inside: an AWS error whose code starts with `prefix` raises `error(code)` instead."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc).startswith(prefix):
            raise error(error_code(exc)) from None
        raise

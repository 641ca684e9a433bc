"""Opening an environment's shared state (`state:` in its settings): the bucket checked once,
with one line naming the field when it cannot be used, and the prefix claimed for the
environment so that two environments never share one registry."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import ABSENT, BucketBackend, Conflict

if TYPE_CHECKING:
    from ..settings import Environment

CLAIM = "environment.json"  # at the prefix: which environment's state this is


def s3_client(region: str, endpoint_url: str | None = None, profile: str | None = None,
              max_attempts: int = 5, credentials: dict[str, str] | None = None) -> Any:
    """A boto3 S3 client: botocore's standard retries (resets, throttling, 5xx), path-style
    addressing for an S3-compatible endpoint; `credentials` (access key and secret) instead
    of the usual chain where the endpoint has its own (the sandbox's)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=profile, region_name=region, **(credentials or {}))
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts},
                    s3={"addressing_style": "path"} if endpoint_url else {})
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def describe_failure(exc: Exception, where: str, bucket: str, endpoint: str | None) -> ConfigError | None:
    """The one line for an S3 failure that is the user's to fix (credentials, bucket,
    endpoint); None for anything else."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    at = f"at {endpoint}" if endpoint else "on AWS"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ConfigError(f"{where}: no AWS credentials to reach s3://{bucket} (set AWS_PROFILE, or "
                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or state.profile)")
    if isinstance(exc, ProfileNotFound):
        return ConfigError(f"{where}.profile: {exc}")
    if isinstance(exc, EndpointConnectionError):
        return ConfigError(f"{where}.endpoint_url: {endpoint or 'S3'} does not answer ({exc})")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return ConfigError(f"{where}.bucket: there is no bucket {bucket!r} {at}")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ConfigError(f"{where}: access to s3://{bucket} {at} denied ({code}): check the credentials "
                               "and `invoke iam-policy`")
    return None


def open_backend(env: Environment, endpoint_url: str | None = None,
                 credentials: dict[str, str] | None = None) -> BucketBackend | None:
    """The environment's bucket backend, or None without `state:`. ConfigError (exit 2, one
    line) when the bucket does not exist, no credentials are found, the endpoint does not
    answer, or the prefix already holds another environment's state. `endpoint_url` and
    `credentials`: where the settings name no endpoint and the target has one of its own
    (a sandbox's bucket is served by its moto server)."""
    spec = env.settings.state
    if spec is None:
        return None
    where = f"{env.rel(env.settings_file)}: field state"
    prefix = spec.prefix or env.name
    endpoint = spec.endpoint_url or endpoint_url
    try:
        s3 = s3_client(spec.region or env.region, endpoint, spec.profile,
                       credentials=None if spec.endpoint_url else credentials)
        s3.head_bucket(Bucket=spec.bucket)
        backend = BucketBackend(s3, spec.bucket, prefix)
        claim(backend, env.name, env.settings.target, where)
    except ConfigError:
        raise
    except Exception as exc:
        err = describe_failure(exc, where, spec.bucket, endpoint)
        if err is None:
            raise
        raise err from None
    return backend


def claim(backend: BucketBackend, env_name: str, target: str, where: str) -> None:
    """Mark the prefix as `env_name`'s (create-only); ConfigError if another's."""
    got = backend.get(CLAIM)
    if got is None:
        try:
            backend.put(CLAIM, json.dumps({"env": env_name, "target": target}).encode(), expect=ABSENT)
            return
        except Conflict:
            got = backend.get(CLAIM)
    owner = json.loads(got.data).get("env") if got else env_name
    if owner != env_name:
        raise ConfigError(f"{where}.prefix: {backend.name} holds the state of environment {owner!r}; "
                          f"give {env_name!r} a prefix of its own")

"""One tree of errors, so the command line maps them to exit codes in one place.

Exit codes (the command contract): 0 done, 1 the operation failed or was rolled back,
2 bad input or configuration.
"""

from __future__ import annotations

from typing import Any


class GoldenImageError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.result: dict[str, Any] = {}  # what --json reports beside the error

    def __str__(self) -> str:
        return self.message


class ConfigError(GoldenImageError):
    """Bad input or configuration: a file, field or value the user must fix."""

    exit_code = 2


class NotFoundError(ConfigError):
    """A named thing (environment, image, image id, group) does not exist."""


class MissingToolError(ConfigError):
    """A host tool (packer, qemu, mmdebstrap, ...) is not installed."""


class TemplateError(ConfigError):
    """A Packer template or var file is malformed."""


class OperationFailed(GoldenImageError):
    """The operation ran and failed (a build, a validation, a rotation)."""

    exit_code = 1


class BuildFailed(OperationFailed):
    """Packer or one of its provisioners failed."""


class ValidationFailed(OperationFailed):
    """The final image failed its testinfra suite; it is quarantined."""

    def __init__(self, message: str, failures: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


class IntegrityError(OperationFailed):
    """An artifact's bytes are not the ones its manifest recorded: the image is marked and
    nothing uses it again."""


class Interrupted(OperationFailed):
    """SIGINT or SIGTERM arrived; work was stopped at a safe point and cleaned up."""

    exit_code = 1


def internal_error(exc: Exception) -> str:
    """The one line a bug (any other exception) is reported with."""
    return f"internal error: {type(exc).__name__}: {exc}"

"""Colony's errors.

Exceptions raised by our own code form one tree, so callers catch what they mean:

    ColonyError
    ├── ConfigError           settings or environment are wrong; the message says the fix
    │   └── PortInUseError    a port the embedded stack needs is taken
    ├── StackError            an embedded component failed to start or died
    ├── MigrationError        a schema migration failed (the schema is left as it was)
    ├── AuthError             missing, malformed or unknown API key            (HTTP 401)
    ├── PermissionDenied      the key is valid but may not do this             (HTTP 403)
    ├── NotFound              a named resource does not exist                   (HTTP 404)
    ├── Conflict              the request conflicts with existing state         (HTTP 409)
    ├── InvalidInput          the request is well-formed JSON but not valid     (HTTP 422)
    └── TooManyRequests       a rate, concurrency or spend limit is reached     (HTTP 429)

Inside workflows and activities errors cross Temporal as `ApplicationError`s whose
`type` is an `ErrorType` value; `non_retryable` follows from the type.
"""

from enum import StrEnum
from typing import Any


class ColonyError(Exception):
    """Base of every error Colony raises on purpose."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ConfigError(ColonyError):
    """Configuration is wrong or incomplete; the message says what to change."""

    error_type = "config_error"


class PortInUseError(ConfigError):
    """A port the embedded stack needs is already taken."""

    error_type = "port_in_use"


class StackError(ColonyError):
    """An embedded component failed to start, or died."""

    status_code = 503
    error_type = "stack_error"


class MigrationError(ColonyError):
    """A schema migration failed; the transaction was rolled back."""

    error_type = "migration_error"


class AuthError(ColonyError):
    """Missing, malformed or unknown API key."""

    status_code = 401
    error_type = "unauthorized"


class PermissionDenied(ColonyError):
    """The caller is authenticated but may not perform this action."""

    status_code = 403
    error_type = "forbidden"


class NotFound(ColonyError):
    """The named resource does not exist (or belongs to another tenant)."""

    status_code = 404
    error_type = "not_found"


class Conflict(ColonyError):
    """The request conflicts with existing state."""

    status_code = 409
    error_type = "conflict"


class InvalidInput(ColonyError):
    """The request is syntactically fine but semantically invalid."""

    status_code = 422
    error_type = "invalid_request"


class TooManyRequests(ColonyError):
    """A rate, concurrency or spend limit of the tenant or key is reached.

    `retry_after_s` (whole seconds, at least 1) becomes the `Retry-After` header.
    """

    status_code = 429
    error_type = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int,
        error_type: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = max(1, retry_after_s)
        if error_type is not None:
            self.error_type = error_type


class ErrorType(StrEnum):
    """`ApplicationError.type` values used across workflows and activities."""

    # Retryable: the world may change.
    PROVIDER_UNAVAILABLE = "ProviderUnavailable"
    RATE_LIMITED = "RateLimited"
    TIMEOUT = "Timeout"
    DEPENDENCY_UNAVAILABLE = "DependencyUnavailable"
    MCP_UNAVAILABLE = "McpUnavailable"  # an MCP server cannot be reached or keeps dying
    # Non-retryable: retrying the same input cannot help.
    INVALID_REQUEST = "InvalidRequest"
    AUTH_FAILED = "AuthFailed"
    CONTEXT_TOO_LONG = "ContextTooLong"
    BAD_TOOL_ARGUMENTS = "BadToolArguments"
    UNKNOWN_TOOL = "UnknownTool"
    TOOL_FAILED = "ToolFailed"
    POLICY_DENIED = "PolicyDenied"
    SANDBOX_UNAVAILABLE = "SandboxUnavailable"
    BUDGET_EXCEEDED = "BudgetExceeded"
    WORKSPACE_LOST = "WorkspaceLost"  # the tools host holds no workspace for the run
    GUARDRAIL_BLOCKED = "GuardrailBlocked"  # an agent's guardrail blocked its input or output

    @property
    def retryable(self) -> bool:
        """Whether Temporal should retry an activity that failed with this type."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        ErrorType.PROVIDER_UNAVAILABLE,
        ErrorType.RATE_LIMITED,
        ErrorType.TIMEOUT,
        ErrorType.DEPENDENCY_UNAVAILABLE,
        ErrorType.MCP_UNAVAILABLE,
    }
)

NON_RETRYABLE_ERROR_TYPES: list[str] = [t.value for t in ErrorType if not t.retryable]
"""For `RetryPolicy(non_retryable_error_types=...)`."""

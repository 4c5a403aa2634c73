"""Errors the hub reports to callers: a canonical code, one UPPER_SNAKE reason, metadata.

They carry no gRPC types so that services and the CLI raise them too; the API layer maps
each one to a `google.rpc.Status` with one `ErrorInfo` (AIP-193). Reasons are part of the
public contract: never rename one once published.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class ErrorCode(enum.Enum):
    """The subset of canonical gRPC codes the hub uses for client-visible outcomes."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class FieldViolation:
    field: str  # dotted path in the request, e.g. "spend.amount_minor"
    description: str


class CoalitionError(Exception):
    code: ErrorCode = ErrorCode.FAILED_PRECONDITION

    def __init__(
        self,
        reason: str,
        message: str,
        metadata: Mapping[str, object] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        *,
        retry_resolves: bool = False,
    ) -> None:
        assert reason.isupper() and " " not in reason, reason
        super().__init__(message)
        self.reason = reason
        self.message = message
        # Every dynamic value of the message also appears here, as text (AIP-193). A value
        # that is absent (None or empty) is left out rather than sent as an empty entry, so
        # that a client can trust every key it receives to carry a value.
        self.metadata = {
            key: str(value)
            for key, value in (metadata or {}).items()
            if value is not None and str(value) != ""
        }
        assert all(self.metadata), "metadata keys are never empty"
        self.field_violations = tuple(field_violations)
        # A refusal that tells the client to retry (it lost a race that has since ended): the
        # same request may succeed, so it is never a request id's final answer.
        self.retry_resolves = retry_resolves


class InvalidArgument(CoalitionError):
    code = ErrorCode.INVALID_ARGUMENT

    def __init__(
        self,
        violations: Iterable[FieldViolation],
        reason: str = "INVALID_FIELD",
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        violations = tuple(violations)
        assert violations, "an InvalidArgument names at least one field"
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(
            reason,
            f"invalid request: {summary}",
            {"fields": ",".join(v.field for v in violations), **(metadata or {})},
            violations,
        )


class NotFound(CoalitionError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(CoalitionError):
    code = ErrorCode.ALREADY_EXISTS


class FailedPrecondition(CoalitionError):
    code = ErrorCode.FAILED_PRECONDITION


class PermissionDenied(CoalitionError):
    code = ErrorCode.PERMISSION_DENIED


class Unauthenticated(CoalitionError):
    code = ErrorCode.UNAUTHENTICATED


class Unavailable(CoalitionError):
    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(CoalitionError):
    code = ErrorCode.DEADLINE_EXCEEDED


_ERROR_CLASS_BY_CODE: dict[ErrorCode, type[CoalitionError]] = {
    error_class.code: error_class
    for error_class in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        DeadlineExceeded,
    )
}


def restored_error(
    code: ErrorCode,
    reason: str,
    message: str,
    metadata: Mapping[str, str],
    field_violations: Iterable[FieldViolation] = (),
) -> CoalitionError:
    """An error as it was first raised, from its recorded parts (a remembered refusal)."""
    error_class = _ERROR_CLASS_BY_CODE[code]
    error = error_class.__new__(error_class)
    CoalitionError.__init__(error, reason, message, metadata, field_violations)
    return error

"""Mapping hub errors to gRPC statuses with `google.rpc.Status` details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from coalition.domain.errors import CoalitionError, ErrorCode

ERROR_DOMAIN = "coalition"
# Error texts can echo request values. Bounded, so that no request can push the status trailer
# past gRPC's metadata limit (8 KiB by default on clients), which would lose the details.
MESSAGE_LENGTH_MAX = 1024
METADATA_VALUE_LENGTH_MAX = 256
# The first faults of a request are enough to fix it; the ErrorInfo says how many there were.
FIELD_VIOLATIONS_REPORTED_MAX = 10

_CODES = {
    ErrorCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: code_pb2.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    ErrorCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    ErrorCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    ErrorCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    ErrorCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
}


def status_of(error: CoalitionError) -> grpc.Status:
    """One ErrorInfo always; a BadRequest too when fields were at fault.

    Each field violation's `reason` (AIP-193) is the error's own reason: the hub names why a
    request was refused once, and every field it blames shares that cause.
    """
    metadata = dict(error.metadata)
    if len(error.field_violations) > FIELD_VIOLATIONS_REPORTED_MAX:
        metadata["field_violations_total"] = str(len(error.field_violations))
    error_info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=ERROR_DOMAIN,
        # Whatever set the metadata (a subclass may assign it whole), an empty key or value
        # never reaches a client: a key present always carries a value.
        metadata={
            key: _bounded(value, METADATA_VALUE_LENGTH_MAX)
            for key, value in metadata.items()
            if key and value
        },
    )
    details = [_packed(error_info)]
    if error.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_bounded(violation.field, METADATA_VALUE_LENGTH_MAX),
                    description=_bounded(violation.description, METADATA_VALUE_LENGTH_MAX),
                    reason=error.reason,
                )
                for violation in error.field_violations[:FIELD_VIOLATIONS_REPORTED_MAX]
            ]
        )
        details.append(_packed(bad_request))
    message = _bounded(error.message, MESSAGE_LENGTH_MAX)
    status = status_pb2.Status(code=_CODES[error.code], message=message, details=details)
    return rpc_status.to_status(status)


def status_code_of(error: CoalitionError) -> int:
    """The canonical code number (google.rpc.Code) the error is reported with."""
    return int(_CODES[error.code])


def internal_status(reason: str, message: str) -> grpc.Status:
    error_info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message=message, details=[_packed(error_info)]
    )
    return rpc_status.to_status(status)


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _bounded(text: str, length_max: int) -> str:
    return text if len(text) <= length_max else text[: length_max - 1] + "…"

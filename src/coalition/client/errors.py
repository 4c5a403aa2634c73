"""Hub refusals as exceptions: the status code, the ErrorInfo reason and metadata, and the
BadRequest field violations, decoded from the `google.rpc.Status` trailer (AIP-193)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# A client may retry these with the same request_id: the hub applied nothing it will not
# replay. Every other code is the hub's final word on the request.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class FieldViolation:
    field: str  # the dotted path in the request, e.g. "spend.amount_minor"
    description: str
    reason: str


class HubError(Exception):
    """A call the hub (or the transport) refused. `reason` is the ErrorInfo reason of
    docs/errors.md; it is empty only when the failure never reached the hub (no details)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: dict[str, str],
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}/{reason or '-'}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = metadata
        self.field_violations = field_violations

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> HubError:
        call: grpc.Call = error  # what grpc raises for a call is also its grpc.Call
        status = rpc_status.from_call(call)
        reason, metadata = "", {}
        violations: list[FieldViolation] = []
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description, v.reason)
                    for v in bad_request.field_violations
                )
        return cls(call.code(), reason, call.details() or "", metadata, tuple(violations))

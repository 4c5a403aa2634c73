"""Error statuses stay within gRPC's trailer limit whatever the error echoes (AIP-193)."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2, status_pb2

from coalition.api.errors import (
    FIELD_VIOLATIONS_REPORTED_MAX,
    MESSAGE_LENGTH_MAX,
    METADATA_VALUE_LENGTH_MAX,
    status_of,
)
from coalition.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument

pytestmark = pytest.mark.unit

CLIENT_METADATA_BYTES_MAX = 8 * 1024  # grpc's default limit on a client's received metadata


def trailer_bytes(status: object) -> int:
    return sum(len(key) + len(value) for key, value in status.trailing_metadata)  # type: ignore[attr-defined]


def test_a_huge_message_and_metadata_are_bounded_and_the_details_still_decode() -> None:
    echoed = "x" * 200_000
    status = status_of(FailedPrecondition("SOME_REASON", f"customer {echoed}", {"id": echoed}))
    assert len(status.details) == MESSAGE_LENGTH_MAX and status.details.endswith("…")
    ((_, details),) = status.trailing_metadata
    rich = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert (info.reason, len(info.metadata["id"])) == ("SOME_REASON", METADATA_VALUE_LENGTH_MAX)
    assert trailer_bytes(status) < CLIENT_METADATA_BYTES_MAX


def test_short_errors_pass_unchanged() -> None:
    error = InvalidArgument([FieldViolation("points", "must be positive")])
    status = status_of(error)
    assert status.details == error.message
    ((_, details),) = status.trailing_metadata
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(details).details[1].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("points", "must be positive")
    ]


def test_every_field_violation_carries_the_reason_of_its_error() -> None:
    error = InvalidArgument(
        [FieldViolation("points", "at most 10"), FieldViolation("memo", "too long")],
        reason="POINTS_LIMIT_EXCEEDED",
    )
    ((_, details),) = status_of(error).trailing_metadata
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(details).details[1].Unpack(bad_request)
    assert [v.reason for v in bad_request.field_violations] == ["POINTS_LIMIT_EXCEEDED"] * 2


def test_absent_metadata_values_are_left_out_not_sent_empty() -> None:
    metadata = {"member_id": None, "kind": "", "id": "7", "balance_points": 0}
    error = FailedPrecondition("SOME_REASON", "m", metadata)
    ((_, details),) = status_of(error).trailing_metadata
    info = error_details_pb2.ErrorInfo()
    assert status_pb2.Status.FromString(details).details[0].Unpack(info)
    assert dict(info.metadata) == {"id": "7", "balance_points": "0"}


def test_metadata_assigned_whole_still_never_carries_an_empty_entry() -> None:
    error = FailedPrecondition("SOME_REASON", "m", {"id": "7"})
    error.metadata = {"id": "7", "first_field": "", "": "x"}  # as ReportMalformed assigns it
    ((_, details),) = status_of(error).trailing_metadata
    info = error_details_pb2.ErrorInfo()
    assert status_pb2.Status.FromString(details).details[0].Unpack(info)
    assert dict(info.metadata) == {"id": "7"}


def test_the_field_violations_reported_are_bounded_and_say_how_many_there_were() -> None:
    violations = [FieldViolation(f"items[{index}].points", "x" * 300) for index in range(5_000)]
    status = status_of(InvalidArgument(violations))
    assert trailer_bytes(status) < CLIENT_METADATA_BYTES_MAX
    ((_, details),) = status.trailing_metadata
    rich = status_pb2.Status.FromString(details)
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert rich.details[0].Unpack(info) and rich.details[1].Unpack(bad_request)
    assert len(bad_request.field_violations) == FIELD_VIOLATIONS_REPORTED_MAX
    assert bad_request.field_violations[0].field == "items[0].points"
    assert info.metadata["field_violations_total"] == "5000"

"""Helpers for identity tests: a client per principal, error details, database scans."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine, String, Text, inspect, text

from coalition.v1 import (
    common_pb2,
    member_service_pb2_grpc,
    points_service_pb2,
    points_service_pb2_grpc,
)
from coalition.v1 import member_service_pb2 as messages

CALL_TIMEOUT_SECONDS = 15.0


def new_id() -> str:
    return uuid.uuid4().hex


class Caller:
    """One principal over the real channel: every call carries its key and a deadline."""

    def __init__(self, channel: grpc.Channel, metadata_: Any, partner_id: str) -> None:
        self.metadata = metadata_
        self.partner_id = partner_id
        self._members = member_service_pb2_grpc.MemberServiceStub(channel)
        self._points = points_service_pb2_grpc.PointsServiceStub(channel)

    def call(self, method: str, request: Any) -> Any:
        stub = self._members if hasattr(self._members, method) else self._points
        return getattr(stub, method)(request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS)

    def enroll(
        self, customer_id: str | None = None, **fields: Any
    ) -> messages.EnrollMemberResponse:
        request = messages.EnrollMemberRequest(
            request_id=fields.pop("request_id", new_id()),
            partner_customer_id=customer_id or f"customer-{new_id()}",
            display_name=fields.pop("display_name", "Mei Lin"),
            **fields,
        )
        return self.call("EnrollMember", request)

    def resolve(self, **fields: str) -> str:
        return str(self.call("ResolveMember", messages.ResolveMemberRequest(**fields)).member_id)

    def earn(self, member_id: str, amount_minor: int, currency: str) -> Any:
        request = points_service_pb2.EarnRequest(
            request_id=new_id(),
            member=common_pb2.MemberReference(member_id=member_id),
            spend=common_pb2.Money(amount_minor=amount_minor, currency=currency),
        )
        return self.call("Earn", request)

    def burn(self, member_id: str, points: int) -> Any:
        request = points_service_pb2.BurnRequest(
            request_id=new_id(),
            member=common_pb2.MemberReference(member_id=member_id),
            points=points,
        )
        return self.call("Burn", request)

    def balance(self, member_id: str) -> Any:
        request = points_service_pb2.GetBalanceRequest(
            member=common_pb2.MemberReference(member_id=member_id)
        )
        return self.call("GetBalance", request)

    def consent(
        self, member_id: str, request_id: str | None = None, source: str = "app", **scopes: bool
    ) -> messages.UpdateConsentResponse:
        """Grant (True) or revoke (False) scopes named like basic=True, birthday=False."""
        request = messages.UpdateConsentRequest(
            request_id=request_id or new_id(),
            member=common_pb2.MemberReference(member_id=member_id),
            changes=[
                messages.ConsentChange(scope=f"profile.{name}", granted=granted)
                for name, granted in scopes.items()
            ],
            source=source,
        )
        return self.call("UpdateConsent", request)

    def profile(self, member_id: str) -> messages.GetMemberProfileResponse:
        request = messages.GetMemberProfileRequest(
            member=common_pb2.MemberReference(member_id=member_id)
        )
        return self.call("GetMemberProfile", request)

    def merge(
        self, survivor_member_id: str, duplicate_member_id: str, request_id: str | None = None
    ) -> messages.MergeMembersResponse:
        request = messages.MergeMembersRequest(
            request_id=request_id or new_id(),
            survivor_member_id=survivor_member_id,
            duplicate_member_id=duplicate_member_id,
        )
        return self.call("MergeMembers", request)


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    fields: tuple[str, ...]
    message: str


def expect_failure(
    call: Callable[[], Any], code: grpc.StatusCode, reason: str, fields: tuple[str, ...] = ()
) -> Failure:
    """`call` must fail with `code`, one ErrorInfo of `reason`, and BadRequest `fields`."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    error_infos, violations = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
            error_infos.append(error_info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(v.field for v in bad_request.field_violations)
            assert {v.reason for v in bad_request.field_violations} == {error_infos[0].reason}
    assert len(error_infos) == 1
    assert all(key and value for key, value in error_infos[0].metadata.items()), error_infos
    failure = Failure(
        error.code(), error_infos[0].reason, dict(error_infos[0].metadata), tuple(violations),
        str(error.details()),
    )  # fmt: skip
    assert (failure.code, failure.reason, failure.fields) == (code, reason, fields), failure
    return failure


def text_values(engine: Engine) -> list[tuple[str, str, str]]:
    """(table, column, value) of every non-empty text value in every table of the database,
    whether or not the schema module knows the table."""
    found: list[tuple[str, str, str]] = []
    with engine.connect() as connection:
        inspector = inspect(connection)
        for table_name in inspector.get_table_names():
            for column in inspector.get_columns(table_name):
                if not isinstance(column["type"], String | Text):
                    continue
                name = column["name"]
                rows = connection.execute(
                    text(f'SELECT "{name}" FROM "{table_name}" WHERE "{name}" IS NOT NULL')
                )
                found.extend((table_name, name, str(value)) for (value,) in rows if value)
    return found

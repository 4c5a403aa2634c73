"""End-to-end helpers: partner clients on the real channel, error details, row counts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine

from coalition.api.server import Hub
from coalition.partners import credentials
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.schema import (
    accounts,
    api_keys,
    idempotency_keys,
    journal_transactions,
    lot_consumptions,
    lots,
    member_accounts,
    members,
    partner_links,
    postings,
)
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import (
    common_pb2,
    member_service_pb2,
    member_service_pb2_grpc,
    partner_service_pb2_grpc,
    points_service_pb2,
    points_service_pb2_grpc,
)
from tests.conftest import api_key
from tests.integration import ledger_checks

# Every call has a deadline, so that a hub that hangs fails the test instead of the run.
CALL_TIMEOUT_SECONDS = 15.0
CURRENCY = {"test-coffee": "CNY", "test-air": "EUR", "test-cinema": "GBP"}
WRITTEN_TABLES = (
    journal_transactions,
    postings,
    lots,
    lot_consumptions,
    idempotency_keys,
    members,
    partner_links,
    accounts,
    member_accounts,
    api_keys,
)

Metadata = tuple[tuple[str, str], ...]


@contextmanager
def serving(engine: Engine) -> Iterator[grpc.Channel]:
    """A hub of the test's own on `engine` (for engines the `hub` fixture does not build)."""
    hub = Hub(engine, "127.0.0.1:0", programme=DEFAULT_PROGRAMME).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
            yield channel
    finally:
        hub.stop(grace_seconds=0)


def bearer(api_key_text: str) -> Metadata:
    return (("authorization", f"Bearer {api_key_text}"),)


def issue_key(engine: Engine, principal_id: str, role: str = "partner") -> credentials.IssuedKey:
    """A key issued straight through the service function, as `coalition keys issue` does."""
    return credentials.issue_key(UnitOfWork(engine), principal_id, role, datetime.now(UTC))


def revoke_key(engine: Engine, key_id: str) -> None:
    credentials.revoke_key(UnitOfWork(engine), key_id, datetime.now(UTC))


def new_id() -> str:
    return uuid.uuid4().hex


def timestamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def by_id(member_id: str) -> common_pb2.MemberReference:
    return common_pb2.MemberReference(member_id=member_id)


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table a request may write, read straight from the database."""
    return ledger_checks.row_counts(engine, (table.name for table in WRITTEN_TABLES))


@dataclass(frozen=True)
class Failure:
    """What a failed call carried: its code and the one ErrorInfo and BadRequest details."""

    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: tuple[str, ...] = field(default=())


def failure_of(error: grpc.RpcError) -> Failure:
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status on {error.code()}: {error.details()}"
    error_infos: list[error_details_pb2.ErrorInfo] = []
    fields: list[str] = []
    reasons: set[str] = set()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
            error_infos.append(error_info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(violation.field for violation in bad_request.field_violations)
            reasons.update(violation.reason for violation in bad_request.field_violations)
    assert len(error_infos) == 1, f"exactly one ErrorInfo expected, got {error_infos}"
    (error_info,) = error_infos
    # Every field violation names its cause (AIP-193), and no metadata entry is empty.
    assert reasons <= {error_info.reason}, reasons
    assert all(key and value for key, value in error_info.metadata.items()), error_info
    return Failure(
        error.code(), error_info.reason, error_info.domain, dict(error_info.metadata), tuple(fields)
    )


def expect_failure(
    call: Callable[[], Any],
    code: grpc.StatusCode,
    reason: str,
    fields: tuple[str, ...] = (),
) -> Failure:
    """Run `call`, which must fail with `code` and `reason`; a BadRequest names exactly
    `fields` (and only INVALID_ARGUMENT carries one)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    failure = failure_of(caught.value)
    assert (failure.code, failure.reason) == (code, reason), caught.value.details()
    assert failure.domain == "coalition"
    assert failure.fields == fields
    assert (code == grpc.StatusCode.INVALID_ARGUMENT) == bool(fields)
    return failure


class Client:
    """One principal's view of the hub: every call carries its API key and a deadline."""

    def __init__(self, channel: grpc.Channel, metadata: Metadata) -> None:
        self.metadata = metadata
        self._stubs = (
            points_service_pb2_grpc.PointsServiceStub(channel),
            member_service_pb2_grpc.MemberServiceStub(channel),
            partner_service_pb2_grpc.PartnerServiceStub(channel),
        )

    def call(self, method: str, request: Any, timeout: float = CALL_TIMEOUT_SECONDS) -> Any:
        (stub,) = (stub for stub in self._stubs if hasattr(stub, method))
        return getattr(stub, method)(request, metadata=self.metadata, timeout=timeout)


class PartnerClient(Client):
    """A partner's POS: short helpers for the calls the tests repeat."""

    def __init__(self, channel: grpc.Channel, engine: Engine, partner_id: str) -> None:
        super().__init__(channel, api_key(engine, partner_id))
        self.partner_id = partner_id
        self.currency = CURRENCY[partner_id]

    def money(self, amount_minor: int) -> common_pb2.Money:
        return common_pb2.Money(amount_minor=amount_minor, currency=self.currency)

    def enroll(
        self, customer_id: str | None = None, request_id: str | None = None
    ) -> member_service_pb2.EnrollMemberResponse:
        request = member_service_pb2.EnrollMemberRequest(
            request_id=request_id or new_id(),
            partner_customer_id=customer_id or f"customer-{new_id()}",
            display_name="Mei Lin",
        )
        return self.call("EnrollMember", request)

    def new_member(self) -> str:
        return str(self.enroll().member.member_id)

    def earn(
        self,
        member_id: str,
        amount_minor: int | None = None,
        *,
        native_points: int | None = None,
        occurred_at: datetime | None = None,
        request_id: str | None = None,
    ) -> points_service_pb2.EarnResponse:
        request = points_service_pb2.EarnRequest(
            request_id=request_id or new_id(), member=by_id(member_id)
        )
        if native_points is not None:
            request.native_points = native_points
        else:
            assert amount_minor is not None
            request.spend.CopyFrom(self.money(amount_minor))
        if occurred_at is not None:
            request.occurred_at.CopyFrom(timestamp(occurred_at))
        return self.call("Earn", request)

    def burn(
        self,
        member_id: str,
        points: int | None = None,
        *,
        value_minor: int | None = None,
        request_id: str | None = None,
    ) -> points_service_pb2.BurnResponse:
        request = points_service_pb2.BurnRequest(
            request_id=request_id or new_id(), member=by_id(member_id)
        )
        if value_minor is not None:
            request.value.CopyFrom(self.money(value_minor))
        else:
            assert points is not None
            request.points = points
        return self.call("Burn", request)

    def reverse(
        self, transaction_id: str, points: int = 0, request_id: str | None = None
    ) -> points_service_pb2.ReverseResponse:
        request = points_service_pb2.ReverseRequest(
            request_id=request_id or new_id(),
            transaction_id=transaction_id,
            points=points,
            reason="refund",
        )
        return self.call("Reverse", request)

    def balance(self, member_id: str, as_of: datetime | None = None) -> int:
        request = points_service_pb2.GetBalanceRequest(member=by_id(member_id))
        if as_of is not None:
            request.as_of.CopyFrom(timestamp(as_of))
        return int(self.call("GetBalance", request).balance_points)

    def list_page(
        self, member_id: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> points_service_pb2.ListTransactionsResponse:
        request = points_service_pb2.ListTransactionsRequest(
            page_size=page_size, page_token=page_token
        )
        if member_id is not None:
            request.member.CopyFrom(by_id(member_id))
        return self.call("ListTransactions", request)

    def transactions(
        self, member_id: str | None = None, page_size: int = 0
    ) -> list[common_pb2.Transaction]:
        """Every transaction the caller may list, walking all pages (at most 100 of them)."""
        found: list[common_pb2.Transaction] = []
        page_token = ""
        for _ in range(100):
            page = self.list_page(member_id, page_size, page_token)
            found.extend(page.transactions)
            page_token = page.next_page_token
            if not page_token:
                return found
        raise AssertionError("more than 100 pages: the listing does not end")

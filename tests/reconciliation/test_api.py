"""ReconciliationService over real gRPC on loopback: roles, streaming, errors, paging."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Engine, func, select

from coalition.store.schema import reconciliation_exceptions, reconciliation_runs
from coalition.v1 import reconciliation_service_pb2 as messages
from coalition.v1 import (
    reconciliation_service_pb2_grpc,
    settlement_service_pb2,
    settlement_service_pb2_grpc,
)
from tests.conftest import api_key
from tests.reconciliation.conftest import PARTNER_ID, Ledger, as_csv, chunked, planted_report

pytestmark = pytest.mark.end_to_end

CALL_TIMEOUT_SECONDS = 30.0
CSV = messages.REPORT_FORMAT_CSV


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    reason: str
    fields: list[str]


def failure_of(error: grpc.RpcError) -> Failure:
    status = rpc_status.from_call(error)
    assert status is not None, f"no status details: {error}"
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields = [violation.field for violation in bad_request.field_violations]
    return Failure(error.code(), reason, fields)


def messages_of(
    content: bytes, partner_id: str = "", report_format: int = CSV
) -> Iterator[messages.SubmitPartnerReportRequest]:
    header = messages.ReportHeader(partner_id=partner_id, format=report_format)
    yield messages.SubmitPartnerReportRequest(header=header)
    for chunk in chunked(content, 4096):
        yield messages.SubmitPartnerReportRequest(content=chunk)


@pytest.fixture
def stub(channel: grpc.Channel) -> reconciliation_service_pb2_grpc.ReconciliationServiceStub:
    return reconciliation_service_pb2_grpc.ReconciliationServiceStub(channel)


def stored(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (reconciliation_runs, reconciliation_exceptions)
        )


def test_a_partner_submits_reads_and_pages_its_own_report(
    ledger: Ledger, stub: reconciliation_service_pb2_grpc.ReconciliationServiceStub
) -> None:
    coffee = api_key(ledger.engine, PARTNER_ID)
    content = as_csv(planted_report(ledger).rows)
    response = stub.SubmitPartnerReport(
        messages_of(content), metadata=coffee, timeout=CALL_TIMEOUT_SECONDS
    )
    run = response.run
    assert not response.replayed and run.partner_id == PARTNER_ID
    assert (run.matched, run.mismatched, run.missing_in_hub) == (4, 1, 1)
    assert (run.missing_in_partner, run.duplicated, run.exceptions_open) == (1, 1, 4)
    again = stub.SubmitPartnerReport(
        messages_of(content, PARTNER_ID), metadata=coffee, timeout=CALL_TIMEOUT_SECONDS
    )
    assert again.replayed and again.run == run
    fetched = stub.GetReconciliationRun(
        messages.GetReconciliationRunRequest(run_id=run.run_id), metadata=coffee
    )
    assert fetched.run == run
    first = stub.ListReconciliationExceptions(
        messages.ListReconciliationExceptionsRequest(run_id=run.run_id, page_size=3),
        metadata=coffee,
    )
    second = stub.ListReconciliationExceptions(
        messages.ListReconciliationExceptionsRequest(
            run_id=run.run_id, page_size=3, page_token=first.next_page_token
        ),
        metadata=coffee,
    )
    assert len(first.exceptions) == 3 and len(second.exceptions) == 1
    assert second.next_page_token == ""
    mismatched = stub.ListReconciliationExceptions(
        messages.ListReconciliationExceptionsRequest(
            run_id=run.run_id, kind=messages.RECONCILIATION_EXCEPTION_KIND_MISMATCHED
        ),
        metadata=coffee,
    )
    (exception,) = mismatched.exceptions
    assert [d.field for d in exception.differences] == [
        "points",
        "occurred_at",
        "partner_reference",
    ]


def test_finance_acts_for_any_partner_and_alone_resolves(
    ledger: Ledger, stub: reconciliation_service_pb2_grpc.ReconciliationServiceStub
) -> None:
    finance = api_key(ledger.engine, "group-finance", "finance")
    coffee = api_key(ledger.engine, PARTNER_ID)
    content = as_csv(planted_report(ledger).rows)
    run = stub.SubmitPartnerReport(messages_of(content, PARTNER_ID), metadata=finance).run
    exceptions = stub.ListReconciliationExceptions(
        messages.ListReconciliationExceptionsRequest(run_id=run.run_id), metadata=finance
    ).exceptions
    target = messages.ResolveReconciliationExceptionRequest(
        exception_id=exceptions[0].exception_id, note="booked manually"
    )
    with pytest.raises(grpc.RpcError) as denied:
        stub.ResolveReconciliationException(target, metadata=coffee)
    assert failure_of(denied.value).reason == "ROLE_NOT_ALLOWED"
    resolved = stub.ResolveReconciliationException(target, metadata=finance).exception
    assert resolved.resolution_note == "booked manually" and resolved.resolved_by
    assert resolved.HasField("resolve_time")
    with pytest.raises(grpc.RpcError) as conflict:
        stub.ResolveReconciliationException(
            messages.ResolveReconciliationExceptionRequest(
                exception_id=exceptions[0].exception_id, note="another"
            ),
            metadata=finance,
        )
    assert failure_of(conflict.value) == Failure(
        grpc.StatusCode.FAILED_PRECONDITION, "EXCEPTION_ALREADY_RESOLVED", []
    )
    run_now = stub.GetReconciliationRun(
        messages.GetReconciliationRunRequest(run_id=run.run_id), metadata=coffee
    ).run
    assert run_now.exceptions_open == 3


def test_other_partners_runs_look_absent_and_cannot_be_submitted(
    ledger: Ledger, stub: reconciliation_service_pb2_grpc.ReconciliationServiceStub
) -> None:
    coffee = api_key(ledger.engine, PARTNER_ID)
    air = api_key(ledger.engine, "test-air")
    run = stub.SubmitPartnerReport(messages_of(as_csv(ledger.report_rows())), metadata=coffee).run
    with pytest.raises(grpc.RpcError) as hidden:
        stub.GetReconciliationRun(
            messages.GetReconciliationRunRequest(run_id=run.run_id), metadata=air
        )
    assert failure_of(hidden.value).reason == "RUN_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as foreign:
        stub.SubmitPartnerReport(messages_of(b"", PARTNER_ID), metadata=air)
    assert failure_of(foreign.value) == Failure(grpc.StatusCode.NOT_FOUND, "PARTNER_NOT_FOUND", [])
    merchant = api_key(ledger.engine, PARTNER_ID, "merchant")
    with pytest.raises(grpc.RpcError) as denied:
        stub.GetReconciliationRun(
            messages.GetReconciliationRunRequest(run_id=run.run_id), metadata=merchant
        )
    assert failure_of(denied.value).code == grpc.StatusCode.PERMISSION_DENIED


def test_bad_submissions_are_refused_precisely_and_store_nothing(
    ledger: Ledger, stub: reconciliation_service_pb2_grpc.ReconciliationServiceStub
) -> None:
    coffee = api_key(ledger.engine, PARTNER_ID)
    finance = api_key(ledger.engine, "group-finance", "finance")
    rows = ledger.report_rows()
    rows[2]["occurred_at"] = "yesterday"
    cases = [
        (messages_of(as_csv(rows)), coffee, "REPORT_MALFORMED", ["line[4].occurred_at"]),
        (
            messages_of(b"", "", messages.REPORT_FORMAT_UNSPECIFIED),
            coffee,
            "INVALID_FIELD",
            ["header.format"],
        ),
        (messages_of(b""), finance, "INVALID_FIELD", ["header.partner_id"]),
        (
            iter([messages.SubmitPartnerReportRequest(content=b"x")]),
            coffee,
            "INVALID_FIELD",
            ["header"],
        ),
    ]
    for requests, metadata, reason, fields in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitPartnerReport(requests, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        assert failure_of(caught.value) == Failure(grpc.StatusCode.INVALID_ARGUMENT, reason, fields)
    assert stored(ledger.engine) == (0, 0)


def test_hostile_rows_are_refused_as_malformed_never_internal(
    ledger: Ledger, stub: reconciliation_service_pb2_grpc.ReconciliationServiceStub
) -> None:
    coffee = api_key(ledger.engine, PARTNER_ID)
    rows = ledger.report_rows()
    rows[0]["occurred_at"] = "0001-01-01T00:00:00+14:00"
    nested = ("[" * 25_000 + "\n").encode()
    cases = [
        (messages_of(as_csv(rows)), ["line[2].occurred_at"]),
        (messages_of(nested, report_format=messages.REPORT_FORMAT_JSONL), ["line[1].row"]),
    ]
    for requests, fields in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitPartnerReport(requests, metadata=coffee, timeout=CALL_TIMEOUT_SECONDS)
        assert failure_of(caught.value) == Failure(
            grpc.StatusCode.INVALID_ARGUMENT, "REPORT_MALFORMED", fields
        )
    assert stored(ledger.engine) == (0, 0)


def test_operations_reconciles_and_resolves_for_any_partner_without_finance_s_rights(
    ledger: Ledger,
    stub: reconciliation_service_pb2_grpc.ReconciliationServiceStub,
    channel: grpc.Channel,
) -> None:
    operations = api_key(ledger.engine, "group-operations", "operations")
    content = as_csv(planted_report(ledger).rows)
    run = stub.SubmitPartnerReport(messages_of(content, PARTNER_ID), metadata=operations).run
    listed = stub.ListReconciliationExceptions(
        messages.ListReconciliationExceptionsRequest(run_id=run.run_id, open_only=True),
        metadata=operations,
    ).exceptions
    assert len(listed) == 4
    resolved = stub.ResolveReconciliationException(
        messages.ResolveReconciliationExceptionRequest(
            exception_id=listed[0].exception_id, note="checked with the POS vendor"
        ),
        metadata=operations,
    ).exception
    assert resolved.resolved_by == "group-operations"

    settlement = settlement_service_pb2_grpc.SettlementServiceStub(channel)
    for call, request in (
        (
            settlement.RunSettlement,
            settlement_service_pb2.RunSettlementRequest(period="2026-01-31"),
        ),
        (settlement.ListSettlements, settlement_service_pb2.ListSettlementsRequest()),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            call(request, metadata=operations)
        assert failure_of(denied.value).reason == "ROLE_NOT_ALLOWED"
    with pytest.raises(grpc.RpcError) as no_partner:
        stub.SubmitPartnerReport(messages_of(content), metadata=operations)
    assert failure_of(no_partner.value).fields == ["header.partner_id"]

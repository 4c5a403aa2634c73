"""ReconciliationService: submit partner reports, read runs, page and resolve exceptions.

A partner acts on its own reports only (another partner's runs look absent); `finance` and
`operations` act for any partner and alone resolve exceptions (server.ROLES_BY_METHOD).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc

from coalition.api import responses
from coalition.api.interceptors import current_principal
from coalition.api.requests import RequestParser, page_token_for
from coalition.domain.errors import FieldViolation, InvalidArgument, NotFound
from coalition.reconciliation import jobs, runs
from coalition.reconciliation.jobs import scheduled_job
from coalition.reconciliation.matching import Deadline, ReportSubmission, submit_report
from coalition.reconciliation.runs import ExceptionRecord, RunSummary
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import reconciliation_service_pb2 as messages
from coalition.v1 import reconciliation_service_pb2_grpc

FORMATS = {messages.REPORT_FORMAT_CSV: "csv", messages.REPORT_FORMAT_JSONL: "jsonl"}
FORMAT_MESSAGES = {name: value for value, name in FORMATS.items()}
KINDS = {
    messages.RECONCILIATION_EXCEPTION_KIND_MISSING_IN_HUB: "missing_in_hub",
    messages.RECONCILIATION_EXCEPTION_KIND_MISSING_IN_PARTNER: "missing_in_partner",
    messages.RECONCILIATION_EXCEPTION_KIND_MISMATCHED: "mismatched",
    messages.RECONCILIATION_EXCEPTION_KIND_DUPLICATED: "duplicated",
}
KIND_MESSAGES = {name: value for value, name in KINDS.items()}
CONTENT_CHUNK_BYTES_MAX = 1024 * 1024
RESOLUTION_NOTE_LENGTH_MAX = 1000
GROUP_ROLES = ("finance", "operations")  # roles that reconcile for every partner


def _partner_scope() -> str | None:
    """The only partner the caller may see, or None for finance and operations (every one)."""
    principal = current_principal()
    return None if principal.role in GROUP_ROLES else principal.partner_id


def _now() -> datetime:
    return datetime.now(UTC)


class ReconciliationServicer(reconciliation_service_pb2_grpc.ReconciliationServiceServicer):
    def __init__(self, unit_of_work: Callable[..., UnitOfWork]) -> None:
        self._unit_of_work = unit_of_work

    def SubmitPartnerReport(
        self, request_iterator: Iterator[messages.SubmitPartnerReportRequest], context: Any
    ) -> messages.SubmitPartnerReportResponse:
        first = next(request_iterator, None)
        submission = _submission(first)
        with scheduled_job(self._unit_of_work, f"reconcile:{submission.partner_id}", _now) as job:
            result = submit_report(
                self._unit_of_work(),
                submission,
                _content(request_iterator),
                _now(),
                Deadline(jobs.JOB_RUNTIME_SECONDS_MAX),
                lambda phase, rows_read, bytes_read: None,
            )
            job.status = "flagged" if result.run.exceptions_total else "succeeded"
            job.detail = f"run {result.run.run_id}: {result.run.exceptions_total} exception(s)"
        return messages.SubmitPartnerReportResponse(
            run=_run_message(result.run), replayed=result.replayed
        )

    def GetReconciliationRun(
        self, request: messages.GetReconciliationRunRequest, context: grpc.ServicerContext
    ) -> messages.GetReconciliationRunResponse:
        parser = RequestParser()
        run_id = parser.identifier(request.run_id, "run_id")
        parser.done()
        run = runs.get_run(self._unit_of_work(read_only=True), run_id, _partner_scope())
        return messages.GetReconciliationRunResponse(run=_run_message(run))

    def ListReconciliationExceptions(
        self,
        request: messages.ListReconciliationExceptionsRequest,
        context: grpc.ServicerContext,
    ) -> messages.ListReconciliationExceptionsResponse:
        parser = RequestParser()
        run_id = parser.identifier(request.run_id, "run_id")
        page_size = parser.page_size(request.page_size)
        kind = _kind(parser, request.kind)
        query = {
            "caller": current_principal().principal_id,
            "page_size": page_size,
            "run_id": run_id,
            "kind": kind,
            "open_only": request.open_only,
        }
        after = parser.page_token(request.page_token, query)
        if after is not None and not isinstance(after, int):
            parser.fault("page_token", "not a token from a previous page of this same query")
        parser.done()
        records = runs.list_exceptions(
            self._unit_of_work(read_only=True),
            run_id,
            _partner_scope(),
            kind=kind,
            open_only=request.open_only,
            after_exception_id=after or 0,
            page_size=page_size,
        )
        next_token = (
            page_token_for(records[-1].exception_id, query) if len(records) == page_size else ""
        )
        return messages.ListReconciliationExceptionsResponse(
            exceptions=[_exception_message(record) for record in records],
            next_page_token=next_token,
        )

    def ResolveReconciliationException(
        self,
        request: messages.ResolveReconciliationExceptionRequest,
        context: grpc.ServicerContext,
    ) -> messages.ResolveReconciliationExceptionResponse:
        parser = RequestParser()
        exception_id = parser.transaction_id(request.exception_id, "exception_id")
        if not request.note.strip():
            parser.fault("note", "required: why the exception is resolved")
        parser.text(request.note, "note", RESOLUTION_NOTE_LENGTH_MAX)
        parser.done()
        record = runs.resolve_exception(
            self._unit_of_work(),
            exception_id,
            request.note,
            current_principal().principal_id,
            _now(),
        )
        return messages.ResolveReconciliationExceptionResponse(exception=_exception_message(record))


def _submission(first: messages.SubmitPartnerReportRequest | None) -> ReportSubmission:
    parser = RequestParser()
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidArgument([FieldViolation("header", "the first message must be the header")])
    header = first.header
    principal = current_principal()
    partner_id = parser.identifier(header.partner_id, "header.partner_id", required=False)
    if principal.role in GROUP_ROLES and not partner_id:
        parser.fault("header.partner_id", f"required: {principal.role} names the partner")
    report_format = parser.choice(header.format, FORMATS, "header.format")
    window_start = parser.timestamp(header, "window_start")
    window_end = parser.timestamp(header, "window_end")
    parser.done()
    if principal.role not in GROUP_ROLES:
        assert principal.partner_id is not None, "partner keys belong to a partner"
        if partner_id and partner_id != principal.partner_id:
            raise NotFound(
                "PARTNER_NOT_FOUND",
                f"partner {partner_id!r} does not exist",
                {"partner_id": partner_id},
            )
        partner_id = principal.partner_id
    assert report_format is not None
    return ReportSubmission(
        partner_id=partner_id,
        report_format=report_format,
        window_start=window_start,
        window_end=window_end,
        principal_id=principal.principal_id,
    )


def _content(request_iterator: Iterator[messages.SubmitPartnerReportRequest]) -> Iterator[bytes]:
    for message_number, message in enumerate(request_iterator, start=2):
        if message.WhichOneof("part") != "content":
            raise InvalidArgument(
                [FieldViolation(f"message[{message_number}]", "only the first is a header")]
            )
        if len(message.content) > CONTENT_CHUNK_BYTES_MAX:
            raise InvalidArgument(
                [FieldViolation(f"message[{message_number}].content", "at most 1 MiB a message")]
            )
        yield message.content


def _kind(parser: RequestParser, kind: int) -> str | None:
    # UNSPECIFIED: every kind.
    return parser.choice(kind, KINDS, "kind", required=False)


def _run_message(run: RunSummary) -> messages.ReconciliationRun:
    message = messages.ReconciliationRun(
        run_id=run.run_id,
        partner_id=run.partner_id,
        content_sha256=run.content_sha256,
        format=FORMAT_MESSAGES[run.report_format],
        report_rows=run.report_rows,
        hub_operations=run.hub_operations,
        matched=run.matched,
        mismatched=run.mismatched,
        missing_in_hub=run.missing_in_hub,
        missing_in_partner=run.missing_in_partner,
        duplicated=run.duplicated,
        exceptions_open=run.exceptions_open,
        create_time=responses.timestamp(run.create_time),
    )
    if run.match_window_start is not None and run.match_window_end is not None:
        message.match_window_start.CopyFrom(responses.timestamp(run.match_window_start))
        message.match_window_end.CopyFrom(responses.timestamp(run.match_window_end))
    return message


def _exception_message(record: ExceptionRecord) -> messages.ReconciliationException:
    message = messages.ReconciliationException(
        exception_id=str(record.exception_id),
        run_id=record.run_id,
        kind=KIND_MESSAGES[record.kind],
        request_id=record.request_id,
        line_number=record.line_number or 0,
        report_occurrences=record.report_occurrences or 0,
        transaction_id=str(record.transaction_id or ""),
        differences=[
            messages.FieldDifference(
                field=difference.field,
                report_value=difference.report_value,
                hub_value=difference.hub_value,
            )
            for difference in record.differences
        ],
        resolved_by=record.resolved_by or "",
        resolution_note=record.resolution_note or "",
    )
    if record.resolve_time is not None:
        message.resolve_time.CopyFrom(responses.timestamp(record.resolve_time))
    return message

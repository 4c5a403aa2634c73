"""Stored reconciliation runs and their exceptions: read, page, resolve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, func, select, update

from coalition.domain.errors import FailedPrecondition, NotFound
from coalition.store.schema import reconciliation_exceptions, reconciliation_runs
from coalition.store.unit_of_work import UnitOfWork

# Rows fetched per round trip when an export streams every exception of a run.
EXPORT_FETCH_ROWS = 2_000
# (field name, report column, hub column) in the order differences are reported.
COMPARED_FIELDS = (
    ("type", "report_type", "hub_kind"),
    ("points", "report_points", "hub_points"),
    ("occurred_at", "report_occurred_at", "hub_occurred_at"),
    ("partner_reference", "report_partner_reference", "hub_partner_reference"),
    ("member", "report_member", "hub_member_id"),
    ("amount_minor", "report_amount_minor", "hub_amount_minor"),
    ("currency", "report_currency", "hub_currency"),
)


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    partner_id: str
    content_sha256: str
    report_format: str
    window_start: datetime | None
    window_end: datetime | None
    match_window_start: datetime | None
    match_window_end: datetime | None
    report_rows: int
    hub_operations: int
    matched: int
    mismatched: int
    missing_in_hub: int
    missing_in_partner: int
    duplicated: int
    principal_id: str
    create_time: datetime
    exceptions_open: int

    @property
    def exceptions_total(self) -> int:
        return self.mismatched + self.missing_in_hub + self.missing_in_partner + self.duplicated


@dataclass(frozen=True)
class FieldDifference:
    field: str
    report_value: str
    hub_value: str


@dataclass(frozen=True)
class ExceptionRecord:
    exception_id: int
    run_id: str
    kind: str
    request_id: str
    line_number: int | None
    report_occurrences: int | None
    transaction_id: int | None
    differences: tuple[FieldDifference, ...]
    resolve_time: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    values: dict[str, Any]  # every report_* and hub_* column, for exports


def find_run(uow: UnitOfWork, run_id: str) -> RunSummary | None:
    row = uow.connection.execute(
        select(reconciliation_runs).where(reconciliation_runs.c.run_id == run_id)
    ).one_or_none()
    if row is None:
        return None
    exceptions_open = uow.connection.execute(
        select(func.count())
        .select_from(reconciliation_exceptions)
        .where(
            reconciliation_exceptions.c.run_id == run_id,
            reconciliation_exceptions.c.resolve_time.is_(None),
        )
    ).scalar_one()
    return RunSummary(**row._mapping, exceptions_open=exceptions_open)


def get_run(uow: UnitOfWork, run_id: str, partner_scope: str | None) -> RunSummary:
    """The run; a partner (`partner_scope`) sees only its own, others look absent."""
    with uow:
        run = find_run(uow, run_id)
    if run is None or (partner_scope is not None and run.partner_id != partner_scope):
        raise NotFound(
            "RUN_NOT_FOUND", f"reconciliation run {run_id!r} does not exist", {"run_id": run_id}
        )
    return run


def list_exceptions(
    uow: UnitOfWork,
    run_id: str,
    partner_scope: str | None,
    *,
    kind: str | None,
    open_only: bool,
    after_exception_id: int,
    page_size: int,
) -> list[ExceptionRecord]:
    """One page of a run's exceptions, in id order, after `after_exception_id`."""
    get_run(uow, run_id, partner_scope)
    exception = reconciliation_exceptions.c
    statement = (
        select(reconciliation_exceptions)
        .where(exception.run_id == run_id, exception.exception_id > after_exception_id)
        .order_by(exception.exception_id)
        .limit(page_size)
    )
    if kind is not None:
        statement = statement.where(exception.kind == kind)
    if open_only:
        statement = statement.where(exception.resolve_time.is_(None))
    with uow:
        return [exception_from_row(row) for row in uow.connection.execute(statement)]


def stream_exceptions(uow: UnitOfWork, run_id: str) -> Iterator[ExceptionRecord]:
    """Every exception of a run, fetched in bounded batches (a server-side cursor on
    PostgreSQL), for exports of any size. Use inside `with uow`."""
    statement = (
        select(reconciliation_exceptions)
        .where(reconciliation_exceptions.c.run_id == run_id)
        .order_by(reconciliation_exceptions.c.exception_id)
    )
    result = uow.connection.execution_options(yield_per=EXPORT_FETCH_ROWS).execute(statement)
    for row in result:
        yield exception_from_row(row)


def resolve_exception(
    uow: UnitOfWork,
    exception_id: int,
    note: str,
    principal_id: str,
    now: datetime,
) -> ExceptionRecord:
    """Mark resolved. Again with the same note: unchanged (a safe retry); another: refused."""
    exception = reconciliation_exceptions.c
    with uow:
        row = uow.connection.execute(
            select(reconciliation_exceptions)
            .where(exception.exception_id == exception_id)
            .with_for_update()
        ).one_or_none()
        if row is None:
            raise NotFound(
                "EXCEPTION_NOT_FOUND",
                f"reconciliation exception {exception_id} does not exist",
                {"exception_id": exception_id},
            )
        if row.resolve_time is not None:
            if row.resolution_note == note:
                return exception_from_row(row)
            raise FailedPrecondition(
                "EXCEPTION_ALREADY_RESOLVED",
                f"exception {exception_id} was resolved at {row.resolve_time.isoformat()} "
                f"by {row.resolved_by}",
                {
                    "exception_id": exception_id,
                    "resolve_time": row.resolve_time.isoformat(),
                    "resolved_by": row.resolved_by,
                },
            )
        uow.connection.execute(
            update(reconciliation_exceptions)
            .where(exception.exception_id == exception_id, exception.resolve_time.is_(None))
            .values(resolve_time=now, resolved_by=principal_id, resolution_note=note)
        )
        resolved = uow.connection.execute(
            select(reconciliation_exceptions).where(exception.exception_id == exception_id)
        ).one()
        uow.commit()
    return exception_from_row(resolved)


def exception_from_row(row: Row[Any]) -> ExceptionRecord:
    values = dict(row._mapping)
    differing = (values["differing_fields"] or "").split(",")
    differences = tuple(
        FieldDifference(field, value_text(values[report]), value_text(values[hub]))
        for field, report, hub in COMPARED_FIELDS
        if field in differing
    )
    return ExceptionRecord(
        exception_id=values["exception_id"],
        run_id=values["run_id"],
        kind=values["kind"],
        request_id=values["request_id"],
        line_number=values["line_number"],
        report_occurrences=values["report_occurrences"],
        transaction_id=values["transaction_id"],
        differences=differences,
        resolve_time=values["resolve_time"],
        resolved_by=values["resolved_by"],
        resolution_note=values["resolution_note"],
        values={k: v for k, v in values.items() if k.startswith(("report_", "hub_"))},
    )


def value_text(value: Any) -> str:
    """A compared value as text: RFC 3339 UTC for instants, empty when absent."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return rfc3339(value)
    return str(value)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

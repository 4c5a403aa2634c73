"""Matching a partner report against the ledger, set-based, in one database transaction.

The report is streamed into a staging table; each exception kind is then one
INSERT ... SELECT over the staging table and the journal. Python only counts. Either the run
and all of its exceptions are stored, or (malformed report, failure, timeout) nothing is.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Table,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import aliased

from coalition.domain.errors import FieldViolation, InvalidArgument, Unavailable
from coalition.partners.catalog import get_partner
from coalition.reconciliation import staging as staging_module
from coalition.reconciliation.report import (
    HashingReader,
    ReportFormatError,
    ReportRow,
    RowFault,
    parse_report,
)
from coalition.reconciliation.runs import RunSummary, find_run
from coalition.store import citus
from coalition.store.schema import (
    journal_transactions,
    members,
    partner_links,
    reconciliation_exceptions,
    reconciliation_runs,
)
from coalition.store.unit_of_work import UnitOfWork

# The report type each reconciled ledger kind answers to. Other kinds (expire, merge: the
# hub's own; hold, void: provisional) are not partner operations and never "missing in
# partner"; a report row naming one of their request ids is a type mismatch.
REPORT_TYPE_OF_KIND = {"earn": "earn", "burn": "burn", "reverse": "reverse", "capture": "burn"}
# The first malformed lines reported back; the count covers all of them.
FAULTS_REPORTED_MAX = 20
RUN_ID_PREFIX = "rr_"


@dataclass(frozen=True)
class ReportSubmission:
    partner_id: str
    report_format: str  # csv or jsonl
    window_start: datetime | None
    window_end: datetime | None
    principal_id: str


@dataclass(frozen=True)
class SubmissionResult:
    run: RunSummary
    replayed: bool


class ReportMalformed(InvalidArgument):
    """The report has bad rows: nothing was stored. Names the first lines and their reasons."""

    def __init__(self, faults: list[RowFault], faults_total: int) -> None:
        violations = [
            FieldViolation(f"line[{fault.line_number}].{fault.field}", fault.reason)
            for fault in faults
        ]
        super().__init__(violations, reason="REPORT_MALFORMED")
        first = faults[0]
        self.message = (
            f"the report has {faults_total} malformed row(s), nothing was applied; "
            f"first at line {first.line_number}: {first.field}: {first.reason}"
        )
        self.metadata = {
            "malformed_rows": str(faults_total),
            "first_line_number": str(first.line_number),
            "first_field": first.field,
            "first_reason": first.reason,
        }
        self.args = (self.message,)


class JobTimedOut(Unavailable):
    def __init__(self, runtime_seconds_max: float) -> None:
        super().__init__(
            "JOB_TIMED_OUT",
            f"the job ran longer than {runtime_seconds_max:.0f} s and was rolled back",
            {"runtime_seconds_max": f"{runtime_seconds_max:.0f}"},
        )


@dataclass
class Deadline:
    """A monotonic deadline, checked between batches and set as the SQL statement timeout."""

    runtime_seconds_max: float
    started_monotonic: float = 0.0

    def __post_init__(self) -> None:
        self.started_monotonic = time.monotonic()

    @property
    def seconds_left(self) -> float:
        return self.runtime_seconds_max - (time.monotonic() - self.started_monotonic)

    def check(self) -> None:
        if self.seconds_left <= 0:
            raise JobTimedOut(self.runtime_seconds_max)


ProgressCallback = Callable[[str, int, int], None]  # phase, rows read, bytes read


def check_window(window_start: datetime | None, window_end: datetime | None) -> None:
    if (window_start is None) != (window_end is None):
        field = "window_end" if window_end is None else "window_start"
        raise InvalidArgument([FieldViolation(field, "set both window ends or neither")])
    if window_start is not None and window_end is not None and window_start >= window_end:
        raise InvalidArgument([FieldViolation("window_end", "must be after window_start")])


def run_id_for(submission: ReportSubmission, content_sha256: str) -> str:
    """The run's identity: the same partner, bytes and requested window give the same run."""
    parts = (
        submission.partner_id,
        content_sha256,
        _instant_text(submission.window_start),
        _instant_text(submission.window_end),
    )
    return RUN_ID_PREFIX + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def submit_report(
    uow: UnitOfWork,
    submission: ReportSubmission,
    chunks: Iterable[bytes],
    now: datetime,
    deadline: Deadline,
    progress: ProgressCallback,
) -> SubmissionResult:
    """Reconcile one report; a resubmission of the same report returns the stored run."""
    check_window(submission.window_start, submission.window_end)
    with uow:
        _bound_transaction(uow, deadline)
        if uow.is_citus:
            citus.one_connection_per_node(uow.connection)
        get_partner(uow, submission.partner_id)
        reader = HashingReader(chunks)
        with staging_module.staging_table(uow) as staging:
            report_rows = _stage(uow, reader, submission.report_format, deadline, progress)
            run_id = run_id_for(submission, reader.content_sha256)
            existing = find_run(uow, run_id)
            if existing is not None:
                return SubmissionResult(existing, replayed=True)
            progress("matching", report_rows, reader.bytes_read)
            _insert_run(uow, run_id, submission, reader.content_sha256, report_rows, now)
            _classify(uow, staging, run_id, submission)
        uow.commit()
    with uow:
        run = find_run(uow, run_id)
    assert run is not None, "a committed run can be read back"
    return SubmissionResult(run, replayed=False)


def _bound_transaction(uow: UnitOfWork, deadline: Deadline) -> None:
    if uow.dialect_name != "postgresql":
        return  # SQLite has no statement timeout; the deadline is checked between batches
    # One snapshot for every classifying query, so counts add up even while partners write.
    uow.connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    timeout_ms = max(int(deadline.seconds_left * 1000), 1)
    uow.connection.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))


def _stage(
    uow: UnitOfWork,
    reader: HashingReader,
    report_format: str,
    deadline: Deadline,
    progress: ProgressCallback,
) -> int:
    faults: list[RowFault] = []
    faults_total = 0

    def valid_rows() -> Iterator[ReportRow]:
        nonlocal faults_total
        try:
            for parsed in parse_report(reader, report_format):
                if isinstance(parsed, RowFault):
                    faults_total += 1
                    if len(faults) < FAULTS_REPORTED_MAX:
                        faults.append(parsed)
                elif not faults_total:
                    yield parsed  # after a fault the run is void: parse on, load no more
        except ReportFormatError as error:
            faults_total += 1
            faults.append(error.fault)

    def on_batch(rows_loaded: int) -> None:
        deadline.check()
        progress("loading", rows_loaded, reader.bytes_read)

    rows_loaded = staging_module.load_rows(uow, valid_rows(), on_batch)
    if faults:
        raise ReportMalformed(faults, faults_total)
    return rows_loaded


def _insert_run(
    uow: UnitOfWork,
    run_id: str,
    submission: ReportSubmission,
    content_sha256: str,
    report_rows: int,
    now: datetime,
) -> None:
    match_window_start, match_window_end = _match_window(uow, submission)
    counts = dict.fromkeys(
        ("hub_operations", "matched", "mismatched", "missing_in_hub", "missing_in_partner"), 0
    )
    uow.connection.execute(
        insert(reconciliation_runs).values(
            run_id=run_id,
            partner_id=submission.partner_id,
            content_sha256=content_sha256,
            report_format=submission.report_format,
            window_start=submission.window_start,
            window_end=submission.window_end,
            match_window_start=match_window_start,
            match_window_end=match_window_end,
            report_rows=report_rows,
            duplicated=0,
            principal_id=submission.principal_id,
            create_time=now,
            **counts,
        )
    )


def _match_window(
    uow: UnitOfWork, submission: ReportSubmission
) -> tuple[datetime | None, datetime | None]:
    """The requested window, or else the report's own span, whole seconds, half-open."""
    if submission.window_start is not None:
        return submission.window_start, submission.window_end
    staging = staging_module.staging
    first, last = uow.connection.execute(
        select(func.min(staging.c.occurred_at), func.max(staging.c.occurred_at))
    ).one()
    if first is None:
        return None, None
    return first.replace(microsecond=0), last.replace(microsecond=0) + timedelta(seconds=1)


def _classify(uow: UnitOfWork, staging: Table, run_id: str, submission: ReportSubmission) -> None:
    partner_id = submission.partner_id
    duplicated = _insert_and_count(uow, _duplicated(staging, run_id), run_id, "duplicated")
    # From here on only the first line of each request id takes part in matching.
    earlier = aliased(staging)
    uow.connection.execute(
        delete(staging).where(
            exists().where(
                earlier.c.request_id == staging.c.request_id,
                earlier.c.line_number < staging.c.line_number,
            )
        )
    )
    first_lines = uow.connection.execute(select(func.count()).select_from(staging)).scalar_one()
    hub = _Hub.of(uow, staging, partner_id)
    missing_in_hub = _insert_and_count(
        uow, _missing_in_hub(staging, run_id, partner_id, hub), run_id, "missing_in_hub"
    )
    mismatched = _insert_and_count(
        uow, _mismatched(uow, staging, run_id, partner_id, hub), run_id, "mismatched"
    )
    run = uow.connection.execute(
        select(reconciliation_runs).where(reconciliation_runs.c.run_id == run_id)
    ).one()
    in_window = _hub_operations_in_window(partner_id, run.match_window_start, run.match_window_end)
    missing_in_partner = _insert_and_count(
        uow,
        _missing_in_partner(staging, run_id, in_window, uow.is_citus),
        run_id,
        "missing_in_partner",
    )
    hub_operations = uow.connection.execute(
        select(func.count()).select_from(journal_transactions).where(*in_window)
    ).scalar_one()
    uow.connection.execute(
        update(reconciliation_runs)
        .where(reconciliation_runs.c.run_id == run_id)
        .values(
            hub_operations=hub_operations,
            matched=first_lines - missing_in_hub - mismatched,
            mismatched=mismatched,
            missing_in_hub=missing_in_hub,
            missing_in_partner=missing_in_partner,
            duplicated=duplicated,
        )
    )


def _insert_and_count(uow: UnitOfWork, statement: Any, run_id: str, kind: str) -> int:
    # Counted by the database after the insert: psycopg does not report the row count of an
    # INSERT ... SELECT through SQLAlchemy here, and a count is never guessed.
    uow.connection.execute(statement)
    exception = reconciliation_exceptions.c
    count = uow.connection.execute(
        select(func.count())
        .select_from(reconciliation_exceptions)
        .where(exception.run_id == run_id, exception.kind == kind)
    ).scalar_one()
    return int(count)


_REPORT_COLUMNS = (
    "report_type",
    "report_points",
    "report_occurred_at",
    "report_partner_reference",
    "report_member",
    "report_amount_minor",
    "report_currency",
)
_HUB_COLUMNS = (
    "transaction_id",
    "hub_kind",
    "hub_points",
    "hub_occurred_at",
    "hub_partner_reference",
    "hub_member_id",
    "hub_amount_minor",
    "hub_currency",
)


def _report_values(staging: Table) -> tuple[ColumnElement[Any], ...]:
    s = staging.c
    return (
        s.type,
        s.points,
        s.occurred_at,
        s.partner_reference,
        s.member,
        s.amount_minor,
        s.currency,
    )


def _hub_values(journal: FromClause = journal_transactions) -> tuple[ColumnElement[Any], ...]:
    j = journal.c
    return (
        j.transaction_id,
        j.kind,
        func.abs(j.points_delta),
        j.occurred_at,
        j.partner_reference,
        j.member_id,
        j.amount_minor,
        j.currency,
    )


def _exceptions_insert(columns: tuple[str, ...], query: Select[Any]) -> Any:
    return insert(reconciliation_exceptions).from_select(
        ["run_id", "kind", "request_id", "line_number", *columns], query
    )


def _duplicated(staging: Table, run_id: str) -> Any:
    repeats = (
        select(
            staging.c.request_id,
            func.min(staging.c.line_number).label("line_number"),
            func.count().label("occurrences"),
        )
        .group_by(staging.c.request_id)
        .having(func.count() > 1)
        .subquery()
    )
    query = select(
        literal(run_id),
        literal("duplicated"),
        staging.c.request_id,
        staging.c.line_number,
        repeats.c.occurrences,
        *_report_values(staging),
    ).join(
        repeats,
        and_(
            repeats.c.request_id == staging.c.request_id,
            repeats.c.line_number == staging.c.line_number,
        ),
    )
    return _exceptions_insert(("report_occurrences", *_REPORT_COLUMNS), query)


@dataclass(frozen=True)
class _Hub:
    """Where matching reads the hub's side: the journal, the partner's links and members.

    On Citus the staged report (a temporary table on the coordinator) cannot join the
    distributed tables, so the rows it can match are read first into intermediate results:
    the partner's journal rows whose request ids the report names, the links of the customer
    ids it names, and those transactions' members (docs/scaling.md states the cost)."""

    journal: FromClause
    links: FromClause
    members: FromClause

    @staticmethod
    def of(uow: UnitOfWork, staging: Table, partner_id: str) -> _Hub:
        link, member = aliased(partner_links), aliased(members)
        if not uow.is_citus:
            return _Hub(journal_transactions, link, member)
        j = journal_transactions.c
        journal = (
            select(journal_transactions)
            .where(j.partner_id == partner_id, j.request_id.in_(select(staging.c.request_id)))
            .cte("hub_journal")
            .prefix_with("MATERIALIZED")
        )
        links = (
            select(partner_links)
            .where(
                partner_links.c.partner_id == partner_id,
                partner_links.c.partner_customer_id.in_(select(staging.c.member)),
            )
            .cte("hub_links")
            .prefix_with("MATERIALIZED")
        )
        hub_members = (
            select(members.c.member_id, members.c.merged_into_member_id)
            .where(members.c.member_id.in_(select(journal.c.member_id)))
            .cte("hub_members")
            .prefix_with("MATERIALIZED")
        )
        return _Hub(journal, links, hub_members)


def _journal_of(partner_id: str, staging: Table, journal: FromClause) -> ColumnElement[bool]:
    return and_(
        journal.c.partner_id == partner_id,
        journal.c.request_id == staging.c.request_id,
    )


def _missing_in_hub(staging: Table, run_id: str, partner_id: str, hub: _Hub) -> Any:
    query = select(
        literal(run_id),
        literal("missing_in_hub"),
        staging.c.request_id,
        staging.c.line_number,
        *_report_values(staging),
    ).where(~exists().where(_journal_of(partner_id, staging, hub.journal)))
    return _exceptions_insert(_REPORT_COLUMNS, query)


def _mismatched(uow: UnitOfWork, staging: Table, run_id: str, partner_id: str, hub: _Hub) -> Any:
    s, j = staging.c, hub.journal.c
    link = hub.links
    hub_member = hub.members
    differing = func.rtrim(
        _differs("type", s.type != _report_type_of(j.kind))
        + _differs("points", s.points != func.abs(j.points_delta))
        + _differs(
            "occurred_at",
            s.occurred_at_second != staging_module.epoch_second_of(j.occurred_at, uow.dialect_name),
        )
        + _differs("partner_reference", _optional_differs(s.partner_reference, j.partner_reference))
        + _differs("member", _member_differs(s.member, link.c.member_id, j.member_id, hub_member))
        + _differs("amount_minor", _optional_differs(s.amount_minor, j.amount_minor))
        + _differs("currency", _optional_differs(s.currency, j.currency)),
        ",",
    ).label("differing_fields")
    compared = (
        select(
            literal(run_id).label("run_id"),
            literal("mismatched").label("kind"),
            s.request_id,
            s.line_number,
            differing,
            *(
                value.label(name)
                for name, value in zip(_REPORT_COLUMNS, _report_values(staging), strict=True)
            ),
            *(
                value.label(name)
                for name, value in zip(_HUB_COLUMNS, _hub_values(hub.journal), strict=True)
            ),
        )
        .join(hub.journal, _journal_of(partner_id, staging, hub.journal))
        .outerjoin(
            link, and_(link.c.partner_id == partner_id, link.c.partner_customer_id == s.member)
        )
        .outerjoin(hub_member, hub_member.c.member_id == j.member_id)
        .subquery()
    )
    columns = ("differing_fields", *_REPORT_COLUMNS, *_HUB_COLUMNS)
    query = select(
        compared.c.run_id,
        compared.c.kind,
        compared.c.request_id,
        compared.c.line_number,
        *(compared.c[name] for name in columns),
    ).where(compared.c.differing_fields != "")
    return _exceptions_insert(columns, query)


def _report_type_of(kind: ColumnElement[str]) -> ColumnElement[str]:
    return case(*((kind == k, literal(t)) for k, t in REPORT_TYPE_OF_KIND.items()), else_=kind)


def _differs(field: str, condition: ColumnElement[bool]) -> ColumnElement[str]:
    return case((condition, literal(f"{field},")), else_=literal(""))


def _optional_differs(reported: ColumnElement[Any], hub: ColumnElement[Any]) -> ColumnElement[bool]:
    """An optional report field differs only when given: then the hub must hold the same."""
    return and_(reported.is_not(None), or_(hub.is_(None), reported != hub))


def _member_differs(
    reported: ColumnElement[Any],
    linked_member_id: ColumnElement[Any],
    member_id: ColumnElement[Any],
    hub_member: Any,
) -> ColumnElement[bool]:
    # The partner's customer id must resolve (through its link) to the transaction's member,
    # or to the member it was merged into since.
    resolves_elsewhere = and_(
        linked_member_id != member_id,
        or_(
            hub_member.c.merged_into_member_id.is_(None),
            hub_member.c.merged_into_member_id != linked_member_id,
        ),
    )
    return and_(reported.is_not(None), or_(linked_member_id.is_(None), resolves_elsewhere))


def _hub_operations_in_window(
    partner_id: str, window_start: datetime | None, window_end: datetime | None
) -> tuple[ColumnElement[bool], ...]:
    j = journal_transactions.c
    if window_start is None or window_end is None:
        return (false(),)  # an empty report without a window expects nothing
    return (
        j.partner_id == partner_id,
        j.kind.in_(tuple(REPORT_TYPE_OF_KIND)),
        j.occurred_at >= window_start,
        j.occurred_at < window_end,
    )


def _missing_in_partner(
    staging: Table, run_id: str, in_window: tuple[ColumnElement[bool], ...], on_citus: bool
) -> Any:
    j = journal_transactions.c
    reported: ColumnElement[bool] = exists().where(staging.c.request_id == j.request_id)
    if on_citus:
        # The report's request ids, read once and sent to every shard (docs/scaling.md).
        reported = j.request_id.in_(select(staging.c.request_id))
    query = select(
        literal(run_id),
        literal("missing_in_partner"),
        j.request_id,
        null(),
        *_hub_values(),
    ).where(*in_window, ~reported)
    return _exceptions_insert(_HUB_COLUMNS, query)


def _instant_text(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat()

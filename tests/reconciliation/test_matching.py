"""Matching partner reports against the ledger, on real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from coalition.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from coalition.reconciliation import runs
from coalition.reconciliation.matching import (
    Deadline,
    ReportMalformed,
    ReportSubmission,
    SubmissionResult,
    submit_report,
)
from coalition.store.schema import reconciliation_exceptions, reconciliation_runs
from coalition.store.unit_of_work import UnitOfWork
from tests.reconciliation.conftest import (
    ENCODERS,
    PARTNER_ID,
    Ledger,
    as_csv,
    chunked,
    planted_report,
)

pytestmark = pytest.mark.integration


def submit(
    engine: Engine,
    content: bytes,
    report_format: str = "csv",
    window: tuple[datetime | None, datetime | None] = (None, None),
    partner_id: str = PARTNER_ID,
) -> SubmissionResult:
    submission = ReportSubmission(partner_id, report_format, window[0], window[1], "tester")
    return submit_report(
        UnitOfWork(engine),
        submission,
        chunked(content),
        datetime.now(UTC),
        Deadline(600),
        lambda phase, rows_read, bytes_read: None,
    )


def all_exceptions(engine: Engine, run_id: str) -> list[runs.ExceptionRecord]:
    uow = UnitOfWork(engine, read_only=True)
    with uow:
        return list(runs.stream_exceptions(uow, run_id))


def stored_rows(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        return (
            connection.execute(select(func.count()).select_from(reconciliation_runs)).scalar_one(),
            connection.execute(
                select(func.count()).select_from(reconciliation_exceptions)
            ).scalar_one(),
        )


@pytest.mark.parametrize("report_format", ["csv", "jsonl"])
def test_every_planted_exception_is_found_exactly_once(ledger: Ledger, report_format: str) -> None:
    planted = planted_report(ledger)
    content = ENCODERS[report_format](planted.rows)
    result = submit(ledger.engine, content, report_format, (ledger.window_start, ledger.window_end))

    run = result.run
    assert not result.replayed
    assert (run.report_rows, run.hub_operations) == (len(planted.rows), 6)
    assert (run.matched, run.mismatched, run.missing_in_hub) == (4, 1, 1)
    assert (run.missing_in_partner, run.duplicated, run.exceptions_open) == (1, 1, 4)
    found = {(e.kind, e.request_id): e for e in all_exceptions(ledger.engine, run.run_id)}
    assert set(found) == {
        ("missing_in_hub", planted.ghost_request_id),
        ("missing_in_partner", planted.missing_request_id),
        ("mismatched", planted.mismatched_request_id),
        ("duplicated", planted.duplicated_request_id),
    }
    mismatch = found[("mismatched", planted.mismatched_request_id)]
    assert {d.field: d.report_value for d in mismatch.differences} == (
        planted.mismatched_report_values
    )
    hub = {d.field: d.hub_value for d in mismatch.differences}
    assert hub["partner_reference"] == "receipt-earn_d"
    assert int(hub["points"]) == int(planted.mismatched_report_values["points"]) - 1
    assert mismatch.transaction_id is not None
    duplicate = found[("duplicated", planted.duplicated_request_id)]
    assert duplicate.report_occurrences == 2 and duplicate.line_number is not None
    assert found[("missing_in_partner", planted.missing_request_id)].line_number is None


def test_a_clean_report_has_no_exceptions_and_default_window_is_its_span(
    ledger: Ledger,
) -> None:
    rows = ledger.report_rows()
    result = submit(ledger.engine, as_csv(rows))
    run = result.run
    assert (run.report_rows, run.matched, run.exceptions_total) == (6, 6, 0)
    assert run.match_window_start == ledger.window_start + timedelta(hours=1)
    assert run.match_window_end is not None and run.match_window_end > run.match_window_start


def test_operations_outside_the_window_are_not_missing_in_partner(ledger: Ledger) -> None:
    # Only the first earn is reported; the window covers just its hour.
    first = ledger.report_rows()[0]
    window = (
        ledger.window_start + timedelta(minutes=30),
        ledger.window_start + timedelta(hours=1, minutes=30),
    )
    run = submit(ledger.engine, as_csv([first]), window=window).run
    assert (run.hub_operations, run.matched, run.exceptions_total) == (1, 1, 0)


def test_a_reported_type_that_differs_is_a_mismatch(ledger: Ledger) -> None:
    rows = ledger.report_rows()
    rows[0]["type"] = "burn"
    run = submit(ledger.engine, as_csv(rows)).run
    (mismatch,) = all_exceptions(ledger.engine, run.run_id)
    assert [(d.field, d.report_value, d.hub_value) for d in mismatch.differences] == [
        ("type", "burn", "earn")
    ]


def test_a_member_that_resolves_elsewhere_is_a_mismatch(ledger: Ledger) -> None:
    rows = ledger.report_rows()
    rows[0]["member"] = rows[1]["member"]  # bob's customer id on alice's earn
    rows[2]["member"] = "never-linked"
    run = submit(ledger.engine, as_csv(rows)).run
    fields = {
        e.request_id: [d.field for d in e.differences]
        for e in all_exceptions(ledger.engine, run.run_id)
    }
    assert fields == {rows[0]["request_id"]: ["member"], rows[2]["request_id"]: ["member"]}


def test_resubmitting_the_same_report_returns_the_same_run(ledger: Ledger) -> None:
    content = as_csv(planted_report(ledger).rows)
    first = submit(ledger.engine, content)
    stored = stored_rows(ledger.engine)
    again = submit(ledger.engine, content)
    assert again.replayed and again.run == first.run
    assert stored_rows(ledger.engine) == stored
    other_window = submit(ledger.engine, content, window=(ledger.window_start, ledger.window_end))
    assert not other_window.replayed and other_window.run.run_id != first.run.run_id


@pytest.mark.parametrize(
    ("content", "line_number", "field"),
    [
        (b"request_id,type,points,occurred_at\nr1,earn,ten,2026-01-01T00:00:00Z\n", 2, "points"),
        (b"request_id,type,points,occurred_at\nr1,earn,10,2026-01-01 00:00:00\n", 2, "occurred_at"),
        (b"request_id,type,points,occurred_at\nr1,expire,10,2026-01-01T00:00:00Z\n", 2, "type"),
        (
            b"request_id,type,points,occurred_at\nr 1,earn,10,2026-01-01T00:00:00Z\n",
            2,
            "request_id",
        ),
        (b"request_id,type,points,occurred_at\nr1,earn,10\n", 2, "row"),
        (b"request_id,type,points\nr1,earn,10\n", 1, "row"),
        (
            b"request_id,type,points,occurred_at,amount_minor\nr1,earn,10,2026-01-01T00:00:00Z,5\n",
            2,
            "currency",
        ),
    ],
)
def test_a_malformed_report_names_the_line_and_stores_nothing(
    ledger: Ledger, content: bytes, line_number: int, field: str
) -> None:
    good = as_csv(ledger.report_rows()[:1]).split(b"\r\n", 1)[1]
    before = stored_rows(ledger.engine)
    with pytest.raises(ReportMalformed) as caught:
        submit(ledger.engine, content + good)
    error = caught.value
    assert error.reason == "REPORT_MALFORMED"
    assert error.metadata["first_line_number"] == str(line_number)
    assert error.field_violations[0].field == f"line[{line_number}].{field}"
    assert stored_rows(ledger.engine) == before


def test_every_malformed_line_is_counted_the_first_ones_named(ledger: Ledger) -> None:
    rows = ledger.report_rows()
    for row in rows[1:4]:
        row["points"] = -1
    with pytest.raises(ReportMalformed) as caught:
        submit(ledger.engine, as_csv(rows))
    assert caught.value.metadata["malformed_rows"] == "3"
    assert [v.field for v in caught.value.field_violations] == [
        "line[3].points",
        "line[4].points",
        "line[5].points",
    ]


def test_bad_windows_and_unknown_partners_are_refused(ledger: Ledger) -> None:
    content = as_csv(ledger.report_rows())
    with pytest.raises(InvalidArgument):
        submit(ledger.engine, content, window=(ledger.window_start, None))
    with pytest.raises(InvalidArgument):
        submit(ledger.engine, content, window=(ledger.window_end, ledger.window_start))
    with pytest.raises(NotFound) as caught:
        submit(ledger.engine, content, partner_id="no-such-partner")
    assert caught.value.reason == "PARTNER_NOT_FOUND"
    assert stored_rows(ledger.engine) == (0, 0)


def test_exceptions_page_filter_and_resolve(ledger: Ledger) -> None:
    run = submit(ledger.engine, as_csv(planted_report(ledger).rows)).run
    engine = ledger.engine
    pages, after = [], 0
    while True:
        page = runs.list_exceptions(
            UnitOfWork(engine),
            run.run_id,
            None,
            kind=None,
            open_only=False,
            after_exception_id=after,
            page_size=3,
        )
        pages.append(page)
        if len(page) < 3:
            break
        after = page[-1].exception_id
    assert [len(page) for page in pages] == [3, 1]
    first = pages[0][0]
    resolved = runs.resolve_exception(
        UnitOfWork(engine), first.exception_id, "booked", "fin", datetime.now(UTC)
    )
    assert resolved.resolution_note == "booked" and resolved.resolve_time is not None
    again = runs.resolve_exception(
        UnitOfWork(engine), first.exception_id, "booked", "fin", datetime.now(UTC)
    )
    assert again.resolve_time == resolved.resolve_time
    with pytest.raises(FailedPrecondition) as caught:
        runs.resolve_exception(
            UnitOfWork(engine), first.exception_id, "other", "fin", datetime.now(UTC)
        )
    assert caught.value.reason == "EXCEPTION_ALREADY_RESOLVED"
    open_ones = runs.list_exceptions(
        UnitOfWork(engine),
        run.run_id,
        None,
        kind=None,
        open_only=True,
        after_exception_id=0,
        page_size=50,
    )
    assert first.exception_id not in {e.exception_id for e in open_ones} and len(open_ones) == 3
    assert runs.get_run(UnitOfWork(engine), run.run_id, None).exceptions_open == 3
    with pytest.raises(NotFound):
        runs.get_run(UnitOfWork(engine), run.run_id, "test-air")


def test_report_text_reaches_the_database_unaltered(ledger: Ledger) -> None:
    # Backslashes are escaped for PostgreSQL's COPY; the value must come back as sent.
    rows = ledger.report_rows()
    rows[0]["partner_reference"] = "till\\7\\N"
    run = submit(ledger.engine, as_csv(rows)).run
    (mismatch,) = all_exceptions(ledger.engine, run.run_id)
    assert [(d.field, d.report_value) for d in mismatch.differences] == [
        ("partner_reference", "till\\7\\N")
    ]

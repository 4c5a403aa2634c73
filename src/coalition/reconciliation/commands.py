"""`coalition reconcile run` and `coalition reconcile integrity`, safe to schedule.

Exit codes (docs/reconciliation.md): 0 clean; 1 exceptions found / a check failed; 2 the job
could not run (malformed report, bad arguments, unknown partner, timeout); 3 integrity proof
incomplete (a check was skipped, none failed); 75 the same job is running elsewhere (EX_TEMPFAIL:
retry later). Parsers: reconciliation/arguments.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from sqlalchemy import Engine

from coalition.domain.errors import CoalitionError, FieldViolation, InvalidArgument
from coalition.reconciliation import integrity, jobs, runs
from coalition.reconciliation.checks import CheckResult
from coalition.reconciliation.export import export_run
from coalition.reconciliation.jobs import JobAlreadyRunning, scheduled_job
from coalition.reconciliation.matching import (
    Deadline,
    ReportSubmission,
    check_window,
    submit_report,
)
from coalition.reconciliation.progress import Progress
from coalition.reconciliation.report import parse_rfc3339
from coalition.reconciliation.runs import RunSummary, rfc3339
from coalition.store import migrate
from coalition.store.unit_of_work import UnitOfWork

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
EXIT_INCOMPLETE = 3
EXIT_ALREADY_RUNNING = 75
FILE_CHUNK_BYTES = 1024 * 1024
CLI_PRINCIPAL_ID = "cli"
FORMAT_OF_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def reconcile_run(
    engine: Engine,
    partner_id: str,
    report_path: Path,
    report_format: str | None,
    window_text: tuple[str | None, str | None],
    output_directory: Path,
    fail_on_exceptions: bool,
) -> int:
    def body() -> int:
        window_start, window_end = _window(*window_text)
        submission = ReportSubmission(
            partner_id=partner_id,
            report_format=report_format or _format_of(report_path),
            window_start=window_start,
            window_end=window_end,
            principal_id=CLI_PRINCIPAL_ID,
        )
        progress = Progress(sys.stderr, f"reconcile {partner_id}", report_path.stat().st_size)
        with scheduled_job(partial(UnitOfWork, engine), f"reconcile:{partner_id}", _now) as job:
            result = submit_report(
                UnitOfWork(engine),
                submission,
                _chunks(report_path),
                _now(),
                Deadline(jobs.JOB_RUNTIME_SECONDS_MAX),
                progress,
            )
            progress.finish()
            run = result.run
            job.status = "flagged" if run.exceptions_total else "succeeded"
            job.detail = f"run {run.run_id}: {run.exceptions_total} exception(s)"
        csv_path, json_path = export_run(UnitOfWork(engine, read_only=True), run, output_directory)
        _print_run(run, result.replayed, csv_path, json_path)
        return EXIT_FINDINGS if run.exceptions_total and fail_on_exceptions else EXIT_CLEAN

    return _guarded(body)


def reconcile_integrity(engine: Engine, window_text: tuple[str | None, str | None]) -> int:
    def body() -> int:
        window_start, window_end = _window(*window_text)
        progress = Progress(sys.stderr, "integrity", None)
        deadline = Deadline(jobs.JOB_RUNTIME_SECONDS_MAX)

        def on_result(result: CheckResult) -> None:
            print(result.line(), flush=True)

        with scheduled_job(partial(UnitOfWork, engine), "integrity", _now) as job:
            report = integrity.prove(
                UnitOfWork(engine, read_only=True),
                window_start,
                window_end,
                on_result,
                before_check=deadline.check,
            )
            progress.finish()
            failed, skipped = len(report.failed), len(report.skipped)
            passed = len(report.results) - failed - skipped
            job.status = "flagged" if failed or skipped else "succeeded"
            job.detail = f"{passed} passed, {failed} failed, {skipped} skipped"
        verdict = "FAILED" if failed else "INCOMPLETE" if skipped else "PROVEN"
        print(
            f"integrity {verdict}: {passed} passed, {failed} failed, {skipped} skipped "
            f"(window {rfc3339(report.window_start)} .. {rfc3339(report.window_end)})"
        )
        return EXIT_FINDINGS if failed else EXIT_INCOMPLETE if skipped else EXIT_CLEAN

    return _guarded(body)


def _guarded(body: Callable[[], int]) -> int:
    try:
        return body()
    except JobAlreadyRunning as error:
        print(f"error: {error.reason}: {error.message}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except CoalitionError as error:
        print(f"error: {error.reason}: {error.message}", file=sys.stderr)
        for violation in error.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def _print_run(run: RunSummary, replayed: bool, csv_path: Path, json_path: Path) -> None:
    window = (
        f"{rfc3339(run.match_window_start)} .. {rfc3339(run.match_window_end)}"
        if run.match_window_start and run.match_window_end
        else "none (empty report)"
    )
    print(f"run {run.run_id}{' (already reconciled: stored run)' if replayed else ''}")
    print(f"partner {run.partner_id}, window {window}")
    print(f"report rows        {run.report_rows}")
    print(f"hub operations     {run.hub_operations}")
    print(f"matched            {run.matched}")
    print(f"mismatched         {run.mismatched}")
    print(f"missing in hub     {run.missing_in_hub}")
    print(f"missing in partner {run.missing_in_partner}")
    print(f"duplicated         {run.duplicated}")
    print(f"exceptions open    {run.exceptions_open} of {run.exceptions_total}")
    print(f"reports            {csv_path} {json_path}")


def _window(
    start_text: str | None, end_text: str | None
) -> tuple[datetime | None, datetime | None]:
    violations = []
    moments: list[datetime | None] = []
    for field, value in (("--from", start_text), ("--to", end_text)):
        moment = None if value is None else parse_rfc3339(value)
        if value is not None and moment is None:
            violations.append(FieldViolation(field, "an RFC 3339 timestamp with an offset"))
        moments.append(moment)
    if violations:
        raise InvalidArgument(violations)
    check_window(moments[0], moments[1])
    return moments[0], moments[1]


def _format_of(path: Path) -> str:
    report_format = FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if report_format is None:
        raise InvalidArgument(
            [FieldViolation("--format", f"cannot tell the format of {path.name}: give --format")]
        )
    return report_format


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(FILE_CHUNK_BYTES):
            yield chunk


def _now() -> datetime:
    return datetime.now(UTC)


def _run_command(engine: Engine, arguments: argparse.Namespace) -> int:
    migrate.prepare(engine)
    return _guarded(
        lambda: reconcile_run(
            engine,
            arguments.partner,
            Path(arguments.file),
            arguments.format,
            window_arguments(arguments),
            Path(arguments.output_dir),
            fail_on_exceptions=not arguments.exit_zero,
        )
    )


def _integrity_command(engine: Engine, arguments: argparse.Namespace) -> int:
    migrate.prepare(engine)
    return _guarded(lambda: reconcile_integrity(engine, window_arguments(arguments)))


def window_arguments(arguments: argparse.Namespace) -> tuple[str | None, str | None]:
    """`--period P` means `--from` P's start `--to` its end; the two forms do not mix."""
    if arguments.period is None:
        return arguments.window_start, arguments.window_end
    if arguments.window_end is not None:
        raise InvalidArgument([FieldViolation("--to", "give --period or --from/--to, not both")])
    return rfc3339(arguments.period.start), rfc3339(arguments.period.end)


def _exceptions_list(engine: Engine, arguments: argparse.Namespace) -> int:
    def body() -> int:
        records = runs.list_exceptions(
            UnitOfWork(engine, read_only=True),
            arguments.run_id,
            None,
            kind=arguments.kind,
            open_only=arguments.open_only,
            after_exception_id=arguments.after,
            page_size=arguments.limit,
        )
        for record in records:
            print(_exception_line(record))
        if len(records) == arguments.limit:
            print(f"more: --after {records[-1].exception_id}", file=sys.stderr)
        return EXIT_CLEAN

    return _guarded(body)


def _exceptions_resolve(engine: Engine, arguments: argparse.Namespace) -> int:
    def body() -> int:
        if not arguments.note.strip():
            raise InvalidArgument([FieldViolation("--note", "required: why it is resolved")])
        record = runs.resolve_exception(
            UnitOfWork(engine), arguments.exception_id, arguments.note, arguments.by, _now()
        )
        print(_exception_line(record))
        return EXIT_CLEAN

    return _guarded(body)


def _exception_line(record: runs.ExceptionRecord) -> str:
    differences = ", ".join(
        f"{d.field}: report {d.report_value} hub {d.hub_value}" for d in record.differences
    )
    state = (
        f"resolved {rfc3339(record.resolve_time)} by {record.resolved_by}: {record.resolution_note}"
        if record.resolve_time is not None
        else "open"
    )
    where = f"line {record.line_number}" if record.line_number is not None else "not in report"
    transaction = f"tx #{record.transaction_id}" if record.transaction_id is not None else "no tx"
    return (
        f"{record.exception_id}  {record.kind:<18} request {record.request_id}  {where}  "
        f"{transaction}  {differences or '-'}  {state}"
    )


RECONCILE_COMMANDS: dict[str, Callable[[Engine, argparse.Namespace], int]] = {
    "reconcile run": _run_command,
    "reconcile integrity": _integrity_command,
    "reconcile exceptions list": _exceptions_list,
    "reconcile exceptions resolve": _exceptions_resolve,
}

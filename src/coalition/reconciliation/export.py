"""Run reports as files: CSV (one row per exception) and JSON (the run and its exceptions).

Both are written while the exceptions stream from the database, so a run with millions of
exceptions is exported in bounded memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from coalition.reconciliation.runs import (
    ExceptionRecord,
    RunSummary,
    stream_exceptions,
    value_text,
)
from coalition.store.schema import reconciliation_exceptions
from coalition.store.unit_of_work import UnitOfWork

VALUE_COLUMNS = tuple(
    column.name
    for column in reconciliation_exceptions.columns
    if column.name.startswith(("report_", "hub_")) and column.name != "report_occurrences"
)
CSV_COLUMNS = (
    "exception_id",
    "kind",
    "request_id",
    "line_number",
    "report_occurrences",
    "transaction_id",
    "differing_fields",
    *VALUE_COLUMNS,
    "resolve_time",
    "resolved_by",
    "resolution_note",
)


def export_run(uow: UnitOfWork, run: RunSummary, directory: Path) -> tuple[Path, Path]:
    """Write `<run_id>.csv` and `<run_id>.json` into `directory`; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / f"{run.run_id}.csv"
    json_path = directory / f"{run.run_id}.json"
    with uow, csv_path.open("w", newline="", encoding="utf-8") as csv_file:
        _write_csv(stream_exceptions(uow, run.run_id), csv_file)
    with uow, json_path.open("w", encoding="utf-8") as json_file:
        _write_json(run, stream_exceptions(uow, run.run_id), json_file)
    return csv_path, json_path


def _row(record: ExceptionRecord) -> dict[str, Any]:
    return {
        "exception_id": record.exception_id,
        "kind": record.kind,
        "request_id": record.request_id,
        "line_number": record.line_number,
        "report_occurrences": record.report_occurrences,
        "transaction_id": record.transaction_id,
        "differing_fields": ",".join(difference.field for difference in record.differences),
        **{name: value_text(record.values.get(name)) for name in VALUE_COLUMNS},
        "resolve_time": value_text(record.resolve_time),
        "resolved_by": record.resolved_by,
        "resolution_note": record.resolution_note,
    }


def _write_csv(records: Iterator[ExceptionRecord], file: TextIO) -> None:
    writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        writer.writerow(_row(record))


def _write_json(run: RunSummary, records: Iterator[ExceptionRecord], file: TextIO) -> None:
    summary = {
        key: value_text(value) if value is None or not isinstance(value, int) else value
        for key, value in asdict(run).items()
    }
    file.write('{"run": ' + json.dumps(summary, sort_keys=True) + ', "exceptions": [')
    for index, record in enumerate(records):
        file.write(",\n" if index else "\n")
        document = {
            **_row(record),
            "differences": [asdict(difference) for difference in record.differences],
        }
        file.write(json.dumps(document, sort_keys=True))
    file.write("\n]}\n")

"""Partner report parsing: CSV (RFC 4180, header row) or JSON Lines, streamed row by row.

Bytes arrive in chunks (a file read, a gRPC stream); rows leave one at a time, each either a
valid `ReportRow` or a `RowFault` naming its line and reason. Nothing here holds more than one
row, so memory does not grow with the report.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coalition.api.requests import REQUEST_ID_PATTERN
from coalition.domain.currency import is_known_currency
from coalition.domain.points import AMOUNT_MINOR_MAX, POINTS_PER_OPERATION_MAX

FORMATS = ("csv", "jsonl")
REPORT_TYPES = ("earn", "burn", "reverse")
REQUIRED_FIELDS = ("request_id", "type", "points", "occurred_at")
OPTIONAL_FIELDS = ("partner_reference", "member", "amount_minor", "currency")
FIELDS = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
TEXT_FIELD_LENGTH_MAX = 128
# A line longer than this is not a report row; bounding it bounds the parser's memory.
LINE_BYTES_MAX = 64 * 1024
REPORT_ROWS_MAX = 50_000_000

# RFC 3339 section 5.6: a full date, "T" (or a space, which the RFC allows), a full time
# with an optional fraction, and a mandatory offset.
RFC3339_PATTERN = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)
INTEGER_PATTERN = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class ReportRow:
    line_number: int
    request_id: str
    type: str
    points: int
    occurred_at: datetime
    partner_reference: str | None
    member: str | None
    amount_minor: int | None
    currency: str | None


@dataclass(frozen=True)
class RowFault:
    line_number: int
    field: str  # the faulty field, or "row" when the row as a whole is unreadable
    reason: str


class ReportFormatError(Exception):
    """The report cannot be read at all (bad header, bad encoding, too large)."""

    def __init__(self, line_number: int, reason: str) -> None:
        super().__init__(f"line {line_number}: {reason}")
        self.fault = RowFault(line_number, "row", reason)


class HashingReader:
    """Passes chunks through while hashing them and counting their bytes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._sha256 = hashlib.sha256()
        self.bytes_read = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._sha256.update(chunk)
            self.bytes_read += len(chunk)
            yield chunk

    @property
    def content_sha256(self) -> str:
        return self._sha256.hexdigest()


def parse_report(chunks: Iterable[bytes], report_format: str) -> Iterator[ReportRow | RowFault]:
    """Every data row of the report, in order, parsed or faulted."""
    assert report_format in FORMATS, report_format
    lines = _lines(chunks)
    rows = _csv_rows(lines) if report_format == "csv" else _jsonl_rows(lines)
    for count, row in enumerate(rows, start=1):
        if count > REPORT_ROWS_MAX:
            raise ReportFormatError(row.line_number, f"more than {REPORT_ROWS_MAX} rows")
        yield row


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decoded lines, line endings kept (the csv module needs them inside quoted fields)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    pending = ""
    line_number = 1
    for chunk in chunks:
        try:
            pending += decoder.decode(chunk)
        except UnicodeDecodeError as error:
            raise ReportFormatError(line_number, f"not UTF-8: {error.reason}") from error
        *complete, pending = pending.split("\n")
        for line in complete:
            line_number += 1
            yield line + "\n"
        if len(pending) > LINE_BYTES_MAX:
            raise ReportFormatError(line_number, f"line longer than {LINE_BYTES_MAX} bytes")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _csv_rows(lines: Iterator[str]) -> Iterator[ReportRow | RowFault]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise ReportFormatError(1, f"unreadable CSV header: {error}") from error
    if header is None:
        raise ReportFormatError(1, "empty report: a header row is required")
    columns = _check_header([name.strip() for name in header])
    while True:
        # A quoted field may span lines: a row is reported at the line where it starts.
        line_number = reader.line_num + 1
        try:
            record = next(reader, None)
        except csv.Error as error:
            yield RowFault(line_number, "row", f"unreadable CSV: {error}")
            return  # the csv reader does not resume reliably after a syntax error
        if record is None:
            return
        if record == []:
            continue  # a blank line carries no row
        if len(record) != len(columns):
            yield RowFault(
                line_number, "row", f"{len(record)} fields, the header has {len(columns)}"
            )
            continue
        values = {name: value for name, value in zip(columns, record, strict=True) if value != ""}
        yield validate_row(line_number, values)


def _check_header(columns: list[str]) -> list[str]:
    unknown = [name for name in columns if name not in FIELDS]
    missing = [name for name in REQUIRED_FIELDS if name not in columns]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    problems = []
    if unknown:
        problems.append(f"unknown columns {', '.join(unknown)}")
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if repeated:
        problems.append(f"repeated columns {', '.join(repeated)}")
    if problems:
        raise ReportFormatError(1, "; ".join(problems))
    return columns


def _jsonl_rows(lines: Iterator[str]) -> Iterator[ReportRow | RowFault]:
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except ValueError as error:
            yield RowFault(line_number, "row", f"not JSON: {error}")
            continue
        except RecursionError:  # the decoder recurses per level; a row has only one level
            yield RowFault(line_number, "row", "nested more deeply than a flat JSON object")
            continue
        if not isinstance(values, dict):
            yield RowFault(line_number, "row", "not a JSON object")
            continue
        unknown = sorted(name for name in values if name not in FIELDS)
        if unknown:
            yield RowFault(line_number, unknown[0], "unknown field")
            continue
        yield validate_row(line_number, {k: v for k, v in values.items() if v is not None})


def validate_row(line_number: int, values: dict[str, Any]) -> ReportRow | RowFault:
    """The row, or its first fault (fields checked in the documented order)."""
    for name in REQUIRED_FIELDS:
        if name not in values:
            return RowFault(line_number, name, "required")
    checked: dict[str, Any] = {}
    for name in FIELDS:
        if name not in values:
            checked[name] = None
            continue
        value, reason = _FIELD_CHECKS[name](values[name])
        if reason is not None:
            return RowFault(line_number, name, reason)
        checked[name] = value
    if (checked["amount_minor"] is None) != (checked["currency"] is None):
        return RowFault(line_number, "currency", "amount_minor and currency go together")
    return ReportRow(line_number=line_number, **checked)


CheckResult = tuple[Any, str | None]


def _check_request_id(value: Any) -> CheckResult:
    if not isinstance(value, str) or not REQUEST_ID_PATTERN.fullmatch(value):
        return None, "1 to 128 characters of A-Z a-z 0-9 . _ : -"
    return value, None


def _check_type(value: Any) -> CheckResult:
    if value not in REPORT_TYPES:
        return None, f"one of {', '.join(REPORT_TYPES)}"
    return value, None


def _check_points(value: Any) -> CheckResult:
    points = _integer(value)
    if points is None or not 0 < points <= POINTS_PER_OPERATION_MAX:
        return None, f"a whole number from 1 to {POINTS_PER_OPERATION_MAX}"
    return points, None


def _check_amount_minor(value: Any) -> CheckResult:
    amount_minor = _integer(value)
    if amount_minor is None or not 0 < amount_minor <= AMOUNT_MINOR_MAX:
        return None, f"a whole number of minor units from 1 to {AMOUNT_MINOR_MAX}"
    return amount_minor, None


def _check_currency(value: Any) -> CheckResult:
    if not isinstance(value, str) or not is_known_currency(value):
        return None, "an ISO 4217 code such as CNY or EUR"
    return value, None


def _check_text(value: Any) -> CheckResult:
    if not isinstance(value, str) or not value or len(value) > TEXT_FIELD_LENGTH_MAX:
        return None, f"text of 1 to {TEXT_FIELD_LENGTH_MAX} characters"
    if not value.isprintable() or value.strip() != value:
        return None, "printable characters without leading or trailing spaces"
    return value, None


def _check_occurred_at(value: Any) -> CheckResult:
    moment = parse_rfc3339(value) if isinstance(value, str) else None
    if moment is None:
        return None, "an RFC 3339 timestamp with an offset, such as 2026-03-01T09:30:00Z"
    return moment, None


_FIELD_CHECKS = {
    "request_id": _check_request_id,
    "type": _check_type,
    "points": _check_points,
    "occurred_at": _check_occurred_at,
    "partner_reference": _check_text,
    "member": _check_text,
    "amount_minor": _check_amount_minor,
    "currency": _check_currency,
}


def _integer(value: Any) -> int | None:
    """A JSON integer, or CSV text of decimal digits (no sign, no exponent, no fraction)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and INTEGER_PATTERN.fullmatch(value):
        return int(value)
    return None


def parse_rfc3339(text: str) -> datetime | None:
    """An aware UTC datetime; fractions beyond microseconds are cut, never rounded up."""
    match = RFC3339_PATTERN.fullmatch(text)
    if match is None:
        return None
    date_part, time_part, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # "." and at most six digits
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{date_part}T{time_part}{fraction}{offset}")
    except ValueError:
        return None  # a well-formed but impossible date, such as February 30
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # the offset moves it outside years 1 to 9999, such as 0001-01-01+14:00
        return None
    if not 1970 <= moment.year <= 9999:
        return None
    return moment

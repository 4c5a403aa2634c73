"""Report parsing without a database: formats, line numbers, strictness."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from coalition.reconciliation.report import (
    ReportFormatError,
    ReportRow,
    RowFault,
    parse_report,
    parse_rfc3339,
)

pytestmark = pytest.mark.unit

HEADER = b"request_id,type,points,occurred_at,partner_reference\r\n"


def parsed(content: bytes, report_format: str = "csv", chunk_bytes: int = 5) -> list[object]:
    chunks = [content[i : i + chunk_bytes] for i in range(0, len(content), chunk_bytes)]
    return list(parse_report(chunks, report_format))


def test_csv_rows_keep_the_line_where_they_start_across_quoted_line_breaks() -> None:
    content = (
        "\ufeff".encode()
        + HEADER
        + b'a1,earn,5,2026-03-01T09:30:00Z,"two\r\nlines"\r\n\r\n'
        + "a2,burn,7,2026-03-01T17:30:00.5+08:00,caf\u00e9\r\n".encode()
    )
    fault, row = parsed(content)
    # Line breaks are not printable: a quoted multi-line reference is refused, at its start.
    assert fault == RowFault(
        2, "partner_reference", "printable characters without leading or trailing spaces"
    )
    assert isinstance(row, ReportRow)
    assert (row.line_number, row.partner_reference) == (5, "caf\u00e9")
    assert row.occurred_at == datetime(2026, 3, 1, 9, 30, 0, 500000, tzinfo=UTC)


def test_jsonl_rows_and_faults_carry_their_line_numbers() -> None:
    valid = {"request_id": "a1", "type": "earn", "points": 5, "occurred_at": "2026-03-01T09:30:00Z"}
    lines = [
        json.dumps(valid),
        "",
        json.dumps({**valid, "points": 5.0}),
        json.dumps({**valid, "pints": 1}),
        "[1]",
    ]
    content = ("\n".join(lines) + "\n").encode()
    rows = parsed(content, "jsonl")
    assert isinstance(rows[0], ReportRow)
    assert rows[1:] == [
        RowFault(3, "points", "a whole number from 1 to 1000000000000"),
        RowFault(4, "pints", "unknown field"),
        RowFault(5, "row", "not a JSON object"),
    ]


@pytest.mark.parametrize(
    "header",
    [b"request_id,type,points\r\n", b"request_id,type,points,occurred_at,ponts\r\n", b""],
)
def test_a_bad_header_rejects_the_report(header: bytes) -> None:
    with pytest.raises(ReportFormatError):
        parsed(header + b"a1,earn,5,2026-03-01T09:30:00Z\r\n")


def test_invalid_utf8_rejects_the_report() -> None:
    with pytest.raises(ReportFormatError, match="UTF-8"):
        parsed(HEADER + b"a1,earn,5,2026-03-01T09:30:00Z,\xff\r\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T09:30:00Z", datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
        (
            "2026-03-01t09:30:00.123456789-01:00",
            datetime(2026, 3, 1, 10, 30, 0, 123456, tzinfo=UTC),
        ),
        ("2026-03-01T09:30:00", None),
        ("2026-02-30T09:30:00Z", None),
        ("2026-03-01", None),
        ("1969-12-31T23:59:59Z", None),
    ],
)
def test_rfc3339_is_strict(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


def test_an_instant_beyond_the_calendar_after_its_offset_is_a_fault_not_a_crash() -> None:
    # 0001-01-01 at +14:00 is a moment before year 1 in UTC: converting it overflows.
    assert parse_rfc3339("0001-01-01T00:00:00+14:00") is None
    assert parse_rfc3339("9999-12-31T23:59:59-14:00") is None
    (fault,) = parsed(HEADER + b"a1,earn,5,0001-01-01T00:00:00+14:00,ref\r\n")
    assert isinstance(fault, RowFault) and fault.field == "occurred_at"


def test_a_deeply_nested_jsonl_line_is_a_row_fault() -> None:
    valid = {"request_id": "a1", "type": "earn", "points": 5, "occurred_at": "2026-03-01T09:30:00Z"}
    content = ("[" * 30_000 + "\n" + json.dumps(valid) + "\n").encode()
    fault, row = parsed(content, "jsonl", chunk_bytes=4096)
    assert fault == RowFault(1, "row", "nested more deeply than a flat JSON object")
    assert isinstance(row, ReportRow)

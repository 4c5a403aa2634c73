"""The staging table: a report streamed into the database so that matching is set-based SQL.

It is a temporary table of the run's own connection (never seen by another session, dropped
with the run's transaction or explicitly at its end). PostgreSQL fills it with COPY, SQLite
with batched executemany; either way Python holds one batch at most.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    MetaData,
    String,
    Table,
    cast,
    func,
    insert,
    text,
)

from coalition.reconciliation.report import ReportRow
from coalition.store.schema import UtcDateTime
from coalition.store.unit_of_work import UnitOfWork

# Rows per executemany on SQLite, and per progress report on both databases.
STAGING_BATCH_ROWS = 5_000
STAGING_TABLE_NAME = "reconciliation_staging"

# Not part of `coalition.store.schema.metadata`: it exists only inside a run's transaction.
staging_metadata = MetaData()
staging = Table(
    STAGING_TABLE_NAME,
    staging_metadata,
    Column("line_number", BigInteger, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("type", String(16), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    # Seconds since the epoch: occurred_at is compared to the second (docs/reconciliation.md).
    Column("occurred_at_second", BigInteger, nullable=False),
    Column("partner_reference", String(128), nullable=True),
    Column("member", String(128), nullable=True),
    Column("amount_minor", BigInteger, nullable=True),
    Column("currency", String(3), nullable=True),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
COLUMN_NAMES = tuple(column.name for column in staging.columns)


@contextmanager
def staging_table(uow: UnitOfWork) -> Iterator[Table]:
    """Create the staging table for this transaction; drop it when the block ends."""
    uow.connection.execute(text(f"DROP TABLE IF EXISTS {STAGING_TABLE_NAME}"))
    staging.create(uow.connection)
    yield staging
    # On failure the transaction's rollback removes the table (DDL is transactional on both
    # databases); a DROP here could only fail again inside an aborted transaction.
    uow.connection.execute(text(f"DROP TABLE IF EXISTS {STAGING_TABLE_NAME}"))


def load_rows(uow: UnitOfWork, rows: Iterable[ReportRow], on_batch: Callable[[int], None]) -> int:
    """Stream rows into the staging table; `on_batch(rows_loaded)` after every batch."""
    if uow.dialect_name == "postgresql":
        rows_loaded = _copy_rows(uow, rows, on_batch)
    else:
        rows_loaded = _insert_rows(uow, rows, on_batch)
    # Indexed after the load: building it once is cheaper than maintaining it row by row.
    uow.connection.execute(
        text(
            f"CREATE INDEX ix_{STAGING_TABLE_NAME}"
            f" ON {STAGING_TABLE_NAME} (request_id, line_number)"
        )
    )
    if uow.dialect_name == "postgresql":
        # Autovacuum never analyses temporary tables; without statistics the planner guesses.
        uow.connection.execute(text(f"ANALYZE {STAGING_TABLE_NAME}"))
    return rows_loaded


def _copy_rows(uow: UnitOfWork, rows: Iterable[ReportRow], on_batch: Callable[[int], None]) -> int:
    # The driver connection is the one the unit of work's transaction runs on, so the COPY is
    # part of that transaction. Rows go as COPY text lines written a batch at a time: letting
    # the driver adapt each value separately costs more than parsing the report.
    driver_connection: Any = uow.connection.connection.driver_connection
    statement = f"COPY {STAGING_TABLE_NAME} ({', '.join(COLUMN_NAMES)}) FROM STDIN"
    rows_loaded = 0
    batch: list[str] = []
    with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            batch.append(_copy_line(row))
            if len(batch) == STAGING_BATCH_ROWS:
                copy.write("".join(batch).encode())
                rows_loaded += len(batch)
                batch = []
                on_batch(rows_loaded)
        if batch:
            copy.write("".join(batch).encode())
            rows_loaded += len(batch)
    on_batch(rows_loaded)
    return rows_loaded


def _copy_line(row: ReportRow) -> str:
    """One row in COPY text format: tab-separated, \\N for NULL, backslashes escaped.
    Validated text fields hold no tab or line break (they are printable)."""
    return (
        "\t".join(
            (
                str(row.line_number),
                row.request_id,
                row.type,
                str(row.points),
                row.occurred_at.isoformat(),
                str(epoch_second(row.occurred_at)),
                _copy_text(row.partner_reference),
                _copy_text(row.member),
                "\\N" if row.amount_minor is None else str(row.amount_minor),
                "\\N" if row.currency is None else row.currency,
            )
        )
        + "\n"
    )


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.replace("\\", "\\\\")


def _insert_rows(
    uow: UnitOfWork, rows: Iterable[ReportRow], on_batch: Callable[[int], None]
) -> int:
    batch: list[dict[str, Any]] = []
    rows_loaded = 0
    for row in rows:
        batch.append(dict(zip(COLUMN_NAMES, _values(row), strict=True)))
        if len(batch) == STAGING_BATCH_ROWS:
            uow.connection.execute(insert(staging), batch)
            rows_loaded += len(batch)
            batch = []
            on_batch(rows_loaded)
    if batch:
        uow.connection.execute(insert(staging), batch)
        rows_loaded += len(batch)
    on_batch(rows_loaded)
    return rows_loaded


def _values(row: ReportRow) -> tuple[Any, ...]:
    return (
        row.line_number,
        row.request_id,
        row.type,
        row.points,
        row.occurred_at,
        epoch_second(row.occurred_at),
        row.partner_reference,
        row.member,
        row.amount_minor,
        row.currency,
    )


def epoch_second(moment: datetime) -> int:
    """Whole seconds since the epoch; the fraction is dropped, as SQL does below."""
    return calendar.timegm(moment.astimezone(UTC).utctimetuple())


def epoch_second_of(column: ColumnElement[Any], dialect_name: str) -> ColumnElement[Any]:
    """The same, in SQL, for a UtcDateTime column."""
    if dialect_name == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    # SQLite keeps UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'; strftime('%s') drops the fraction.
    return cast(func.strftime("%s", column), BigInteger)

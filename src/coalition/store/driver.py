"""Hot-path statements on the database driver's own cursor, inside a unit of work.

SQLAlchemy Core builds, caches and wraps each statement it runs; on the ledger's hot path that
work cost more CPU than the database spent on the statements (docs/benchmarks.md). The few
statements every mutation runs are written here once, as plain SQL text with `%s`
placeholders, and executed on the driver's cursor in the unit of work's own transaction:
psycopg prepares a statement after a few uses on a connection, and sqlite3 caches them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError

from coalition.store.arrays import BigintArray, TextArray
from coalition.store.unit_of_work import UnitOfWork

# `column IN_LIST` matches any value of one list parameter of text (ids), `column
# IN_BIGINT_LIST` of bigints, in one statement text whatever the list's length: `= ANY(array)`
# on PostgreSQL (the array sent in binary, store/arrays.py), `json_each` of the list as JSON
# on SQLite.
IN_LIST = "IN_LIST"
IN_BIGINT_LIST = "IN_BIGINT_LIST"
_POSTGRES_PLACEHOLDERS = re.compile(r"%%|= ANY\(%b(?:::bigint\[\])?\)|%[sb]")
_ARRAY_OF_PLACEHOLDER: dict[str, type[list[Any]]] = {
    "= ANY(%b)": TextArray,
    "= ANY(%b::bigint[])": BigintArray,
}


class Statement:
    """One SQL text for both drivers: psycopg takes `%s`, sqlite3 takes `?`."""

    def __init__(self, sql: str) -> None:
        assert "?" not in sql, "write placeholders as %s"
        self.postgresql = sql.replace(f"{IN_BIGINT_LIST} %s", "= ANY(%b::bigint[])")
        self.postgresql = self.postgresql.replace(f"{IN_LIST} %s", "= ANY(%b)")
        # The array class of each PostgreSQL parameter that is a list (None: not a list).
        self.postgresql_arrays = [
            _ARRAY_OF_PLACEHOLDER.get(placeholder)
            for placeholder in _POSTGRES_PLACEHOLDERS.findall(self.postgresql)
            if placeholder != "%%"
        ]
        json_list = "IN (SELECT value FROM json_each(%s))"
        self.sqlite = sql.replace(f"{IN_BIGINT_LIST} %s", json_list)
        self.sqlite = self.sqlite.replace(f"{IN_LIST} %s", json_list).replace("%s", "?")

    def postgresql_parameters(self, parameters: Sequence[Any]) -> list[Any]:
        """The parameters, each list as its typed array."""
        return [
            value if array is None else array(value)
            for array, value in zip(self.postgresql_arrays, parameters, strict=True)
        ]


def execute(uow: UnitOfWork, statement: Statement, parameters: Sequence[Any]) -> Any:
    """Run `statement` in the unit of work's transaction; return the driver's cursor."""
    return _execute(uow, cursor_of(uow), statement, parameters)


def fetch_all(uow: UnitOfWork, statement: Statement, parameters: Sequence[Any]) -> list[Any]:
    """`execute`, its rows fetched at once, on the connection's kept cursor (`kept_cursor`)."""
    return list(_execute(uow, kept_cursor(uow), statement, parameters).fetchall())


def _execute(uow: UnitOfWork, cursor: Any, statement: Statement, parameters: Sequence[Any]) -> Any:
    with driver_errors(uow):
        if uow.dialect_name == "postgresql":
            return cursor.execute(statement.postgresql, statement.postgresql_parameters(parameters))
        return cursor.execute(statement.sqlite, [sqlite_value(value) for value in parameters])


@contextmanager
def driver_errors(uow: UnitOfWork) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy would have (so the API maps a lost database to
    UNAVAILABLE as everywhere else), and invalidate a connection the database dropped."""
    dialect = uow.engine.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as error:
        dbapi_connection = uow.connection.connection.dbapi_connection
        disconnected = dialect.is_disconnect(error, dbapi_connection, None)
        if disconnected:
            uow.connection.invalidate(error)
        raise DBAPIError.instance(
            None,
            None,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=disconnected,
            dialect=dialect,
        ) from error


def cursor_of(uow: UnitOfWork) -> Any:
    """The driver's cursor, inside the unit of work's transaction (SQLAlchemy began it)."""
    return uow.connection.connection.driver_connection.cursor()  # type: ignore[union-attr]


def kept_cursor(uow: UnitOfWork, cursor_class: type[psycopg.Cursor[Any]] = psycopg.Cursor) -> Any:
    """The cursor of `cursor_class` this PostgreSQL connection keeps for statements whose rows
    are fetched at once (a new cursor per statement looked its parameters' dumpers and its
    columns' loaders up afresh: 115 µs against 80 for `SELECT 1` on a kept one, measured);
    on SQLite, where a cursor costs nothing, a new one. Never for rows read lazily: the next
    statement on the same cursor drops them."""
    connection: Any = uow.connection.connection.driver_connection
    if uow.dialect_name != "postgresql":
        return connection.cursor()
    # Kept on the driver's connection itself: a connection the pool replaces takes its
    # cursors with it.
    cursors: dict[type[Any], Any] = connection.__dict__.setdefault(_KEPT_CURSORS, {})
    cursor = cursors.get(cursor_class)
    if cursor is None or cursor.closed:
        cursor = cursors[cursor_class] = cursor_class(connection)
    return cursor


_KEPT_CURSORS = "coalition_kept_cursors"


def sqlite_value(value: Any) -> Any:
    """A parameter as SQLite stores it: an aware datetime as SQLAlchemy's UTC text
    (schema.UtcDateTime), a list (of IN_LIST) as JSON, anything else unchanged."""
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, datetime):
        assert value.tzinfo is not None, "naive datetimes never reach the database"
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # The text of "%Y-%m-%d %H:%M:%S.%f", without strftime's cost (the hot path's).
        return utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


def utc_datetime(value: Any) -> datetime | None:
    """A datetime column read on the driver's cursor, as schema.UtcDateTime reads it: aware
    UTC (SQLite hands back the text `sqlite_value` wrote)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

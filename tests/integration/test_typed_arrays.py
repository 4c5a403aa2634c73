"""The typed arrays of store/arrays.py reach PostgreSQL as the values they hold: what the
server reads back equals what psycopg's own list dumper would have sent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from coalition.store import arrays
from coalition.store.arrays import BigintArray, IntegerArray, TextArray, TimestamptzArray
from coalition.store.driver import IN_BIGINT_LIST, IN_LIST, Statement

pytestmark = pytest.mark.integration

BIGINTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INTEGERS = st.integers(min_value=-(2**31), max_value=2**31 - 1)
# PostgreSQL's text holds no NUL character.
TEXTS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
)
CASES = (
    (TextArray, "text", TEXTS),
    (BigintArray, "bigint", BIGINTS),
    (IntegerArray, "integer", INTEGERS),
    (TimestamptzArray, "timestamptz", MOMENTS),
)


@pytest.fixture(scope="module")
def connection(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    url = make_url(postgres_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
    ) as connection:
        yield connection


def _read_back(connection: psycopg.Connection[Any], value: list[Any], sql_type: str) -> Any:
    return connection.execute(f"SELECT %b::{sql_type}[]", (value,)).fetchone()[0]  # type: ignore[index]


@pytest.mark.parametrize(("array", "sql_type", "values"), CASES)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_typed_array_reads_back_as_psycopgs_own_list(
    connection: psycopg.Connection[Any],
    array: type[list[Any]],
    sql_type: str,
    values: st.SearchStrategy[Any],
    data: st.DataObject,
) -> None:
    value = data.draw(st.lists(st.none() | values, max_size=12))
    typed = _read_back(connection, array(value), sql_type)
    assert typed == _read_back(connection, value, sql_type) == [_as_sent(v) for v in value]


def _as_sent(value: Any) -> Any:
    """A value as the server reads it back: a moment as its UTC instant (a local time that a
    clock change skipped or repeated has one only through its offset)."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def test_the_edges_of_each_type(connection: psycopg.Connection[Any]) -> None:
    five_hours_east = timezone(timedelta(hours=5))
    before_the_epoch = datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=five_hours_east)
    assert _read_back(connection, TextArray([]), "text") == []
    assert _read_back(connection, TextArray(["", "ü€", None]), "text") == ["", "ü€", None]
    assert _read_back(connection, BigintArray([-(2**63), 2**63 - 1]), "bigint") == [
        -(2**63),
        2**63 - 1,
    ]
    assert _read_back(connection, TimestamptzArray([before_the_epoch]), "timestamptz") == [
        before_the_epoch.astimezone(UTC)
    ]


def test_a_naive_datetime_is_refused_before_anything_is_sent(
    connection: psycopg.Connection[Any],
) -> None:
    with pytest.raises((AssertionError, psycopg.DataError)):
        _read_back(connection, TimestamptzArray([datetime(2026, 1, 1)]), "timestamptz")


def test_the_arrays_are_psycopgs_choice_for_their_class(
    connection: psycopg.Connection[Any],
) -> None:
    """A connection made after the module's import dumps each class with its own dumper, not
    psycopg's list dumper (which scans every list for its element type)."""
    for array, _, _ in CASES:
        dumper = connection.adapters.get_dumper(array, psycopg.adapt.PyFormat.BINARY)
        assert dumper.__module__ == arrays.__name__


def test_a_statement_types_each_list_parameter_by_its_placeholder() -> None:
    statement = Statement(
        f"SELECT 1 FROM lots WHERE member_id {IN_LIST} %s AND lot_id {IN_BIGINT_LIST} %s"
        " AND points > %s AND note LIKE 'a%%'"
    )
    parameters = statement.postgresql_parameters([["m1"], [7], 3])
    assert [type(value) for value in parameters] == [TextArray, BigintArray, int]
    assert parameters == [["m1"], [7], 3]
    with pytest.raises(ValueError):
        statement.postgresql_parameters([["m1"], [7]])  # a parameter missing


def test_a_statement_built_on_another_keeps_its_arrays() -> None:
    read = Statement(f"SELECT balance_points FROM member_accounts WHERE member_id {IN_LIST} %s")
    locking = Statement(f"{read.postgresql} FOR UPDATE")
    assert locking.postgresql_arrays == read.postgresql_arrays == [TextArray]


def test_a_numbered_statement_sends_each_name_once_as_its_type(
    connection: psycopg.Connection[Any],
) -> None:
    """Named parameters are numbered once ($1, $2, ...): a name used twice is one parameter,
    each list goes as the array its cast names, and PostgreSQL reads back what was given."""
    statement = arrays.NumberedStatement(
        "SELECT %(ids)b::bigint[], %(names)b::text[], cardinality(%(ids)b::bigint[]), %(label)s"
    )
    assert statement.sql == b"SELECT $1::bigint[], $2::text[], cardinality($1::bigint[]), $3"
    assert statement.names == ["ids", "names", "label"]
    values = {"ids": [3, None, 2**40], "names": ["a", "é"], "label": "x"}
    cursor = psycopg.RawCursor(connection)
    assert cursor.execute(statement.sql, statement.parameters(values)).fetchone() == (
        [3, None, 2**40], ["a", "é"], 3, "x",
    )  # fmt: skip
    with pytest.raises(AssertionError, match="cast to one type"):
        arrays.NumberedStatement("SELECT %(ids)b::bigint[], %(ids)b::text[]")
    with pytest.raises(AssertionError, match="every parameter given"):
        statement.parameters({"ids": [1], "names": []})

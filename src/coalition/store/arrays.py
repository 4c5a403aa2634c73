"""Typed arrays for PostgreSQL parameters, dumped in binary without psycopg's list inspection.

psycopg dumps a plain list by first scanning it for an element to learn its type, then
building a dumper for that type, then measuring its dimensions, on every execute and for
every list: the writer's statement passes some forty arrays, most of one or two elements,
and that per-list work cost more of a group of one earn than anything else in the hub
(docs/benchmarks.md). A list whose element type the statement already names is wrapped in
one of these classes instead, whose dumper writes PostgreSQL's binary array format directly
(`array_send`: dimensions, element type, then each element's length and bytes).

The classes are lists, so the same values still go to SQLite (as JSON) and compare as lists.
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

_NULL = struct.pack("!i", -1)  # an element's length when it is NULL
_LENGTH = struct.Struct("!i")
_BIGINT = struct.Struct("!iq")  # an element's length (8), then its value
_INTEGER = struct.Struct("!ii")  # an element's length (4), then its value
_HEADER = struct.Struct("!iiIii")  # one dimension: ndim, has nulls, element oid, length, lower
_EMPTY_HEADER = struct.Struct("!iiI")  # no dimension
# timestamptz in binary: microseconds since 2000-01-01 00:00 UTC.
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class _TypedArray(list[Any]):
    """A list of values of one PostgreSQL type (None: NULL)."""

    type_name: ClassVar[str]

    @staticmethod
    def element(value: Any) -> bytes:
        """One value as an element: its length, then its bytes."""
        raise NotImplementedError


class TextArray(_TypedArray):
    type_name = "text"

    @staticmethod
    def element(value: Any) -> bytes:
        data: bytes = value.encode()
        return _LENGTH.pack(len(data)) + data


class BigintArray(_TypedArray):
    type_name = "int8"

    @staticmethod
    def element(value: Any) -> bytes:
        return _BIGINT.pack(8, value)


class IntegerArray(_TypedArray):
    type_name = "int4"

    @staticmethod
    def element(value: Any) -> bytes:
        return _INTEGER.pack(4, value)


class TimestamptzArray(_TypedArray):
    type_name = "timestamptz"

    @staticmethod
    def element(value: Any) -> bytes:
        assert value.tzinfo is not None, "aware datetimes only"
        since = value - _POSTGRES_EPOCH
        microseconds = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
        return _BIGINT.pack(8, microseconds)


# By the name a statement casts an array parameter to (`%(name)b::bigint[]`).
ARRAY_OF_SQL_TYPE: dict[str, type[_TypedArray]] = {
    "text": TextArray,
    "bigint": BigintArray,
    "integer": IntegerArray,
    "timestamptz": TimestamptzArray,
}


class NumberedStatement:
    """A statement written with named parameters (`%(name)b::text[]`, `%(name)s`), numbered
    once ($1, $2, ...) for a raw cursor (`psycopg.RawCursor`), which sends the text as it is.

    A plain cursor parses the placeholders of every statement it runs, and keeps the parse
    only of texts up to 4,096 bytes with up to 50 parameters (psycopg._queries.
    MAX_CACHED_STATEMENT_LENGTH and _PARAMS): the ledger writer's statement is longer, and would
    be parsed again on every call. A name used several times is one parameter, sent once; each
    list a statement casts to an array is sent as its typed array, in binary."""

    _PLACEHOLDER = re.compile(r"%\((\w+)\)[bs](?:::(\w+)\[\])?")

    def __init__(self, sql: str) -> None:
        self.names: list[str] = []
        self.arrays: list[type[_TypedArray] | None] = []

        def number(match: re.Match[str]) -> str:
            name, sql_type = match.group(1), match.group(2)
            array = None if sql_type is None else ARRAY_OF_SQL_TYPE[sql_type]
            if name not in self.names:
                self.names.append(name)
                self.arrays.append(array)
            index = self.names.index(name)
            assert self.arrays[index] is array, f"{name} is cast to one type"
            return f"${index + 1}" + ("" if sql_type is None else f"::{sql_type}[]")

        self.sql = self._PLACEHOLDER.sub(number, sql).encode()
        assert "%(" not in self.sql.decode(), "every parameter is named and numbered"

    def parameters(self, values: dict[str, Any]) -> list[Any]:
        """The values by name, in the statement's numbering, each list as its typed array."""
        assert set(values) == set(self.names), "every parameter given, none more"
        return [
            values[name] if array is None else array(values[name])
            for name, array in zip(self.names, self.arrays, strict=True)
        ]


def _dumper_of(array: type[_TypedArray]) -> type[Dumper]:
    element_oid = psycopg.postgres.types[array.type_name].oid

    empty = _EMPTY_HEADER.pack(0, 0, element_oid)
    # Most arrays of a group of one earn hold one value: their header is a constant.
    one_value_header = _HEADER.pack(1, False, element_oid, 1, 1)

    class TypedArrayDumper(Dumper):
        format = Format.BINARY
        oid = psycopg.postgres.types[array.type_name].array_oid

        def dump(self, obj: Any) -> bytes:
            if not obj:
                return empty
            element = array.element
            if len(obj) == 1 and obj[0] is not None:
                return one_value_header + element(obj[0])
            has_null = None in obj
            parts = [_HEADER.pack(1, has_null, element_oid, len(obj), 1)]
            if has_null:
                parts.extend(_NULL if value is None else element(value) for value in obj)
            else:
                parts.extend(map(element, obj))
            return b"".join(parts)

    return TypedArrayDumper


# On psycopg's global adapters, which every connection made afterwards copies; a connection
# made before still dumps these as plain lists (the same values, more slowly).
for _array in ARRAY_OF_SQL_TYPE.values():
    psycopg.adapters.register_dumper(_array, _dumper_of(_array))

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


def array_types_of(sql: str) -> dict[str, type[_TypedArray]]:
    """The array class of every named parameter `sql` casts to an array (`%(name)b::text[]`);
    a name cast twice is cast to one type."""
    types: dict[str, type[_TypedArray]] = {}
    for name, sql_type in re.findall(r"%\((\w+)\)b::(\w+)\[\]", sql):
        array = ARRAY_OF_SQL_TYPE[sql_type]
        assert types.setdefault(name, array) is array, f"{name} is cast to one type"
    return types


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

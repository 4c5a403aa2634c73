"""RFC 8785 canonical JSON for the statement subset, and the entry fast path against it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.settlement.canonical import CanonicalJsonError, canonical_bytes, parse_canonical
from coalition.settlement.format import Entry

pytestmark = pytest.mark.unit


def test_keys_sort_by_utf16_code_units_as_in_rfc_8785_section_3_2_3() -> None:
    # The RFC's own example: code point order would put U+1F600 after U+FB33; UTF-16 puts its
    # high surrogate (U+D83D) first.
    document = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    values = list(json.loads(canonical_bytes(document)).values())
    assert values == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]


def test_string_escaping_follows_rfc_8785_section_3_2_2_2() -> None:
    # The RFC's example string: short escapes, lower-case \\u00xx for other controls, and
    # nothing else escaped (not '/', not non-ASCII, not DEL).
    text = "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/\u007f"
    assert canonical_bytes(text) == '"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/\u007f"'.encode()
    assert canonical_bytes("\b\f\t\r\u0000\u001f") == b'"\\b\\f\\t\\r\\u0000\\u001f"'


def test_structure_has_no_whitespace_and_literals_are_lower_case() -> None:
    document = {"b": [True, False, None, "x"], "a": {"d": [], "c": {}}}
    assert canonical_bytes(document) == b'{"a":{"c":{},"d":[]},"b":[true,false,null,"x"]}'


@pytest.mark.parametrize("value", [1, 1.5, {"a": 2}, [3], {1: "x"}, b"bytes"])
def test_numbers_and_other_types_are_refused(value: object) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_bytes(value)  # type: ignore[arg-type]


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(CanonicalJsonError, match="surrogate"):
        canonical_bytes("\ud800")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b'{"a":"1", "b":"2"}', "canonical"),
        (b'{"b":"2","a":"1"}', "canonical"),
        (b'{"a":"\\u00e9"}', "canonical"),
        (b'{"a":1}', "number"),
        (b'{"a":"1","a":"2"}', "duplicate"),
        (b'{"a":', "JSON"),
        (b"\xff", "JSON"),
        (b"[" * 30_000, "nested"),  # a hostile statement file, as `settle verify` reads it
    ],
)
def test_parse_refuses_anything_not_canonical(document: bytes, problem: str) -> None:
    with pytest.raises(CanonicalJsonError, match=problem):
        parse_canonical(document, "test document")


json_values = st.recursive(
    st.none() | st.booleans() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_canonical_output_is_json_that_parses_back_to_the_same_value(value: object) -> None:
    encoded = canonical_bytes(value)  # type: ignore[arg-type]
    assert json.loads(encoded) == value
    assert parse_canonical(encoded, "round trip") == value
    assert canonical_bytes(json.loads(encoded)) == encoded


instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
optional_text = st.none() | st.text()
entries = st.builds(
    Entry,
    transaction_id=st.integers(min_value=1, max_value=2**63 - 1),
    kind=st.text(),
    parent_transaction_id=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    parent_kind=optional_text,
    occurred_at=instants,
    create_time=instants.map(lambda moment: moment.astimezone(UTC) + timedelta(0)),
    member_id=st.text(),
    request_id=optional_text,
    rate_version_id=optional_text,
    partner_points=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@given(entries)
def test_entry_fast_path_equals_the_generic_canonical_form(entry: Entry) -> None:
    assert entry.canonical_bytes() == canonical_bytes(entry.document())

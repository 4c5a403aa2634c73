"""RFC 8785 (JSON Canonicalization Scheme) for the subset statements use.

Statements contain only objects, arrays, strings, booleans and null: every integer is written
as a decimal string, so the number serialisation of RFC 8785 (ECMAScript's) never comes into
play and a verifier in any language needs no floating-point formatting. Encoding refuses
anything else, so a number can never slip into a signed document by accident.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

JsonValue = str | bool | None | Mapping[str, "JsonValue"] | Sequence["JsonValue"]

# RFC 8785 3.2.2.2: these five use their two-character escapes; other controls use \u00xx.
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"
_ESCAPES = {chr(code): f"\\u{code:04x}" for code in range(0x20)} | _SHORT_ESCAPES
_TRANSLATION = str.maketrans(_ESCAPES)
_NEEDS_ESCAPE = re.compile('[\\x00-\\x1f"\\\\]')


class CanonicalJsonError(ValueError):
    """A value outside the canonical subset, or a document that is not canonical JSON."""


def canonical_bytes(value: JsonValue) -> bytes:
    """The canonical UTF-8 bytes of `value`."""
    parts: list[str] = []
    _encode(value, parts)
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Only a lone surrogate cannot be encoded; I-JSON (RFC 7493) forbids them.
        raise CanonicalJsonError("strings must be valid Unicode (no lone surrogates)") from None


def canonical_string(text: str) -> str:
    """A JSON string literal as RFC 8785 writes it (the quotes included)."""
    # Most strings need no escape at all; the search is much cheaper than the translation.
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return '"' + text.translate(_TRANSLATION) + '"'


def utf16_sort_key(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly like sequences of UTF-16 code units, which is
    # the order RFC 8785 3.2.3 prescribes (it differs from code point order above U+FFFF).
    return key.encode("utf-16-be", "surrogatepass")


def _encode(value: Any, parts: list[str]) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(canonical_string(value))
    elif isinstance(value, Mapping):
        _encode_object(value, parts)
    elif isinstance(value, list | tuple):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _encode(item, parts)
        parts.append("]")
    else:
        raise CanonicalJsonError(
            f"{type(value).__name__} is outside the canonical subset "
            "(integers are written as decimal strings)"
        )


def _encode_object(value: Mapping[Any, Any], parts: list[str]) -> None:
    if not all(isinstance(key, str) for key in value):
        raise CanonicalJsonError("object keys must be strings")
    parts.append("{")
    for index, key in enumerate(sorted(value, key=utf16_sort_key)):
        if index:
            parts.append(",")
        parts.append(canonical_string(key))
        parts.append(":")
        _encode(value[key], parts)
    parts.append("}")


def parse_canonical(document: bytes, what: str) -> Any:
    """Parse `document`, which must be exactly the canonical form of what it holds.

    Duplicate keys, numbers, insignificant whitespace or another escaping all make a document
    that hashes differently from its content, so each is refused with a message naming `what`.
    """
    try:
        value = json.loads(
            document.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_int=_refuse_number,
            parse_float=_refuse_number,
            parse_constant=_refuse_number,
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise CanonicalJsonError(
            f"{what}: not valid JSON of the statement format: {error}"
        ) from None
    except RecursionError:  # the decoder recurses per level; statements are shallow
        raise CanonicalJsonError(f"{what}: nested more deeply than any statement") from None
    try:
        canonical = canonical_bytes(value)
    except RecursionError:  # so does the encoder, for a document just under the decoder's limit
        raise CanonicalJsonError(f"{what}: nested more deeply than any statement") from None
    if canonical != document:
        raise CanonicalJsonError(f"{what}: not in RFC 8785 canonical form")
    return value


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = item
    return result


def _refuse_number(text: str) -> Any:
    raise ValueError(f"JSON number {text} found; integers are written as decimal strings")

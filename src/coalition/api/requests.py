"""Parsing requests: every field is checked and every fault collected before anything runs.

A servicer builds a `RequestParser`, reads each field through it, then calls `done()`, which
raises INVALID_ARGUMENT with one BadRequest violation per faulty field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from coalition.domain.currency import is_known_currency
from coalition.domain.errors import FieldViolation, InvalidArgument
from coalition.domain.points import AMOUNT_MINOR_MAX, POINTS_PER_OPERATION_MAX, Money
from coalition.identity.members import MemberReference

REQUEST_ID_LENGTH_MAX = 128
REQUEST_ID_PATTERN = re.compile(rf"[A-Za-z0-9._:\-]{{1,{REQUEST_ID_LENGTH_MAX}}}")
TRANSACTION_ID_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
IDENTIFIER_LENGTH_MAX = 128
TEXT_LENGTH_MAX = 256
PARTNER_REFERENCE_LENGTH_MAX = 128
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 500
# A token is "p1.<query digest>.<cursor>" in URL-safe base64: under 240 characters for any
# cursor the hub makes (an int64 or a 128-character id). Longer input is refused unread.
PAGE_TOKEN_VERSION = "p1"
PAGE_TOKEN_DIGEST_LENGTH = 32
PAGE_TOKEN_LENGTH_MAX = 256
INT_CURSOR_PATTERN = re.compile(r"[1-9][0-9]{0,18}")
# Timestamps outside these years are mistakes, and beyond them Python cannot represent them.
TIMESTAMP_SECONDS_MIN = int(datetime(1970, 1, 1, tzinfo=UTC).timestamp())
TIMESTAMP_SECONDS_MAX = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp())
# google.protobuf.Duration's own range: about 10,000 years either way.
DURATION_SECONDS_MAX = 315_576_000_000
NANOS_MAX = 999_999_999

Choice = TypeVar("Choice")


class RequestParser:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fault(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def request_id(self, value: str, field: str = "request_id") -> str:
        if not REQUEST_ID_PATTERN.fullmatch(value):
            self.fault(
                field, f"required: 1 to {REQUEST_ID_LENGTH_MAX} characters of A-Z a-z 0-9 . _ : -"
            )
        return value

    def identifier(
        self,
        value: str,
        field: str,
        required: bool = True,
        length_max: int = IDENTIFIER_LENGTH_MAX,
    ) -> str:
        """An id given by a partner or the hub: printable, no surrounding spaces, bounded."""
        if not value:
            if required:
                self.fault(field, "required")
        elif len(value) > length_max:
            self.fault(field, f"at most {length_max} characters")
        elif not value.isprintable() or value.strip() != value:
            self.fault(field, "printable characters without leading or trailing spaces")
        return value

    def text(self, value: str, field: str, length_max: int = TEXT_LENGTH_MAX) -> str | None:
        if len(value) > length_max:
            self.fault(field, f"at most {length_max} characters")
        elif not value.isprintable():
            self.fault(field, "printable characters only")
        return value or None

    def points(self, value: int, field: str, zero_allowed: bool = False) -> int:
        if value < 0 or (value == 0 and not zero_allowed):
            self.fault(field, "must be positive" if not zero_allowed else "must not be negative")
        elif value > POINTS_PER_OPERATION_MAX:
            self.fault(field, f"at most {POINTS_PER_OPERATION_MAX}")
        return value

    def money(self, message: Any, field: str) -> Money:
        if message.amount_minor <= 0:
            self.fault(f"{field}.amount_minor", "must be positive")
        elif message.amount_minor > AMOUNT_MINOR_MAX:
            self.fault(f"{field}.amount_minor", f"at most {AMOUNT_MINOR_MAX}")
        if not is_known_currency(message.currency):
            self.fault(f"{field}.currency", "must be an ISO 4217 code such as CNY or EUR")
        return Money(message.amount_minor, message.currency)

    def timestamp(self, request: Any, field: str) -> datetime | None:
        if not request.HasField(field):
            return None
        value: Timestamp = getattr(request, field)
        if not TIMESTAMP_SECONDS_MIN <= value.seconds <= TIMESTAMP_SECONDS_MAX:
            self.fault(field, "must lie between 1970 and 9999")
            return None
        if not 0 <= value.nanos <= 999_999_999:
            self.fault(f"{field}.nanos", "must be within 0 and 999999999")
            return None
        instant: datetime = value.ToDatetime(tzinfo=UTC)
        return instant

    def duration(self, request: Any, field: str) -> timedelta | None:
        """A well-formed Duration (google/protobuf/duration.proto): seconds within its range,
        nanos within +-999,999,999 and of the same sign as seconds. Microsecond precision;
        finer nanos are refused, not rounded."""
        if not request.HasField(field):
            return None
        value: Duration = getattr(request, field)
        if not -DURATION_SECONDS_MAX <= value.seconds <= DURATION_SECONDS_MAX:
            self.fault(f"{field}.seconds", f"must be within +-{DURATION_SECONDS_MAX}")
            return None
        if not -NANOS_MAX <= value.nanos <= NANOS_MAX:
            self.fault(f"{field}.nanos", f"must be within -{NANOS_MAX} and {NANOS_MAX}")
            return None
        if (value.seconds > 0 and value.nanos < 0) or (value.seconds < 0 and value.nanos > 0):
            self.fault(f"{field}.nanos", "must have the sign of seconds")
            return None
        if value.nanos % 1_000:
            self.fault(f"{field}.nanos", "at most microsecond precision (a multiple of 1000)")
            return None
        return timedelta(seconds=value.seconds, microseconds=value.nanos // 1_000)

    def choice(
        self, value: int, choices: Mapping[Any, Choice], field: str, required: bool = True
    ) -> Choice | None:
        """An enum field: one of `choices` (keyed by enum number), or, when not `required`,
        0 (UNSPECIFIED) for none. Any other number, UNSPECIFIED when required included, is a
        client error: an unknown value is never read as a default."""
        if value == 0 and not required:
            return None
        if value in choices:
            return choices[value]
        allowed = ", ".join(str(number) for number in sorted(choices))
        self.fault(field, f"required: one of the enum values {allowed}, not {value}")
        return None

    def member(self, request: Any, field: str = "member") -> MemberReference:
        reference = getattr(request, field)
        which = reference.WhichOneof("member") if request.HasField(field) else None
        if which == "member_id":
            return MemberReference(
                member_id=self.identifier(reference.member_id, f"{field}.member_id")
            )
        if which == "partner_customer_id":
            customer_id = self.identifier(
                reference.partner_customer_id, f"{field}.partner_customer_id"
            )
            return MemberReference(partner_customer_id=customer_id)
        self.fault(field, "required: member_id or partner_customer_id")
        return MemberReference(member_id="")

    def transaction_id(self, value: str, field: str) -> int:
        # Not str.isdigit(): it accepts digits such as "³" that int() refuses.
        if not TRANSACTION_ID_PATTERN.fullmatch(value):
            self.fault(field, "required: a transaction id as returned by the hub")
            return 0
        return int(value)

    def page_size(self, value: int, field: str = "page_size") -> int:
        if value < 0:
            self.fault(field, "must not be negative")
        return min(value or PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)

    def page_token(
        self,
        value: str,
        query: dict[str, Any],
        cursor_type: type[int] | type[str] = int,
        field: str = "page_token",
    ) -> Any:
        """The cursor inside a token made by `page_token_for`, for the same query only.

        Tokens are opaque to callers but not trusted: the length is bounded before anything is
        decoded, the text is split (no parser that could recurse), and the cursor's type and
        range are checked, since a crafted token must give INVALID_ARGUMENT, never reach SQL.
        """
        if not value:
            return None
        if len(value) > PAGE_TOKEN_LENGTH_MAX:
            self.fault(field, f"at most {PAGE_TOKEN_LENGTH_MAX} characters: not a page token")
            return None
        cursor = _cursor_in(value, _query_digest(query), cursor_type)
        if cursor is None:
            self.fault(field, "not a token from a previous page of this same query")
        return cursor


def _cursor_in(token: str, digest: str, cursor_type: type[int] | type[str]) -> int | str | None:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeError is a ValueError
        return None
    version, _, rest = text.partition(".")
    token_digest, _, cursor = rest.partition(".")
    if version != PAGE_TOKEN_VERSION or token_digest != digest:
        return None
    if cursor_type is int:
        in_range = INT_CURSOR_PATTERN.fullmatch(cursor) and int(cursor) < 2**63
        return int(cursor) if in_range else None
    return cursor if cursor.isprintable() and 0 < len(cursor) <= IDENTIFIER_LENGTH_MAX else None


def _query_digest(query: dict[str, Any]) -> str:
    """What defines a list: who asks, the filters and the page size. A token of another
    caller, filter or page size is refused, not silently applied to this query."""
    assert {"caller", "page_size"} <= query.keys(), "a page token binds caller and page size"
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:PAGE_TOKEN_DIGEST_LENGTH]


def page_token_for(cursor: int | str, query: dict[str, Any]) -> str:
    text = f"{PAGE_TOKEN_VERSION}.{_query_digest(query)}.{cursor}"
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")

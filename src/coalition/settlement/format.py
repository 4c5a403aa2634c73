"""The statement format (docs/settlement.md): entries, totals, money and the signed body.

Pure and shared by the hub, which builds statements, and `verify`, which recomputes them from
exported files: both sides go through the same functions, so they cannot drift apart.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from coalition.settlement.canonical import canonical_string

FORMAT = "coalition.settlement.statement.v1"
# The previous-statement hash of a partner's first statement.
GENESIS_HASH = "0" * 64

ISSUED = "issued"
ISSUED_REVERSED = "issued_reversed"
REDEEMED = "redeemed"
REDEEMED_REVERSED = "redeemed_reversed"
EXPIRED = "expired"
OTHER = "other"
POINT_CATEGORIES = (ISSUED, ISSUED_REVERSED, REDEEMED, REDEEMED_REVERSED, EXPIRED)
PRICED_CATEGORIES = (ISSUED, ISSUED_REVERSED, REDEEMED, REDEEMED_REVERSED)
REDEEMING_KINDS = ("burn", "capture")

PARTNER_PAYS_HUB = "partner_pays_hub"
HUB_PAYS_PARTNER = "hub_pays_partner"
EVEN = "even"

# Exact products: 19 digits of points times a price of 15 + 12 digits never needs more than
# 46 significant digits, so nothing is rounded before the one half-even rounding.
_EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN)
_MINOR_UNIT = Decimal(1)
_PRICE = re.compile(r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,12})?")


def category_of(kind: str, parent_kind: str | None) -> str:
    """What an entry counts as for the partner; the SQL in `entries.py` mirrors this."""
    if kind == "earn":
        return ISSUED
    if kind in REDEEMING_KINDS:
        return REDEEMED
    if kind == "reverse" and parent_kind == "earn":
        return ISSUED_REVERSED
    if kind == "reverse" and parent_kind in REDEEMING_KINDS:
        return REDEEMED_REVERSED
    if kind == "expire":
        return EXPIRED
    return OTHER


def timestamp_text(moment: datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits, e.g. 2026-01-31T23:59:59.000000Z."""
    # isoformat runs in C; strftime was a third of the cost of hashing an entry. The year is
    # always four digits here (the ledger holds no dates before 1970 or after 9999).
    text = moment.isoformat(timespec="microseconds")
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    assert moment.utcoffset() is not None, "naive datetimes never reach a statement"
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal transaction as a statement lists it."""

    transaction_id: int
    kind: str
    parent_transaction_id: int | None
    parent_kind: str | None
    occurred_at: datetime
    create_time: datetime
    member_id: str
    request_id: str | None  # only the partner's own requests carry theirs
    rate_version_id: str | None
    partner_points: int  # signed sum of its postings on the partner's accounts

    def document(self) -> dict[str, Any]:
        return {
            "transaction_id": str(self.transaction_id),
            "kind": self.kind,
            "parent_transaction_id": _optional_integer(self.parent_transaction_id),
            "parent_kind": self.parent_kind,
            "occurred_at": timestamp_text(self.occurred_at),
            "create_time": timestamp_text(self.create_time),
            "member_id": self.member_id,
            "request_id": self.request_id,
            "rate_version_id": self.rate_version_id,
            "partner_points": str(self.partner_points),
        }

    def canonical_bytes(self) -> bytes:
        """Equal to canonical_bytes(self.document()), written out directly because it runs
        once per entry of statements with millions of them (keys in RFC 8785 order)."""
        parent_transaction_id = _optional_integer(self.parent_transaction_id)
        return (
            f'{{"create_time":"{timestamp_text(self.create_time)}"'
            f',"kind":{canonical_string(self.kind)}'
            f',"member_id":{canonical_string(self.member_id)}'
            f',"occurred_at":"{timestamp_text(self.occurred_at)}"'
            f',"parent_kind":{_optional_string(self.parent_kind)}'
            f',"parent_transaction_id":{_optional_string(parent_transaction_id)}'
            f',"partner_points":"{self.partner_points}"'
            f',"rate_version_id":{_optional_string(self.rate_version_id)}'
            f',"request_id":{_optional_string(self.request_id)}'
            f',"transaction_id":"{self.transaction_id}"}}'
        ).encode()


def _optional_integer(value: int | None) -> str | None:
    return None if value is None else str(value)


def _optional_string(value: str | None) -> str:
    return "null" if value is None else canonical_string(value)


@dataclass(frozen=True)
class Prices:
    issuance_price_minor_per_point: str  # exact decimal text, as the rate version holds it
    redemption_price_minor_per_point: str


@dataclass
class Tally:
    """Points per rate version and category, and the entry count: all a statement sums."""

    entry_count: int = 0
    points: dict[tuple[str | None, str], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, category: str, rate_version_id: str | None, points: int, count: int) -> None:
        self.entry_count += count
        if category == OTHER:
            return
        # Only priced categories are broken down by rate version; expiry moves no money.
        key_version = rate_version_id if category in PRICED_CATEGORIES else None
        self.points[(key_version, category)] += points

    def add_entry(self, entry: Entry) -> None:
        category = category_of(entry.kind, entry.parent_kind)
        self.add(category, entry.rate_version_id, abs(entry.partner_points), 1)

    def rate_version_ids(self) -> list[str | None]:
        return sorted(
            {version for (version, category) in self.points if category in PRICED_CATEGORIES},
            key=lambda version: "" if version is None else version,
        )


class UnpricedEntryError(ValueError):
    """A money-moving entry names no rate version, or one the statement has no price for."""


def summary(tally: Tally, prices: dict[str, Prices]) -> dict[str, Any]:
    """The body fields computed from entries: count, points, money, breakdown."""
    breakdown = [
        _rate_version_summary(tally, version, prices) for version in tally.rate_version_ids()
    ]
    owed_by_partner_minor = sum(int(row["owed_by_partner_minor"]) for row in breakdown)
    owed_by_hub_minor = sum(int(row["owed_by_hub_minor"]) for row in breakdown)
    net_minor = owed_by_partner_minor - owed_by_hub_minor
    direction = PARTNER_PAYS_HUB if net_minor > 0 else HUB_PAYS_PARTNER if net_minor < 0 else EVEN
    return {
        "entry_count": str(tally.entry_count),
        "points": {
            category: str(sum(p for (_, c), p in tally.points.items() if c == category))
            for category in POINT_CATEGORIES
        },
        "money": {
            "owed_by_partner_minor": str(owed_by_partner_minor),
            "owed_by_hub_minor": str(owed_by_hub_minor),
            "net_minor": str(abs(net_minor)),
            "net_direction": direction,
        },
        "rate_versions": breakdown,
    }


def _rate_version_summary(
    tally: Tally, rate_version_id: str | None, prices: dict[str, Prices]
) -> dict[str, Any]:
    if rate_version_id is None or rate_version_id not in prices:
        raise UnpricedEntryError(f"entries of rate version {rate_version_id!r} have no price")
    price = prices[rate_version_id]
    points = {
        category: tally.points.get((rate_version_id, category), 0) for category in PRICED_CATEGORIES
    }
    points_issued_net = points[ISSUED] - points[ISSUED_REVERSED]
    points_redeemed_net = points[REDEEMED] - points[REDEEMED_REVERSED]
    return {
        "rate_version_id": rate_version_id,
        "issuance_price_minor_per_point": price.issuance_price_minor_per_point,
        "redemption_price_minor_per_point": price.redemption_price_minor_per_point,
        "points": {category: str(value) for category, value in points.items()},
        "owed_by_partner_minor": str(
            money_minor(points_issued_net, price.issuance_price_minor_per_point)
        ),
        "owed_by_hub_minor": str(
            money_minor(points_redeemed_net, price.redemption_price_minor_per_point)
        ),
    }


def money_minor(points: int, price_minor_per_point: str) -> int:
    """points x price, rounded once, half to even, to a whole minor unit (DESIGN.md)."""
    exact = _EXACT.multiply(Decimal(points), Decimal(price_minor_per_point))
    return int(exact.quantize(_MINOR_UNIT, rounding=ROUND_HALF_EVEN, context=_EXACT))


def prices_of(body: dict[str, Any]) -> dict[str, Prices]:
    """The prices a statement declares, each checked to be a plain non-negative decimal."""
    prices = {}
    for row in body["rate_versions"]:
        price = Prices(
            row["issuance_price_minor_per_point"], row["redemption_price_minor_per_point"]
        )
        for text in (price.issuance_price_minor_per_point, price.redemption_price_minor_per_point):
            if not isinstance(text, str) or not _PRICE.fullmatch(text):
                raise UnpricedEntryError(f"price {text!r} is not a plain decimal such as '4.5'")
        prices[row["rate_version_id"]] = price
    return prices


@dataclass(frozen=True)
class StatementHeader:
    """The body fields that do not come from the entries."""

    statement_id: str
    partner_id: str
    currency: str
    sequence_number: int
    period_last_day: date
    period_end_time: datetime
    generate_time: datetime
    previous_statement_hash: str
    signing_key_id: str


def statement_body(
    header: StatementHeader, totals: dict[str, Any], merkle_root: str
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "statement_id": header.statement_id,
        "partner_id": header.partner_id,
        "currency": header.currency,
        "sequence_number": str(header.sequence_number),
        "period": {
            "last_day": header.period_last_day.isoformat(),
            "end_time": timestamp_text(header.period_end_time),
        },
        "generate_time": timestamp_text(header.generate_time),
        "merkle_root": merkle_root,
        "previous_statement_hash": header.previous_statement_hash,
        "signing_key_id": header.signing_key_id,
        **totals,
    }

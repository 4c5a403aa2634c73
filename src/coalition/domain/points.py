"""Points and money arithmetic. Exact only: each rate is its integer ratio (a Decimal is one
exactly), each result one integer division; rounding is explicit at each use.

Rounding rules (the product contract):
- points earned round down, so rounding never creates points;
- points needed to pay a value round up, so rounding never gives value away;
- the value of a number of points rounds down, for the same reason.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from coalition.domain.currency import minor_units_per_major_unit

# Bounds on one operation, so that no sum of a few million operations can overflow int64.
POINTS_PER_OPERATION_MAX = 10**12
AMOUNT_MINOR_MAX = 10**15


@dataclass(frozen=True)
class RateVersion:
    """A partner's exchange rates from `effective_from` until the next version's."""

    rate_version_id: str
    partner_id: str
    effective_from: datetime
    earn_points_per_unit: Decimal
    native_points_rate: Decimal | None
    burn_value_minor_per_point: Decimal
    issuance_price_minor_per_point: Decimal
    redemption_price_minor_per_point: Decimal

    def __post_init__(self) -> None:
        assert self.effective_from.tzinfo is not None, "effective_from must be aware"
        assert self.earn_points_per_unit > 0
        assert self.burn_value_minor_per_point > 0
        assert self.native_points_rate is None or self.native_points_rate > 0


def points_for_spend(amount_minor: int, currency: str, rate: RateVersion) -> int:
    """Points earned for a purchase of `amount_minor`, rounded down."""
    assert amount_minor >= 0
    numerator, denominator = rate.earn_points_per_unit.as_integer_ratio()
    return amount_minor * numerator // (minor_units_per_major_unit(currency) * denominator)


def points_for_native_points(native_points: int, native_points_rate: Decimal) -> int:
    """Coalition points for a partner's own points, rounded down."""
    assert native_points >= 0
    numerator, denominator = native_points_rate.as_integer_ratio()
    return native_points * numerator // denominator


def points_for_value(value_minor: int, rate: RateVersion) -> int:
    """Points needed to pay `value_minor` at the partner's burn rate, rounded up."""
    assert value_minor >= 0
    numerator, denominator = rate.burn_value_minor_per_point.as_integer_ratio()
    return -(-value_minor * denominator // numerator)  # the ceiling of the exact quotient


def value_minor_of_points(points: int, rate: RateVersion) -> int:
    """The partner value of `points` at redemption, in minor units, rounded down."""
    assert points >= 0
    numerator, denominator = rate.burn_value_minor_per_point.as_integer_ratio()
    return points * numerator // denominator


@dataclass(frozen=True)
class Money:
    amount_minor: int
    currency: str  # ISO 4217


def lot_expiry(earned_at: datetime, validity_months: int | None) -> datetime | None:
    """When a lot earned at `earned_at` expires: the same day `validity_months` later, or the
    last day of that month when it is shorter (31 January + 1 month = 28/29 February)."""
    if validity_months is None:
        return None
    assert validity_months > 0
    month_index = earned_at.month - 1 + validity_months
    year, month = earned_at.year + month_index // 12, month_index % 12 + 1
    day = min(earned_at.day, calendar.monthrange(year, month)[1])
    return earned_at.replace(year=year, month=month, day=day)

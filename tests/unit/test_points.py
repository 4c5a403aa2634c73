"""The money math: exact, and rounding never creates points or gives value away."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.domain import points as rules
from coalition.domain.currency import MINOR_UNIT_EXPONENTS

pytestmark = pytest.mark.unit

rates = st.decimals(
    min_value=Decimal("0.000000000001"), max_value=Decimal("1000"), places=12, allow_nan=False
)
amounts_minor = st.integers(min_value=0, max_value=rules.AMOUNT_MINOR_MAX)
currencies = st.sampled_from(sorted(MINOR_UNIT_EXPONENTS))


def rate_version(earn: Decimal = Decimal("0.1"), burn: Decimal = Decimal("7")) -> rules.RateVersion:
    return rules.RateVersion(
        rate_version_id="p@2025",
        partner_id="p",
        effective_from=datetime(2025, 1, 1, tzinfo=UTC),
        earn_points_per_unit=earn,
        native_points_rate=None,
        burn_value_minor_per_point=burn,
        issuance_price_minor_per_point=Decimal("8"),
        redemption_price_minor_per_point=Decimal("6"),
    )


@pytest.mark.parametrize(
    ("amount_minor", "currency", "earn", "points"),
    [
        (1999, "CNY", "0.1", 1),  # 19.99 CNY at 1 point per 10 CNY
        (1000, "CNY", "0.1", 1),
        (999, "CNY", "0.1", 0),
        (1999, "CNY", "0.2", 3),
        (1000, "JPY", "0.01", 10),  # JPY has no minor unit
        (1000, "KWD", "1", 1),  # KWD has three decimals
        (10**15, "EUR", "1000", 10**16),
    ],
)
def test_points_for_spend_examples(
    amount_minor: int, currency: str, earn: str, points: int
) -> None:
    rate = rate_version(earn=Decimal(earn))
    assert rules.points_for_spend(amount_minor, currency, rate) == points


@given(amount_minor=amounts_minor, currency=currencies, earn=rates)
def test_earned_points_never_exceed_the_exact_value(
    amount_minor: int, currency: str, earn: Decimal
) -> None:
    exact = Fraction(amount_minor, 10 ** MINOR_UNIT_EXPONENTS[currency]) * Fraction(earn)
    points = rules.points_for_spend(amount_minor, currency, rate_version(earn=earn))
    assert points <= exact < points + 1


@given(value_minor=amounts_minor, burn=rates)
def test_points_for_a_value_always_pay_for_it_and_no_more(value_minor: int, burn: Decimal) -> None:
    rate = rate_version(burn=burn)
    points = rules.points_for_value(value_minor, rate)
    assert points * Fraction(burn) >= value_minor
    assert points == 0 or (points - 1) * Fraction(burn) < value_minor


@given(points=st.integers(min_value=0, max_value=rules.POINTS_PER_OPERATION_MAX), burn=rates)
def test_value_of_points_is_never_more_than_their_worth(points: int, burn: Decimal) -> None:
    value_minor = rules.value_minor_of_points(points, rate_version(burn=burn))
    assert value_minor <= points * Fraction(burn) < value_minor + 1


@given(native_points=st.integers(min_value=0, max_value=10**12), native_rate=rates)
def test_native_conversion_rounds_down(native_points: int, native_rate: Decimal) -> None:
    points = rules.points_for_native_points(native_points, native_rate)
    assert points <= native_points * Fraction(native_rate) < points + 1


@given(
    split=st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=20),
    currency=currencies,
    earn=rates,
)
def test_splitting_a_purchase_never_earns_more(
    split: list[int], currency: str, earn: Decimal
) -> None:
    rate = rate_version(earn=earn)
    points_split = sum(rules.points_for_spend(part, currency, rate) for part in split)
    assert points_split <= rules.points_for_spend(sum(split), currency, rate)


@pytest.mark.parametrize(
    ("earned_at", "months", "expires_at"),
    [
        (datetime(2026, 1, 31, 12, tzinfo=UTC), 1, datetime(2026, 2, 28, 12, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), 1, datetime(2024, 2, 29, tzinfo=UTC)),
        (datetime(2026, 11, 15, tzinfo=UTC), 24, datetime(2028, 11, 15, tzinfo=UTC)),
        (datetime(2026, 12, 1, tzinfo=UTC), 1, datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_lot_expiry_adds_calendar_months(
    earned_at: datetime, months: int, expires_at: datetime
) -> None:
    assert rules.lot_expiry(earned_at, months) == expires_at


def test_lot_without_validity_never_expires() -> None:
    assert rules.lot_expiry(datetime(2026, 1, 1, tzinfo=UTC), None) is None


@given(
    earned_at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    months=st.integers(1, 120),
)
def test_lot_expiry_is_later_and_within_the_target_month(earned_at: datetime, months: int) -> None:
    expires_at = rules.lot_expiry(earned_at, months)
    assert expires_at is not None and expires_at > earned_at
    assert (expires_at.year - earned_at.year) * 12 + expires_at.month - earned_at.month == months


def test_request_fingerprints_keep_the_stored_shape() -> None:
    """Fingerprints are stored with each claim and compared on every retry, so their shape is
    a stored format: a change would make a retry after an upgrade REQUEST_ID_REUSED."""
    from coalition.domain.points import Money
    from coalition.identity.members import MemberReference
    from coalition.operations.points import (
        BurnCommand,
        EarnCommand,
        ReverseCommand,
        _fingerprint,
    )

    occurred_at = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    earn = EarnCommand(
        "r1",
        MemberReference(partner_customer_id="c-9"),
        Money(1250, "CNY"),
        None,
        occurred_at,
        "till-4",
    )
    burn = BurnCommand("r2", MemberReference(member_id="m1"), points=40)
    reverse = ReverseCommand("r3", 17, 0, "refund")

    assert _fingerprint(earn) == {
        "member.partner_customer_id": "c-9",
        "spend.amount_minor": 1250,
        "spend.currency": "CNY",
        "native_points": None,
        "occurred_at": "2026-03-01T12:30:00+00:00",
        "partner_reference": "till-4",
    }
    assert _fingerprint(burn) == {
        "member.member_id": "m1",
        "points": 40,
        "value": None,
        "occurred_at": None,
        "partner_reference": None,
    }
    assert _fingerprint(reverse) == {"transaction_id": 17, "points": 0, "reason": "refund"}

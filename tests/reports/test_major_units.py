"""Money on the report page: major units with the currency's own number of decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.domain.currency import MINOR_UNIT_EXPONENTS
from coalition.reports.build import major_units, price_major_units

pytestmark = pytest.mark.unit

CURRENCIES = sorted(MINOR_UNIT_EXPONENTS)


def test_each_currency_keeps_its_own_decimals() -> None:
    assert major_units(123456, "EUR") == "1234.56"
    assert major_units(123456, "JPY") == "123456"
    assert major_units(123456, "BHD") == "123.456"
    assert major_units(-5, "EUR") == "-0.05"
    assert price_major_units("0.8", "EUR") == "0.008"
    assert price_major_units("4.5", "JPY") == "4.5"
    assert price_major_units("12", "BHD") == "0.012"
    assert price_major_units("0", "EUR") == "0"


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(CURRENCIES))
def test_major_units_are_the_minor_units_exactly(amount_minor: int, currency: str) -> None:
    exponent = MINOR_UNIT_EXPONENTS[currency]
    text = major_units(amount_minor, currency)
    assert Decimal(text).scaleb(exponent) == amount_minor
    assert len(text.partition(".")[2]) == exponent


@given(
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False),
    st.sampled_from(CURRENCIES),
)
def test_a_price_per_point_is_exact(price_minor: Decimal, currency: str) -> None:
    text = price_major_units(str(price_minor), currency)
    assert "E" not in text
    assert Decimal(text).scaleb(MINOR_UNIT_EXPONENTS[currency]) == price_minor

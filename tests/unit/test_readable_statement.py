"""Statements for a reader (settlement/readable.py): major units per currency, who owes whom,
and a group summary that never adds one currency to another."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.domain.currency import MINOR_UNIT_EXPONENTS
from coalition.settlement import readable

pytestmark = pytest.mark.unit

CATEGORIES = ("issued", "issued_reversed", "redeemed", "redeemed_reversed", "expired")


def body(partner_id: str, currency: str, owed_by_partner: int, owed_by_hub: int) -> dict[str, Any]:
    net = owed_by_partner - owed_by_hub
    direction = "partner_pays_hub" if net > 0 else "hub_pays_partner" if net < 0 else "even"
    return {
        "statement_id": f"{partner_id}-20261130",
        "partner_id": partner_id,
        "currency": currency,
        "entry_count": "3",
        "sequence_number": "1",
        "signing_key_id": "ab" * 32,
        "period": {"last_day": "2026-11-30", "end_time": "2026-12-01T00:00:00.000000Z"},
        "points": {category: str(index * 10) for index, category in enumerate(CATEGORIES)},
        "money": {
            "owed_by_partner_minor": str(owed_by_partner),
            "owed_by_hub_minor": str(owed_by_hub),
            "net_minor": str(abs(net)),
            "net_direction": direction,
        },
        "rate_versions": [
            {
                "rate_version_id": f"{partner_id}@2025-01-01T00:00:00Z",
                "issuance_price_minor_per_point": "7.5",
                "redemption_price_minor_per_point": "6.5",
                "points": {category: "10" for category in CATEGORIES[:4]},
                "owed_by_partner_minor": str(owed_by_partner),
                "owed_by_hub_minor": str(owed_by_hub),
            }
        ],
    }


@given(
    st.integers(min_value=0, max_value=10**15),
    st.sampled_from(sorted(MINOR_UNIT_EXPONENTS)),
)
def test_major_units_read_back_to_the_minor_amount(amount_minor: int, currency: str) -> None:
    text = readable.major(amount_minor, currency)
    number, code = text.split(" ")
    assert code == currency
    exponent = MINOR_UNIT_EXPONENTS[currency]
    assert Decimal(number.replace(",", "")).scaleb(exponent) == amount_minor
    assert ("." in number) == (exponent > 0)


def test_major_units_follow_each_currency_s_exponent() -> None:
    assert readable.major(123_456, "CNY") == "1,234.56 CNY"
    assert readable.major(123_456, "JPY") == "123,456 JPY"
    assert readable.major(123_456, "BHD") == "123.456 BHD"


def test_the_net_says_who_pays_whom() -> None:
    assert readable.net_sentence(body("p", "EUR", 500, 200), "P") == "P pays the hub 3.00 EUR"
    assert readable.net_sentence(body("p", "EUR", 200, 500), "P") == "The hub pays P 3.00 EUR"
    assert "even" in readable.net_sentence(body("p", "EUR", 200, 200), "P")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["CNY", "EUR", "JPY"]),
            st.integers(min_value=0, max_value=10**12),
            st.integers(min_value=0, max_value=10**12),
        ),
        max_size=12,
    )
)
def test_group_totals_add_up_per_currency_and_never_across(
    rows: list[tuple[str, int, int]],
) -> None:
    bodies = [body(f"p{i}", c, owed, paid) for i, (c, owed, paid) in enumerate(rows)]
    totals = {t.currency: t for t in readable.group_totals(bodies)}
    assert sorted(totals) == sorted({currency for currency, _, _ in rows})
    for currency, t in totals.items():
        mine = [(owed, paid) for c, owed, paid in rows if c == currency]
        assert t.partners == len(mine)
        assert t.owed_by_partners_minor == sum(owed for owed, _ in mine)
        assert t.owed_by_hub_minor == sum(paid for _, paid in mine)
        assert t.net_to_hub_minor == t.owed_by_partners_minor - t.owed_by_hub_minor


def test_the_page_names_the_signed_json_and_its_hash_and_escapes_what_it_shows() -> None:
    document = {
        "body": body("larkspur-coffee", "CNY", 22_460, 36_649),
        "signature": "c2ln",
        "statement_hash": "f" * 64,
    }
    page = readable.statement_html(json.loads(json.dumps(document)), "Coffee <&> Co")
    assert "f" * 64 in page and "statement.json" in page and "signed" in page
    assert "Coffee &lt;&amp;&gt; Co" in page and "<&>" not in page
    assert "224.60 CNY" in page and "366.49 CNY" in page
    assert "The hub pays Coffee &lt;&amp;&gt; Co 141.89 CNY" in page
    assert "larkspur-coffee@2025-01-01T00:00:00Z" in page


def test_the_group_page_shows_every_statement_and_each_currency() -> None:
    documents = [
        {"body": body("a", "CNY", 100, 0), "statement_hash": "1" * 64},
        {"body": body("b", "EUR", 0, 250), "statement_hash": "2" * 64},
    ]
    page = readable.group_summary_html("2026-11", documents, {"a": "Alpha"})
    assert "1" * 64 in page and "2" * 64 in page and "Alpha" in page
    assert "partners pay the hub 1.00 CNY" in page
    assert "the hub pays partners 2.50 EUR" in page

"""Statement arithmetic without a database: categories, half-even money, totals."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, date, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coalition.settlement import signing
from coalition.settlement.canonical import canonical_bytes
from coalition.settlement.format import (
    EVEN,
    GENESIS_HASH,
    HUB_PAYS_PARTNER,
    Entry,
    Prices,
    StatementHeader,
    Tally,
    UnpricedEntryError,
    category_of,
    money_minor,
    statement_body,
    summary,
)
from coalition.settlement.merkle import MerkleAccumulator

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("points", "price", "expected_minor"),
    [
        (5, "0.5", 2),  # 2.5 -> 2: half to even, not half up
        (7, "0.5", 4),  # 3.5 -> 4
        (-5, "0.5", -2),  # reversals of earlier periods round symmetrically
        (3, "0.3333", 1),
        (0, "6.0", 0),
        # 19 digits of points x 27 digits of price: exact, no 28-digit context rounding.
        (10**18 + 1, "123456789012345.123456789012", 123456789012345123580245801012345),
    ],
)
def test_money_is_rounded_once_half_to_even(points: int, price: str, expected_minor: int) -> None:
    assert money_minor(points, price) == expected_minor


@pytest.mark.parametrize(
    ("kind", "parent_kind", "category"),
    [
        ("earn", None, "issued"),
        ("burn", None, "redeemed"),
        ("capture", None, "redeemed"),
        ("reverse", "earn", "issued_reversed"),
        ("reverse", "burn", "redeemed_reversed"),
        ("reverse", "capture", "redeemed_reversed"),
        ("expire", None, "expired"),
        ("hold", None, "other"),
        ("merge", None, "other"),
    ],
)
def test_categories(kind: str, parent_kind: str | None, category: str) -> None:
    assert category_of(kind, parent_kind) == category


def test_money_is_computed_per_rate_version_then_summed() -> None:
    tally = Tally()
    # 1 point at 0.5 twice rounds to 0 + 0 per version, never to 1 on the combined 1.0.
    tally.add("issued", "v1", 1, 1)
    tally.add("issued", "v2", 1, 1)
    tally.add("redeemed", "v2", 3, 1)
    tally.add("expired", None, 9, 1)
    tally.add("other", None, 0, 1)
    prices = {"v1": Prices("0.5", "1"), "v2": Prices("0.5", "1")}
    result = summary(tally, prices)
    assert result["entry_count"] == "5"
    assert result["points"] == {
        "issued": "2",
        "issued_reversed": "0",
        "redeemed": "3",
        "redeemed_reversed": "0",
        "expired": "9",
    }
    assert result["money"] == {
        "owed_by_partner_minor": "0",
        "owed_by_hub_minor": "3",
        "net_minor": "3",
        "net_direction": HUB_PAYS_PARTNER,
    }
    assert [row["rate_version_id"] for row in result["rate_versions"]] == ["v1", "v2"]


def test_an_empty_statement_owes_nothing() -> None:
    result = summary(Tally(), {})
    assert result["money"]["net_direction"] == EVEN
    assert result["rate_versions"] == []


def test_a_priced_entry_without_a_price_is_refused() -> None:
    tally = Tally()
    tally.add("issued", None, 1, 1)
    with pytest.raises(UnpricedEntryError):
        summary(tally, {})


def test_worked_example_of_docs_settlement_md() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public_key = signing.raw_public_key(key)
    version = "test-coffee@2026-01-01T00:00:00Z"
    entries = [
        Entry(41, "earn", None, None, at(2026, 1, 10, 12), at(2026, 1, 10, 12, 0, 0, 250_000),
              "m-7f3a", "pos-1001", version, -20),
        Entry(42, "burn", None, None, at(2026, 1, 12, 9, 30), at(2026, 1, 12, 9, 30, 1),
              "m-7f3a", "pos-1002", version, 5),
    ]  # fmt: skip
    merkle, tally = MerkleAccumulator(), Tally()
    for entry in entries:
        merkle.add_entry(entry.canonical_bytes())
        tally.add_entry(entry)
    header = StatementHeader(
        statement_id="test-coffee-20260131",
        partner_id="test-coffee",
        currency="CNY",
        sequence_number=1,
        period_last_day=date(2026, 1, 31),
        period_end_time=at(2026, 2, 1),
        generate_time=at(2026, 2, 1, 0, 5),
        previous_statement_hash=GENESIS_HASH,
        signing_key_id=signing.key_id_of(public_key),
    )
    totals = summary(tally, {version: Prices("6.0", "4.5")})
    body = canonical_bytes(statement_body(header, totals, merkle.root().hex()))
    assert base64.b64encode(public_key).decode() == "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
    assert merkle.root().hex() == (
        "d316da2ef689dbf3baa00a684e3b320da3f653b31355ee206d501dc59f1fb488"
    )
    assert hashlib.sha256(body).hexdigest() == (
        "0220c68aad0a0aa6794189abf1b2ee183d351114d305477a880ac064c6e4c627"
    )
    assert base64.b64encode(signing.sign_statement(key, body)).decode() == (
        "bn7mo6J1klqVFjDFBwO/SqApT2LPw9/murav0s6bCxst2R64j/6Lcp+EHe4+SIgcwOKmsC+dBkqzjDuWt6KmAw=="
    )


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]

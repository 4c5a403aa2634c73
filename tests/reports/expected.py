"""The report's figures computed from the Python model alone (no SQL)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from coalition.reports.period import Period
from tests.reports.ledger_model import PARTNERS, Model

# tests/conftest.py: redemption price 0.9 x burn value, issuance price 1.2 x burn value
BURN_VALUE = {"test-coffee": Decimal("5"), "test-air": Decimal("1"), "test-cinema": Decimal("0.85")}


def ratio(numerator: int, denominator: int) -> str:
    if not denominator:
        return ""
    return str((Decimal(numerator) / denominator).quantize(Decimal("0.0001"), ROUND_HALF_EVEN))


def money(points: int, price: Decimal) -> int:
    return int((points * price).to_integral_value(ROUND_HALF_EVEN))


def outstanding(model: Model, issuer: str, end: datetime) -> int:
    issued = sum(lot.points for lot in model.lots if lot.issuer == issuer and lot.created < end)
    burned = sum(p for i, _, at, p in model.consumptions if i == issuer and at < end)
    expired = sum(p for lot, at, p in model.expiries if lot.issuer == issuer and at < end)
    return issued - burned - expired


def liability(model: Model, periods: list[Period]) -> list[tuple[str, str, int]]:
    issuers = sorted({lot.issuer for lot in model.lots if lot.created < periods[-1].end})
    return [
        (period.label, issuer, outstanding(model, issuer, period.end))
        for issuer in issuers
        for period in periods
    ]


def liability_value(model: Model, period: Period) -> dict[str, int]:
    return {
        issuer: money(points, Decimal("0.9") * BURN_VALUE[issuer])
        for _, issuer, points in liability(model, [period])
    }


def breakage(model: Model, end: datetime, by_cohort: bool) -> list[tuple[str, int, int, str]]:
    issued: dict[str, int] = defaultdict(int)
    expired: dict[str, int] = defaultdict(int)
    for lot in model.lots:
        if lot.created < end:
            issued[lot.created.strftime("%Y-%m") if by_cohort else lot.issuer] += lot.points
    for lot, at, points in model.expiries:
        if at < end:
            expired[lot.created.strftime("%Y-%m") if by_cohort else lot.issuer] += points
    return [
        (key, issued[key], expired[key], ratio(expired[key], issued[key])) for key in sorted(issued)
    ]


def flows(model: Model, period: Period) -> list[tuple[str, str, int]]:
    matrix: dict[tuple[str, str], int] = defaultdict(int)
    for issuer, redeemer, at, points in model.consumptions:
        if period.start <= at < period.end:
            matrix[(issuer, redeemer)] += points
    return [(a, b, p) for (a, b), p in sorted(matrix.items()) if p]


def settlement(model: Model, period: Period) -> list[tuple[str, int, int, int, int, int, str]]:
    # (partner, rate version index, kind) -> points; prices do not change between versions here
    totals: dict[tuple[str, int, str], int] = defaultdict(int)
    for _, partner_id, kind, at, points in model.transactions:
        if period.start <= at < period.end:
            version = sum(1 for since, _ in PARTNERS[partner_id][2] if since <= at)
            totals[(partner_id, version, kind)] += points
    rows = []
    for partner_id in sorted({key[0] for key in totals}):
        issued = sum(p for (q, _, k), p in totals.items() if q == partner_id and k == "earn")
        redeemed = sum(p for (q, _, k), p in totals.items() if q == partner_id and k == "burn")
        owed_by = sum(
            money(p, Decimal("1.2") * BURN_VALUE[q])
            for (q, _, k), p in totals.items()
            if q == partner_id and k == "earn"
        )
        owed_to = sum(
            money(p, Decimal("0.9") * BURN_VALUE[q])
            for (q, _, k), p in totals.items()
            if q == partner_id and k == "burn"
        )
        currency = PARTNERS[partner_id][0]
        rows.append((partner_id, issued, redeemed, owed_by, owed_to, owed_by - owed_to, currency))
    return rows


def metrics(model: Model, period: Period) -> dict[str, str]:
    previous = period.previous()

    def active(of: Period) -> set[str]:
        return {m for m, _, _, at, _ in model.transactions if of.start <= at < of.end}

    def of_kind(kind: str) -> list[int]:
        return [
            p
            for _, _, k, at, p in model.transactions
            if k == kind and period.start <= at < period.end
        ]

    new = sum(1 for at in model.member_created.values() if period.start <= at < period.end)
    before = sum(1 for at in model.member_created.values() if at < period.start)
    now_active, previous_active = active(period), active(previous)
    earns, burns = of_kind("earn"), of_kind("burn")

    def average(values: list[int]) -> str:
        if not values:
            return ""
        return str((Decimal(sum(values)) / len(values)).quantize(Decimal("0.01"), ROUND_HALF_EVEN))

    return {
        "new_members": str(new),
        "members_at_start": str(before),
        "member_growth_rate": ratio(new, before),
        "active_members": str(len(now_active)),
        "active_members_previous": str(len(previous_active)),
        "retained_members": str(len(now_active & previous_active)),
        "retention_rate": ratio(len(now_active & previous_active), len(previous_active)),
        "promotion_participants": "0",  # the default programme runs no promotions
        "earn_count": str(len(earns)),
        "points_earned": str(sum(earns)),
        "average_points_per_earn": average(earns),
        "burn_count": str(len(burns)),
        "points_burned": str(sum(burns)),
        "average_points_per_burn": average(burns),
    }

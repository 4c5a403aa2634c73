"""Assemble the report tables of a period from the queries, and write them out."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from coalition.reports import queries
from coalition.reports.period import Period, trailing_periods
from coalition.store.unit_of_work import UnitOfWork

TREND_PERIODS = 6  # the liability trend: this period and the five before it
RATIO_PLACES = Decimal("0.0001")
AVERAGE_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    definitions: dict[str, str] = field(default_factory=dict)  # row label -> definition

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Report:
    period: Period
    partner_id: str | None
    generate_time: datetime
    tables: dict[str, Table]


def ratio(numerator: int, denominator: int) -> str:
    """A ratio as a fixed 4-place decimal string; empty when undefined (nothing to divide by)."""
    if denominator == 0:
        return ""
    return str((Decimal(numerator) / Decimal(denominator)).quantize(RATIO_PLACES, ROUND_HALF_EVEN))


def average(total: int, count: int) -> str:
    if count == 0:
        return ""
    return str((Decimal(total) / Decimal(count)).quantize(AVERAGE_PLACES, ROUND_HALF_EVEN))


def money_minor(points: int, price_minor_per_point: str) -> int:
    return int((points * Decimal(price_minor_per_point)).to_integral_value(ROUND_HALF_EVEN))


def build_report(uow: UnitOfWork, period: Period, partner_id: str | None, now: datetime) -> Report:
    periods = trailing_periods(period, TREND_PERIODS)
    trend = queries.liability_trend(uow, periods, partner_id)
    tables = [
        _liability(uow, period, trend, now),
        Table(
            "liability_trend",
            "Liability trend: outstanding points at the end of each period",
            ("period", "partner_id", "outstanding_points"),
            [(point.period_label, point.partner_id, point.outstanding_points) for point in trend],
        ),
        _breakage(uow, period, partner_id, by_cohort=True),
        _breakage(uow, period, partner_id, by_cohort=False),
        Table(
            "flow_matrix",
            "Cross-brand flow: points issued at one partner, redeemed at another",
            ("issuer_partner_id", "redeemer_partner_id", "points"),
            [tuple(row) for row in queries.flow_matrix(uow, period, partner_id)],
        ),
        _settlement_positions(uow, period, partner_id),
        _programme_metrics(uow, period, partner_id),
    ]
    return Report(period, partner_id, now, {table.name: table for table in tables})


def _liability(
    uow: UnitOfWork, period: Period, trend: list[queries.LiabilityPoint], now: datetime
) -> Table:
    prices = queries.current_redemption_prices(uow, now)
    rows = []
    for point in trend:
        if point.period_label != period.label:
            continue
        price, currency = prices.get(point.partner_id, ("0", ""))
        rows.append(
            (
                point.partner_id,
                point.outstanding_points,
                price,
                money_minor(point.outstanding_points, price),
                currency,
            )
        )
    return Table(
        "liability",
        "Liability: outstanding points by issuing partner at the end of the period",
        (
            "partner_id",
            "outstanding_points",
            "redemption_price_minor_per_point",
            "value_minor",
            "currency",
        ),
        rows,
    )


def _breakage(uow: UnitOfWork, period: Period, partner_id: str | None, by_cohort: bool) -> Table:
    rows = [
        (key, issued, expired, ratio(expired, issued))
        for key, issued, expired in queries.breakage(uow, period.end, partner_id, by_cohort)
    ]
    name, key = (
        ("breakage_by_cohort", "earn_month") if by_cohort else ("breakage_by_partner", "partner_id")
    )
    title = "Breakage by earn-month cohort" if by_cohort else "Breakage by issuing partner"
    return Table(
        name,
        f"{title}: expired over issued, as of the end of the period",
        (key, "issued_points", "expired_points", "breakage_rate"),
        rows,
    )


def _settlement_positions(uow: UnitOfWork, period: Period, partner_id: str | None) -> Table:
    """Points issued and redeemed in the period and the money they move at each rate
    version's prices (half-even per rate version, like settlement statements)."""
    prices = queries.rate_version_prices(uow)
    currencies = queries.partner_currencies(uow)
    totals: dict[str, list[int]] = {}
    for partner, kind, rate_version_id, points in queries.settlement_totals(
        uow, period, partner_id
    ):
        issuance_price, redemption_price = prices.get(rate_version_id or "", ("0", "0"))
        row = totals.setdefault(partner, [0, 0, 0, 0])
        if kind == "partner_issuance":
            row[0] += -points
            row[2] += money_minor(-points, issuance_price)
        else:
            row[1] += points
            row[3] += money_minor(points, redemption_price)
    rows = [
        (p, issued, redeemed, owed_by, owed_to, owed_by - owed_to, currencies.get(p, ""))
        for p, (issued, redeemed, owed_by, owed_to) in sorted(totals.items())
    ]
    return Table(
        "settlement_positions",
        "Net settlement position of each partner in the period",
        (
            "partner_id",
            "issued_points",
            "redeemed_points",
            "owed_by_partner_minor",
            "owed_to_partner_minor",
            "net_owed_by_partner_minor",
            "currency",
        ),
        rows,
    )


def _programme_metrics(uow: UnitOfWork, period: Period, partner_id: str | None) -> Table:
    members_before, members_new = queries.member_counts(uow, period)
    active, active_previous, retained = queries.activity_counts(uow, period, partner_id)
    participants, converted = queries.promotion_counts(uow, period, partner_id)
    earns, points_earned = queries.kind_totals(uow, period, queries.EARN_KINDS, partner_id)
    burns, points_burned = queries.kind_totals(uow, period, queries.BURN_KINDS, partner_id)
    metrics: list[tuple[str, Any, str]] = [
        ("new_members", members_new, "members enrolled in the period (coalition-wide)"),
        ("members_at_start", members_before, "members enrolled before the period"),
        (
            "member_growth_rate",
            ratio(members_new, members_before),
            "new_members / members_at_start",
        ),
        ("active_members", active, "distinct members with an earn, burn or capture in the period"),
        ("active_members_previous", active_previous, "active_members of the previous period"),
        ("retained_members", retained, "members active in both this and the previous period"),
        (
            "retention_rate",
            ratio(retained, active_previous),
            "retained_members / active_members_previous",
        ),
        (
            "promotion_participants",
            participants,
            "distinct members whose earn in the period got a promotion bonus",
        ),
        (
            "promotion_participation_rate",
            ratio(participants, active),
            "promotion_participants / active_members",
        ),
        (
            "promotion_converted",
            converted,
            "promotion participants who also burned (anywhere) in the period",
        ),
        (
            "promotion_conversion_rate",
            ratio(converted, participants),
            "promotion_converted / promotion_participants",
        ),
        ("earn_count", earns, "earn transactions in the period"),
        ("points_earned", points_earned, "points credited by those earns (bonuses included)"),
        ("average_points_per_earn", average(points_earned, earns), "points_earned / earn_count"),
        ("burn_count", burns, "burn and capture transactions in the period"),
        ("points_burned", points_burned, "points debited by those burns and captures"),
        ("average_points_per_burn", average(points_burned, burns), "points_burned / burn_count"),
    ]
    referrals = queries.referral_counts(uow, period)
    if referrals is not None:
        made, rewarded = referrals
        metrics += [
            ("referrals_made", made, "members enrolled in the period with a referral code"),
            (
                "referrals_converted",
                rewarded,
                "of those, referrals whose bonus was paid by the period's end",
            ),
            (
                "referral_conversion_rate",
                ratio(rewarded, made),
                "referrals_converted / referrals_made",
            ),
        ]
    return Table(
        "programme_metrics",
        "Programme metrics",
        ("metric", "value"),
        [(name, value) for name, value, _ in metrics],
        {name: definition for name, _, definition in metrics},
    )


def write_report(report: Report, directory: Path) -> list[Path]:
    """`<table>.csv` and `<table>.json` for every table, and `report.html`."""
    from coalition.reports.html import render_html

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for table in report.tables.values():
        csv_path = directory / f"{table.name}.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(table.columns)
            writer.writerows(table.rows)
        json_path = directory / f"{table.name}.json"
        document = {
            "table": table.name,
            "period": report.period.label,
            "partner_id": report.partner_id,
            "columns": list(table.columns),
            "rows": table.records(),
        }
        json_path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        written += [csv_path, json_path]
    html_path = directory / "report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return [*written, html_path]

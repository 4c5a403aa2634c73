"""Assemble the report tables of a period from the queries, and write them out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from coalition.domain.currency import MINOR_UNIT_EXPONENTS
from coalition.reports import queries
from coalition.reports.period import Period, trailing_periods
from coalition.store import citus
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
    headline: str = ""  # one sentence a reader takes away
    # In the CSV and JSON (a published contract) but not on the page: the minor-unit columns
    # whose major-unit twins the page shows instead.
    machine_columns: frozenset[str] = frozenset()

    @property
    def page_columns(self) -> tuple[str, ...]:
        return tuple(column for column in self.columns if column not in self.machine_columns)

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
    if uow.is_citus:
        citus.allow_repartition_joins(uow.connection)
        citus.one_connection_per_node(uow.connection)
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
        *_promotion_tables(uow, period, partner_id),
        _spend_per_visit(uow, period, partner_id),
        _contribution_share(uow, period, partner_id),
        *_tier_tables(uow, period, now),
    ]
    return Report(period, partner_id, now, {table.name: _with_headline(table) for table in tables})


def _count_of(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _with_headline(table: Table) -> Table:
    """The sentence a reader takes from a table that has none of its own."""
    if table.headline:
        return table
    if table.name == "liability":
        text = (
            f"{sum(row[1] for row in table.rows):,} points outstanding at the period's end, "
            f"issued by {_count_of(len(table.rows), 'partner')}."
        )
    elif table.name == "breakage_by_partner":
        issued, expired = sum(row[1] for row in table.rows), sum(row[2] for row in table.rows)
        rate = ratio(expired, issued) or "no"
        text = f"{expired:,} of {issued:,} points issued have expired (rate {rate})."
    elif table.name == "flow_matrix":
        total = sum(row[2] for row in table.rows)
        cross = sum(row[2] for row in table.rows if row[0] != row[1])
        text = f"{cross:,} of {total:,} points redeemed in the period were issued at another brand."
    elif table.name == "settlement_positions":
        text = f"{_count_of(len(table.rows), 'partner')} issued or redeemed points in the period."
    else:
        return table
    return replace(table, headline=text)


def _liability(
    uow: UnitOfWork, period: Period, trend: list[queries.LiabilityPoint], now: datetime
) -> Table:
    prices = queries.current_redemption_prices(uow, now)
    rows = []
    for point in trend:
        if point.period_label != period.label:
            continue
        price, currency = prices.get(point.partner_id, ("0", ""))
        value_minor = money_minor(point.outstanding_points, price)
        rows.append(
            (
                point.partner_id,
                point.outstanding_points,
                price,
                value_minor,
                currency,
                price_major_units(price, currency),
                major_units(value_minor, currency),
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
            "redemption_price_per_point",
            "value",
        ),
        rows,
        machine_columns=frozenset({"redemption_price_minor_per_point", "value_minor"}),
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
    rows = []
    for p, (issued, redeemed, owed_by, owed_to) in sorted(totals.items()):
        currency = currencies.get(p, "")
        rows.append(
            (
                p,
                issued,
                redeemed,
                owed_by,
                owed_to,
                owed_by - owed_to,
                currency,
                major_units(owed_by, currency),
                major_units(owed_to, currency),
                major_units(owed_by - owed_to, currency),
            )
        )
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
            "owed_by_partner",
            "owed_to_partner",
            "net_owed_by_partner",
        ),
        rows,
        machine_columns=frozenset(
            {"owed_by_partner_minor", "owed_to_partner_minor", "net_owed_by_partner_minor"}
        ),
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


def major_units(amount_minor: int | Fraction, currency: str) -> str:
    """Money in major units of its currency, as decimal text (half-even): 1999 CNY -> 19.99."""
    if not currency:
        return ""
    exponent = MINOR_UNIT_EXPONENTS[currency]
    value = Decimal(amount_minor.numerator) / Decimal(amount_minor.denominator)
    quantum = Decimal(1).scaleb(-exponent)
    return str((value / Decimal(10**exponent)).quantize(quantum, ROUND_HALF_EVEN))


def price_major_units(price_minor_per_point: str, currency: str) -> str:
    """A price per point in major units, exact (a fraction of a cent stays): "0.8" EUR ->
    "0.008"."""
    if not currency:
        return ""
    price = Decimal(price_minor_per_point).scaleb(-MINOR_UNIT_EXPONENTS[currency])
    return format(price.normalize(), "f") if price else "0"


COALITION_GROUP = "coalition (group)"
NO_BUDGET = queries.PromotionBudget(None, 0, None, 0, None)


@dataclass(frozen=True)
class PromotionPerformance:
    """What one promotion cost and returned at one partner in a period (docs/promotions.md)."""

    promotion_id: str
    funding_partner_id: str | None  # None: the coalition
    partner_id: str
    currency: str
    members_reached: int
    promoted_visits: int
    points_granted: int
    cost_minor: Fraction  # the points at each earn's issuance price
    participant_spend_minor: int
    other_visits: int
    other_spend_minor: int
    budget_points: int | None
    budget_left_points: int | None
    # The money budget now (None: none), in budget_currency (the funder's, the partner's).
    budget_amount_minor: int | None = None
    budget_spent_amount_minor: int | None = None
    budget_left_amount_minor: int | None = None
    budget_currency: str = ""

    @property
    def incremental_spend_minor(self) -> Fraction | None:
        """Promoted spend less what as many of the partner's other visits spent."""
        if not self.other_visits:
            return None
        baseline = Fraction(self.other_spend_minor, self.other_visits)
        return self.participant_spend_minor - self.promoted_visits * baseline

    @property
    def roi(self) -> str:
        """(incremental spend - cost) / cost, 4 places; empty when undefined."""
        incremental = self.incremental_spend_minor
        if incremental is None or self.cost_minor == 0:
            return ""
        return _fraction_ratio((incremental - self.cost_minor) / self.cost_minor)


def promotion_performance(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> list[PromotionPerformance]:
    """Every promotion's cost and return at each partner where members earned it, in the
    period (by promotion, then partner).

    Cost: the bonus points at the issuance price of the rate version of each earn (what the
    funder pays per point issued there; for coalition-funded points, what the earning partner
    would have paid). Return: the participants' spend on the promoted visits against the
    comparison group, the same partner's other visits in the period (earns without that
    promotion's bonus)."""
    prices = queries.rate_version_prices(uow)
    currencies = queries.partner_currencies(uow)
    members = queries.promotion_members(uow, period, partner_id)
    spend = queries.spend_by_partner(uow, period, partner_id)
    budgets = queries.promotion_budgets(uow)
    rows: dict[tuple[str, str], list[Any]] = {}
    for grant in queries.promotion_grants(uow, period, partner_id):
        price = Fraction(prices.get(grant.rate_version_id or "", ("0", "0"))[0])
        row = rows.setdefault(
            (grant.rule_id, grant.partner_id), [grant.funding_partner_id, 0, 0, 0, Fraction(0)]
        )
        row[1] += grant.points
        row[2] += grant.visits
        row[3] += grant.spend_minor
        row[4] += grant.points * price
    performance = []
    for (rule_id, partner), (funder, points, visits, spend_minor, cost) in sorted(rows.items()):
        promotion_id = rule_id.removeprefix("promotion:")
        all_visits, all_spend, _ = spend.get(partner, (0, 0, 0))
        budget = budgets.get(promotion_id, NO_BUDGET)
        performance.append(
            PromotionPerformance(
                promotion_id=promotion_id,
                funding_partner_id=funder,
                partner_id=partner,
                currency=currencies.get(partner, ""),
                members_reached=members.get((rule_id, partner), 0),
                promoted_visits=visits,
                points_granted=points,
                cost_minor=cost,
                participant_spend_minor=spend_minor,
                other_visits=all_visits - visits,
                other_spend_minor=all_spend - spend_minor,
                budget_points=budget.budget_points,
                budget_left_points=budget.left_points,
                budget_amount_minor=budget.budget_amount_minor,
                budget_spent_amount_minor=(
                    None if budget.budget_amount_minor is None else budget.spent_amount_minor
                ),
                budget_left_amount_minor=budget.left_amount_minor,
                budget_currency=budget.budget_currency or "",
            )
        )
    return performance


def _promotion_tables(uow: UnitOfWork, period: Period, partner_id: str | None) -> list[Table]:
    """What each promotion cost and returned at each partner, and each funder's total."""
    table_rows: list[tuple[Any, ...]] = []
    funders: dict[tuple[str, str], list[Any]] = {}
    granted = 0
    for row in promotion_performance(uow, period, partner_id):
        granted += row.points_granted
        currency = row.currency
        incremental = row.incremental_spend_minor
        visits, spend_minor = row.promoted_visits, row.participant_spend_minor
        table_rows.append(
            (
                row.promotion_id,
                row.funding_partner_id or COALITION_GROUP,
                row.partner_id,
                row.members_reached,
                visits,
                row.points_granted,
                major_units(row.cost_minor, currency),
                major_units(spend_minor, currency),
                "" if not visits else major_units(Fraction(spend_minor, visits), currency),
                ""
                if not row.other_visits
                else major_units(Fraction(row.other_spend_minor, row.other_visits), currency),
                "" if incremental is None else major_units(incremental, currency),
                row.roi,
                currency,
                "" if row.budget_points is None else row.budget_points,
                "" if row.budget_left_points is None else row.budget_left_points,
                *(
                    "" if amount is None else major_units(amount, row.budget_currency)
                    for amount in (
                        row.budget_amount_minor,
                        row.budget_spent_amount_minor,
                        row.budget_left_amount_minor,
                    )
                ),
                row.budget_currency,
            )
        )
        funder = row.funding_partner_id or COALITION_GROUP
        total = funders.setdefault((funder, currency), [0, Fraction(0)])
        total[0] += row.points_granted
        total[1] += row.cost_minor
    costs = Table(
        "promotion_costs",
        "What each promotion cost and returned, by partner where members earned",
        (
            "promotion_id",
            "funded_by",
            "partner_id",
            "members_reached",
            "promoted_visits",
            "points_granted",
            "cost",
            "participant_spend",
            "spend_per_promoted_visit",
            "spend_per_other_visit",
            "incremental_spend",
            "roi",
            "currency",
            "budget_points",
            "budget_left_points",
            "budget_money",
            "budget_money_spent",
            "budget_money_left",
            "budget_currency",
        ),
        table_rows,
        headline=(
            f"{_count_of(len({row[0] for row in table_rows}), 'promotion')} granted {granted:,} "
            "points in "
            "the period; ROI = (incremental spend - cost) / cost, against the same partner's "
            "other visits in the period."
            if table_rows
            else "No promotion granted points in the period."
        ),
    )
    outstanding = queries.coalition_funded_points_outstanding(uow, period.end)
    funder_rows = [
        (funder, currency, points, major_units(cost, currency))
        for (funder, currency), (points, cost) in sorted(funders.items())
    ]
    funded = Table(
        "promotion_funders",
        "What each funder's promotions cost in the period (the coalition's as the group's)",
        ("funder", "currency", "points_granted", "cost"),
        funder_rows,
        headline=(
            f"The group (coalition:promotions) owes {outstanding:,} coalition-funded points "
            "at the period's end (granted, net of reversals and expiries): its own liability, "
            "never a partner's."
        ),
    )
    return [costs, funded]


def _fraction_ratio(value: Fraction) -> str:
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return str(decimal.quantize(RATIO_PLACES, ROUND_HALF_EVEN))


def _spend_per_visit(uow: UnitOfWork, period: Period, partner_id: str | None) -> Table:
    currencies = queries.partner_currencies(uow)
    rows = []
    for partner, (visits, spend_minor, members) in sorted(
        queries.spend_by_partner(uow, period, partner_id).items()
    ):
        currency = currencies.get(partner, "")
        rows.append(
            (
                partner,
                members,
                visits,
                major_units(spend_minor, currency),
                "" if not visits else major_units(Fraction(spend_minor, visits), currency),
                currency,
            )
        )
    return Table(
        "member_spend",
        "Member spend per visit by partner (earns with a purchase amount)",
        ("partner_id", "members", "visits", "spend", "spend_per_visit", "currency"),
        rows,
        headline=f"Members made {sum(row[2] for row in rows):,} visits with a purchase in the "
        "period.",
    )


@dataclass(frozen=True)
class ContributionShare:
    """A partner's share of sales from members in a period (docs/reports.md): members'
    spend at it on the days it reported its total sales, against those totals."""

    partner_id: str
    currency: str
    days: tuple[date, ...]  # the UTC days of the period it reported, in order
    member_spend_minor: int
    reported_sales_minor: int

    @property
    def share(self) -> str:
        """member spend / reported sales, 4 places half-even; empty when the totals are 0."""
        return ratio(self.member_spend_minor, self.reported_sales_minor)

    @property
    def days_covered(self) -> str:
        """The days as runs: "2026-11-03 to 2026-11-05, 2026-11-10"."""
        return ", ".join(
            first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
            for first, last in queries.day_runs(self.days)
        )


def contribution_shares(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> list[ContributionShare]:
    """Every partner that reported daily sales in the period, by partner id."""
    currencies = queries.partner_currencies(uow)
    shares = []
    for partner, totals in sorted(queries.reported_sales(uow, period, partner_id).items()):
        days = tuple(sorted(totals))
        shares.append(
            ContributionShare(
                partner,
                currencies.get(partner, ""),
                days,
                queries.member_spend_on_days(uow, partner, days),
                sum(totals.values()),
            )
        )
    return shares


def _contribution_share(uow: UnitOfWork, period: Period, partner_id: str | None) -> Table:
    shares = contribution_shares(uow, period, partner_id)
    rows = [
        (
            share.partner_id,
            len(share.days),
            share.days_covered,
            major_units(share.member_spend_minor, share.currency),
            major_units(share.reported_sales_minor, share.currency),
            share.share,
            share.currency,
        )
        for share in shares
    ]
    return Table(
        "contribution_share",
        "Share of sales from members, on the days each partner reported its total sales",
        (
            "partner_id",
            "days_reported",
            "days_covered",
            "member_spend",
            "reported_sales",
            "share_of_sales",
            "currency",
        ),
        rows,
        headline=(
            f"{_count_of(len(rows), 'partner')} reported daily sales in the period; the share "
            "is members' spend (earns with a purchase amount, by purchase day, UTC) over the "
            "reported totals of those days only."
            if rows
            else "No partner reported its daily sales in the period: no share can be computed."
        ),
    )


def _tier_tables(uow: UnitOfWork, period: Period, now: datetime) -> list[Table]:
    held = queries.tier_distribution(uow)
    base = queries.members_enrolled_before(uow, now) - sum(held.values())
    distribution = [("(base tier)", max(base, 0)), *sorted(held.items())]
    movements = queries.tier_movements(uow, period)
    upgrades = sum(count for _, _, count in movements)
    return [
        Table(
            "tier_distribution",
            "Members by tier now (members without a tier row hold the base tier)",
            ("tier_id", "members"),
            distribution,
            headline=f"{sum(held.values()):,} members hold a tier above the base tier.",
        ),
        Table(
            "tier_movements",
            "Tier movements in the period",
            ("tier_before", "tier_after", "members"),
            movements,
            headline=f"{upgrades:,} tier changes in the period.",
        ),
    ]

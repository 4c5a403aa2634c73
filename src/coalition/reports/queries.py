"""Set-based report queries: every figure is an aggregate computed by the database.

Nothing here reads journal rows into Python; each query returns at most a few rows per
partner, period, cohort or partner pair, and Python only adds up those few rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    union_all,
)

from coalition.domain.hub_partner import HUB_PARTNER_ID
from coalition.ledger.system_accounts import COALITION_PROMOTIONS_ACCOUNT_ID
from coalition.reports.period import Period
from coalition.store.schema import (
    accounts,
    earn_bonuses,
    journal_transactions,
    lot_consumptions,
    lot_expiries,
    lots,
    members,
    metadata,
    partner_daily_sales,
    partners,
    postings,
    rate_versions,
)
from coalition.store.unit_of_work import UnitOfWork

EARN_KINDS = ("earn",)
BURN_KINDS = ("burn", "capture")  # points leave the member for a partner's reward
ACTIVE_KINDS = EARN_KINDS + BURN_KINDS


def _bucket(column: Any, ends: list[datetime]) -> ColumnElement[int]:
    """Index of the first period (by exclusive end) that `column` falls before."""
    return case(*[(column < end, index) for index, end in enumerate(ends)], else_=len(ends))


def _month_of(uow: UnitOfWork, column: Any) -> ColumnElement[str]:
    if uow.dialect_name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    return func.strftime("%Y-%m", column)


@dataclass(frozen=True)
class LiabilityPoint:
    partner_id: str
    period_label: str
    outstanding_points: int


def liability_trend(
    uow: UnitOfWork, periods: list[Period], partner_id: str | None
) -> list[LiabilityPoint]:
    """Outstanding points by issuing partner at the end of each period: points of lots issued
    before the end, less what burns took (net of burn reversals), expiries and earn reversals
    committed before the end. At "now" this equals the sum of `lots.remaining_points`."""
    ends = [period.end for period in periods]
    end = ends[-1]
    consumer = journal_transactions.alias("consumer")
    expirer = journal_transactions.alias("expirer")
    reverser = journal_transactions.alias("reverser")
    issued = select(
        lots.c.partner_id,
        _bucket(lots.c.create_time, ends).label("bucket"),
        lots.c.points.label("points"),
    ).where(lots.c.create_time < end)
    consumed = (
        select(
            lots.c.partner_id,
            _bucket(consumer.c.create_time, ends),
            (-lot_consumptions.c.points).label("points"),
        )
        .select_from(lot_consumptions)
        .join(lots, lots.c.lot_id == lot_consumptions.c.lot_id)
        .join(consumer, consumer.c.transaction_id == lot_consumptions.c.transaction_id)
        .where(consumer.c.create_time < end)
    )
    expired = (
        select(
            lots.c.partner_id,
            _bucket(expirer.c.create_time, ends),
            (-lot_expiries.c.points).label("points"),
        )
        .select_from(lot_expiries)
        .join(lots, lots.c.lot_id == lot_expiries.c.lot_id)
        .join(expirer, expirer.c.transaction_id == lot_expiries.c.transaction_id)
        .where(expirer.c.create_time < end)
    )
    earn_reversed = (
        select(
            lots.c.partner_id,
            _bucket(reverser.c.create_time, ends),
            reverser.c.points_delta.label("points"),  # negative for the member
        )
        .select_from(reverser)
        .join(lots, lots.c.transaction_id == reverser.c.parent_transaction_id)
        .where(reverser.c.kind == "reverse", reverser.c.create_time < end)
    )
    flows = union_all(issued, consumed, expired, earn_reversed).subquery("flows")
    statement = select(flows.c.partner_id, flows.c.bucket, func.sum(flows.c.points)).group_by(
        flows.c.partner_id, flows.c.bucket
    )
    if partner_id is not None:
        statement = statement.where(flows.c.partner_id == partner_id)
    change: dict[str, list[int]] = defaultdict(lambda: [0] * len(periods))
    for issuer, bucket, points in uow.connection.execute(statement):
        change[issuer][int(bucket)] += int(points)
    trend = []
    for issuer in sorted(change):
        outstanding = 0
        for index, period in enumerate(periods):
            outstanding += change[issuer][index]
            trend.append(LiabilityPoint(issuer, period.label, outstanding))
    return trend


def current_redemption_prices(uow: UnitOfWork, now: datetime) -> dict[str, tuple[str, str]]:
    """partner -> (redemption price per point in minor units, currency) in force at `now`."""
    latest = (
        select(rate_versions.c.partner_id, func.max(rate_versions.c.effective_from).label("at"))
        .where(rate_versions.c.effective_from <= now)
        .group_by(rate_versions.c.partner_id)
        .subquery()
    )
    statement = (
        select(
            rate_versions.c.partner_id,
            rate_versions.c.redemption_price_minor_per_point,
            partners.c.currency,
        )
        .join(
            latest,
            and_(
                latest.c.partner_id == rate_versions.c.partner_id,
                latest.c.at == rate_versions.c.effective_from,
            ),
        )
        .join(partners, partners.c.partner_id == rate_versions.c.partner_id)
    )
    return {row[0]: (row[1], row[2]) for row in uow.connection.execute(statement)}


def breakage(
    uow: UnitOfWork, end: datetime, partner_id: str | None, by_cohort: bool
) -> list[tuple[str, int, int]]:
    """(cohort month of the lot's issue, or issuing partner; points issued; points expired), as
    committed before `end`. Issued counts lots at issue (earn reversals not deducted)."""
    expirer = journal_transactions.alias("expirer")
    # The cohort is the month the lot was issued (its earn committed), the same clock as the
    # period cuts; no join with the journal needed.
    key = _month_of(uow, lots.c.create_time) if by_cohort else lots.c.partner_id
    issued = (
        select(key.label("key"), lots.c.points.label("issued"), literal(0).label("expired"))
        .select_from(lots)
        .where(lots.c.create_time < end)
    )
    expired = (
        select(key.label("key"), literal(0), lot_expiries.c.points)
        .select_from(lot_expiries)
        .join(lots, lots.c.lot_id == lot_expiries.c.lot_id)
        .join(expirer, expirer.c.transaction_id == lot_expiries.c.transaction_id)
        .where(expirer.c.create_time < end)
    )
    if partner_id is not None:
        issued = issued.where(lots.c.partner_id == partner_id)
        expired = expired.where(lots.c.partner_id == partner_id)
    both = union_all(issued, expired).subquery("both_sides")
    statement = (
        select(both.c.key, func.sum(both.c.issued), func.sum(both.c.expired))
        .group_by(both.c.key)
        .order_by(both.c.key)
    )
    return [(str(k), int(i), int(e)) for k, i, e in uow.connection.execute(statement)]


def flow_matrix(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> list[tuple[str, str, int]]:
    """(issuing partner, redeeming partner, points) of lot consumptions committed in the
    period: burns at the redeemer of points the issuer issued, net of burn reversals."""
    burner = journal_transactions.alias("burner")
    consumer = journal_transactions.alias("consumer")
    statement = (
        select(lots.c.partner_id, burner.c.partner_id, func.sum(lot_consumptions.c.points))
        .select_from(lot_consumptions)
        .join(lots, lots.c.lot_id == lot_consumptions.c.lot_id)
        .join(burner, burner.c.transaction_id == lot_consumptions.c.burn_transaction_id)
        .join(consumer, consumer.c.transaction_id == lot_consumptions.c.transaction_id)
        .where(consumer.c.create_time >= period.start, consumer.c.create_time < period.end)
        .group_by(lots.c.partner_id, burner.c.partner_id)
        .order_by(lots.c.partner_id, burner.c.partner_id)
    )
    if partner_id is not None:
        statement = statement.where(
            (lots.c.partner_id == partner_id) | (burner.c.partner_id == partner_id)
        )
    return [(a, b, int(p)) for a, b, p in uow.connection.execute(statement) if p]


def settlement_totals(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> list[tuple[str, str, str | None, int]]:
    """(partner, account kind, rate version, signed sum of postings) on partners' issuance
    and redemption accounts, for transactions committed in the period."""
    statement = (
        select(
            accounts.c.partner_id,
            accounts.c.kind,
            journal_transactions.c.rate_version_id,
            func.sum(postings.c.points),
        )
        .select_from(postings)
        .join(accounts, accounts.c.account_id == postings.c.account_id)
        .join(
            journal_transactions,
            journal_transactions.c.transaction_id == postings.c.transaction_id,
        )
        .where(
            accounts.c.kind.in_(("partner_issuance", "partner_redemption")),
            # postings carry their transaction's commit time: this range rides the
            # (account_id, create_time) index instead of scanning the journal
            postings.c.create_time >= period.start,
            postings.c.create_time < period.end,
        )
        .group_by(accounts.c.partner_id, accounts.c.kind, journal_transactions.c.rate_version_id)
    )
    if partner_id is not None:
        statement = statement.where(accounts.c.partner_id == partner_id)
    return [(p, k, r, int(s)) for p, k, r, s in uow.connection.execute(statement)]


def rate_version_prices(uow: UnitOfWork) -> dict[str, tuple[str, str]]:
    """rate version -> (issuance price, redemption price), minor units per point (text)."""
    statement = select(
        rate_versions.c.rate_version_id,
        rate_versions.c.issuance_price_minor_per_point,
        rate_versions.c.redemption_price_minor_per_point,
    )
    return {row[0]: (row[1], row[2]) for row in uow.connection.execute(statement)}


def partner_currencies(uow: UnitOfWork) -> dict[str, str]:
    return dict(uow.connection.execute(select(partners.c.partner_id, partners.c.currency)).all())


def _in_period(period: Period) -> ColumnElement[bool]:
    created = journal_transactions.c.create_time
    return and_(created >= period.start, created < period.end)


def _of_partners() -> ColumnElement[bool]:
    """Transactions a partner asked for: hub-initiated ones (referral bonuses, merges;
    domain/hub_partner.py) are no partner's earns or activity."""
    return journal_transactions.c.partner_id != HUB_PARTNER_ID


def _activity(period: Period, kinds: tuple[str, ...], partner_id: str | None) -> Select[Any]:
    statement = select(journal_transactions.c.member_id).where(
        _in_period(period), journal_transactions.c.kind.in_(kinds), _of_partners()
    )
    if partner_id is not None:
        statement = statement.where(journal_transactions.c.partner_id == partner_id)
    return statement.distinct()


def _count(uow: UnitOfWork, statement: Select[Any]) -> int:
    return int(uow.connection.execute(statement).scalar_one() or 0)


def member_counts(uow: UnitOfWork, period: Period) -> tuple[int, int]:
    """(members enrolled before the period, members enrolled in it)."""
    before = select(func.count()).where(members.c.create_time < period.start)
    during = select(func.count()).where(
        members.c.create_time >= period.start, members.c.create_time < period.end
    )
    return _count(uow, before), _count(uow, during)


def activity_counts(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> tuple[int, int, int]:
    """(active members in the period, in the previous period, in both)."""
    current = _activity(period, ACTIVE_KINDS, partner_id).subquery("current_active")
    previous = _activity(period.previous(), ACTIVE_KINDS, partner_id).subquery("previous_active")
    both = select(func.count()).select_from(
        current.join(previous, current.c.member_id == previous.c.member_id)
    )
    return (
        _count(uow, select(func.count()).select_from(current)),
        _count(uow, select(func.count()).select_from(previous)),
        _count(uow, both),
    )


def kind_totals(
    uow: UnitOfWork, period: Period, kinds: tuple[str, ...], partner_id: str | None
) -> tuple[int, int]:
    """(transactions of these kinds in the period, their points moved, as a magnitude)."""
    statement = select(
        func.count(), func.coalesce(func.sum(func.abs(journal_transactions.c.points_delta)), 0)
    ).where(_in_period(period), journal_transactions.c.kind.in_(kinds), _of_partners())
    if partner_id is not None:
        statement = statement.where(journal_transactions.c.partner_id == partner_id)
    count, points = uow.connection.execute(statement).one()
    return int(count), int(points)


def promotion_counts(uow: UnitOfWork, period: Period, partner_id: str | None) -> tuple[int, int]:
    """(members who earned a promotion bonus in the period, those of them who also burned)."""
    earned = (
        select(journal_transactions.c.member_id)
        .select_from(journal_transactions)
        .join(
            earn_bonuses,
            and_(
                earn_bonuses.c.member_id == journal_transactions.c.member_id,
                earn_bonuses.c.transaction_id == journal_transactions.c.transaction_id,
            ),
        )
        .where(
            _in_period(period),
            journal_transactions.c.kind == "earn",
            earn_bonuses.c.rule_id.like("promotion:%"),
        )
        .distinct()
    )
    if partner_id is not None:
        earned = earned.where(journal_transactions.c.partner_id == partner_id)
    participants = earned.subquery("participants")
    burners = _activity(period, BURN_KINDS, None).subquery("burners")
    converted = select(func.count()).select_from(
        participants.join(burners, burners.c.member_id == participants.c.member_id)
    )
    return _count(uow, select(func.count()).select_from(participants)), _count(uow, converted)


def referral_counts(uow: UnitOfWork, period: Period) -> tuple[int, int] | None:
    """(referrals made in the period, those of them whose bonus was paid by its end); None
    without the referral tables."""
    referrals = metadata.tables.get("referrals")
    if referrals is None:
        return None
    made = and_(referrals.c.create_time >= period.start, referrals.c.create_time < period.end)
    converted = and_(made, referrals.c.reward_time < period.end)
    return (
        _count(uow, select(func.count()).select_from(referrals).where(made)),
        _count(uow, select(func.count()).select_from(referrals).where(converted)),
    )


# --- promotions: what they cost and returned (docs/promotions.md, "Cost and return") ------


@dataclass(frozen=True)
class PromotionGrantTotal:
    """The bonuses of one promotion at one partner and rate version in the period."""

    rule_id: str
    funding_partner_id: str | None  # None: the coalition
    partner_id: str  # where the member earned
    rate_version_id: str | None
    points: int
    visits: int  # earns with a purchase amount that got the bonus
    spend_minor: int  # their purchases, in the partner's currency


def promotion_grants(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> list[PromotionGrantTotal]:
    """Promotion bonuses committed in the period, by promotion, partner and rate version."""
    j = journal_transactions
    statement = (
        select(
            earn_bonuses.c.rule_id,
            earn_bonuses.c.funding_partner_id,
            j.c.partner_id,
            j.c.rate_version_id,
            func.sum(earn_bonuses.c.points),
            func.count(j.c.amount_minor),
            func.coalesce(func.sum(j.c.amount_minor), 0),
        )
        .select_from(
            j.join(
                earn_bonuses,
                and_(
                    earn_bonuses.c.member_id == j.c.member_id,
                    earn_bonuses.c.transaction_id == j.c.transaction_id,
                ),
            )
        )
        .where(_in_period(period), j.c.kind == "earn", earn_bonuses.c.rule_id.like("promotion:%"))
        .group_by(
            earn_bonuses.c.rule_id,
            earn_bonuses.c.funding_partner_id,
            j.c.partner_id,
            j.c.rate_version_id,
        )
    )
    if partner_id is not None:
        statement = statement.where(j.c.partner_id == partner_id)
    return [
        PromotionGrantTotal(row[0], row[1], row[2], row[3], int(row[4]), int(row[5]), int(row[6]))
        for row in uow.connection.execute(statement)
    ]


def promotion_members(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> dict[tuple[str, str], int]:
    """(promotion rule, partner) -> distinct members who got its bonus in the period."""
    j = journal_transactions
    statement = (
        select(earn_bonuses.c.rule_id, j.c.partner_id, func.count(func.distinct(j.c.member_id)))
        .select_from(
            j.join(
                earn_bonuses,
                and_(
                    earn_bonuses.c.member_id == j.c.member_id,
                    earn_bonuses.c.transaction_id == j.c.transaction_id,
                ),
            )
        )
        .where(_in_period(period), j.c.kind == "earn", earn_bonuses.c.rule_id.like("promotion:%"))
        .group_by(earn_bonuses.c.rule_id, j.c.partner_id)
    )
    if partner_id is not None:
        statement = statement.where(j.c.partner_id == partner_id)
    return {(row[0], row[1]): int(row[2]) for row in uow.connection.execute(statement)}


def spend_by_partner(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> dict[str, tuple[int, int, int]]:
    """partner -> (earns with a purchase amount, their spend in minor units, members) in the
    period: the visits of members and what they spent."""
    j = journal_transactions
    statement = (
        select(
            j.c.partner_id,
            func.count(),
            func.coalesce(func.sum(j.c.amount_minor), 0),
            func.count(func.distinct(j.c.member_id)),
        )
        .where(
            _in_period(period), j.c.kind == "earn", _of_partners(), j.c.amount_minor.is_not(None)
        )
        .group_by(j.c.partner_id)
    )
    if partner_id is not None:
        statement = statement.where(j.c.partner_id == partner_id)
    return {
        row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in uow.connection.execute(statement)
    }


@dataclass(frozen=True)
class PromotionBudget:
    """A promotion's budgets as they stand now (None: no budget of that kind)."""

    budget_points: int | None
    spent_points: int
    budget_amount_minor: int | None
    spent_amount_minor: int
    budget_currency: str | None

    @property
    def left_points(self) -> int | None:
        return None if self.budget_points is None else self.budget_points - self.spent_points

    @property
    def left_amount_minor(self) -> int | None:
        if self.budget_amount_minor is None:
            return None
        return self.budget_amount_minor - self.spent_amount_minor


def promotion_budgets(uow: UnitOfWork) -> dict[str, PromotionBudget]:
    """promotion id -> its budgets now (the money budget's currency is its definition's)."""
    promotions = metadata.tables["promotions"]
    statement = select(
        promotions.c.promotion_id,
        promotions.c.budget_points,
        promotions.c.spent_points,
        promotions.c.budget_amount_minor,
        promotions.c.spent_amount_minor,
        promotions.c.definition,
    )
    return {
        row[0]: PromotionBudget(
            None if row[1] is None else int(row[1]),
            int(row[2]),
            None if row[3] is None else int(row[3]),
            int(row[4]),
            json.loads(row[5]).get("budget_currency") if row[3] is not None else None,
        )
        for row in uow.connection.execute(statement)
    }


# --- contribution share: members' spend against the totals partners reported ------------


def reported_sales(
    uow: UnitOfWork, period: Period, partner_id: str | None
) -> dict[str, dict[date, int]]:
    """partner -> {UTC day of the period it reported: that day's total in minor units, as
    its latest version says}."""
    sales = partner_daily_sales
    latest = (
        select(
            sales.c.partner_id,
            sales.c.sales_date,
            func.max(sales.c.version).label("version"),
        )
        .where(sales.c.sales_date >= period.start.date(), sales.c.sales_date <= period.last_day)
        .group_by(sales.c.partner_id, sales.c.sales_date)
    )
    if partner_id is not None:
        latest = latest.where(sales.c.partner_id == partner_id)
    latest_versions = latest.subquery()
    statement = select(sales.c.partner_id, sales.c.sales_date, sales.c.amount_minor).join(
        latest_versions,
        and_(
            latest_versions.c.partner_id == sales.c.partner_id,
            latest_versions.c.sales_date == sales.c.sales_date,
            latest_versions.c.version == sales.c.version,
        ),
    )
    by_partner: dict[str, dict[date, int]] = defaultdict(dict)
    for partner, day, amount_minor in uow.connection.execute(statement):
        by_partner[partner][day] = int(amount_minor)
    return dict(by_partner)


def day_runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) runs, in order."""
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def member_spend_on_days(uow: UnitOfWork, partner_id: str, days: Iterable[date]) -> int:
    """What members spent at the partner (earns with a purchase amount) on these UTC days,
    by the purchase's occurred_at: one range per run of consecutive days."""
    j = journal_transactions
    ranges = [
        and_(
            j.c.occurred_at >= datetime.combine(first, time(), UTC),
            j.c.occurred_at < datetime.combine(last + timedelta(days=1), time(), UTC),
        )
        for first, last in day_runs(days)
    ]
    if not ranges:
        return 0
    statement = select(func.coalesce(func.sum(j.c.amount_minor), 0)).where(
        j.c.partner_id == partner_id,
        j.c.kind == "earn",
        j.c.amount_minor.is_not(None),
        or_(*ranges),
    )
    return _count(uow, statement)


def tier_distribution(uow: UnitOfWork) -> dict[str, int]:
    """tier -> members holding it now (members without a tier row are in the base tier,
    counted by the caller)."""
    member_tiers = metadata.tables["member_tiers"]
    statement = select(member_tiers.c.tier_id, func.count()).group_by(member_tiers.c.tier_id)
    return {row[0]: int(row[1]) for row in uow.connection.execute(statement)}


def tier_movements(uow: UnitOfWork, period: Period) -> list[tuple[str, str, int]]:
    """(tier before, tier after, members moved) in the period."""
    tier_changes = metadata.tables["tier_changes"]
    statement = (
        select(tier_changes.c.tier_id_before, tier_changes.c.tier_id_after, func.count())
        .where(tier_changes.c.change_time >= period.start, tier_changes.c.change_time < period.end)
        .group_by(tier_changes.c.tier_id_before, tier_changes.c.tier_id_after)
        .order_by(tier_changes.c.tier_id_before, tier_changes.c.tier_id_after)
    )
    return [(row[0], row[1], int(row[2])) for row in uow.connection.execute(statement)]


def members_enrolled_before(uow: UnitOfWork, at: datetime) -> int:
    return _count(uow, select(func.count()).where(members.c.create_time < at))


def coalition_funded_points_outstanding(uow: UnitOfWork, at: datetime) -> int:
    """Points the coalition funded, net of what reversals and expiries gave back, posted
    before `at`: what coalition:promotions owes, the group's own liability."""
    statement = select(func.coalesce(func.sum(postings.c.points), 0)).where(
        postings.c.account_id == COALITION_PROMOTIONS_ACCOUNT_ID, postings.c.create_time < at
    )
    return -_count(uow, statement)

"""Promotions as data: their rows, their versions (the audit trail) and each process's cache.

A promotion is a row of `promotions` (its definition as canonical JSON with the same keys as
`config/promotions.toml`, its version, state, owner and budget counter). Every change writes
the next version to `promotion_versions` (who, when, which request, the definition as it
became) and bumps the one row of `promotion_catalogue`.

Earn never reads a promotion row to decide what applies: each hub process keeps the
promotions in force in memory and checks the catalogue's version (one primary-key read) at
most every `REFRESH_SECONDS`, reloading the promotions (at most PROMOTIONS_MAX rows, through
an index) only when the version moved. So a change reaches every process within
REFRESH_SECONDS, without a restart, and costs the hot path nothing in between. A change made
by this process is seen by it at once (`invalidate`).

The programme's own promotions (`promotions.toml`, `programme.config`) are a seed: `seed`
writes those missing from the database; in memory, a row of the database wins over the file's
promotion of the same id (so a seeded promotion paused over the API stays paused).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from coalition.domain.occurrence import BACKDATING_DAYS_MAX_LIMIT
from coalition.domain.promotions import Promotion, PromotionGrant
from coalition.programme.config import PROMOTIONS_MAX, Programme, promotion_from_entry
from coalition.store import driver
from coalition.store.driver import IN_LIST, Statement
from coalition.store.schema import promotion_earn_grants, promotion_versions, promotions
from coalition.store.unit_of_work import UnitOfWork

REFRESH_SECONDS = 2.0
CATALOGUE_ROW_ID = 1
# Promotions that ended longer ago than any earn may be backdated no longer apply to any.
LOOKBACK = timedelta(days=BACKDATING_DAYS_MAX_LIMIT)
INSTANT_KEYS = ("starts_at", "ends_at")
SEED_ACTOR = "seed"


def definition_of(promotion: Promotion) -> dict[str, Any]:
    """The promotion's rules as the keys of promotions.toml (instants as ISO text)."""
    entry: dict[str, Any] = {
        "promotion_id": promotion.promotion_id,
        "starts_at": promotion.starts_at.isoformat(),
        "ends_at": promotion.ends_at.isoformat(),
        "funded_by": promotion.funded_by,
        "time_zone": promotion.time_zone,
    }
    optional: dict[str, Any] = {
        "partner_ids": sorted(promotion.partner_ids) if promotion.partner_ids else None,
        "tier_ids": sorted(promotion.tier_ids) if promotion.tier_ids else None,
        "weekdays": sorted(promotion.weekdays) if promotion.weekdays else None,
        "member_day": promotion.member_day,
        "birthday_month": promotion.birthday_month or None,
        "birthday_day": promotion.birthday_day or None,
        "multiplier": str(promotion.multiplier) if promotion.multiplier is not None else None,
        "bonus_points": promotion.bonus_points,
        "spend_amount_minor_min": promotion.spend_amount_minor_min,
        "spend_currency": promotion.spend_currency,
        "first_purchase": promotion.first_purchase,
        "grants_per_member_max": promotion.grants_per_member_max,
        "cap_period": None if promotion.cap_period == "promotion" else promotion.cap_period,
        "budget_points": promotion.budget_points,
        "budget_amount_minor": promotion.budget_amount_minor,
        "budget_currency": promotion.budget_currency,
        "referral_referred_points": promotion.referral_referred_points,
        "referral_referrer_points": promotion.referral_referrer_points,
    }
    entry.update({key: value for key, value in optional.items() if value is not None})
    return entry


def canonical_definition(promotion: Promotion) -> str:
    return json.dumps(definition_of(promotion), sort_keys=True, separators=(",", ":"))


def promotion_of_row(row: Any) -> Promotion:
    entry = json.loads(row.definition)
    for key in INSTANT_KEYS:
        entry[key] = datetime.fromisoformat(entry[key])
    promotion = promotion_from_entry(
        f"promotion {row.promotion_id} version {row.version}",
        entry,
        None,
        owner_partner_id=row.owner_partner_id,
        version=int(row.version),
        state=row.state,
    )
    assert promotion.promotion_id == row.promotion_id, "a definition names its own promotion"
    return promotion


@dataclass(frozen=True)
class StoredPromotion:
    """A promotion with what the database keeps beside its rules."""

    promotion: Promotion
    spent_points: int
    create_time: datetime
    update_time: datetime
    spent_amount_minor: int = 0  # of its money budget


def stored_of_row(row: Any) -> StoredPromotion:
    return StoredPromotion(
        promotion_of_row(row),
        int(row.spent_points),
        row.create_time,
        row.update_time,
        int(row.spent_amount_minor),
    )


def write_version(
    uow: UnitOfWork,
    promotion: Promotion,
    change: str,
    actor: str,
    request_id: str | None,
    now: datetime,
) -> None:
    """Record `promotion` (already written to its row) as its version, and bump the
    catalogue so that every process reloads."""
    uow.connection.execute(
        insert(promotion_versions).values(
            promotion_id=promotion.promotion_id,
            version=promotion.version,
            change=change,
            actor=actor,
            request_id=request_id,
            state=promotion.state,
            definition=canonical_definition(promotion),
            change_time=now,
        )
    )
    driver.execute(uow, BUMP_CATALOGUE, (CATALOGUE_ROW_ID,))


def insert_promotion(
    uow: UnitOfWork,
    promotion: Promotion,
    change: str,
    actor: str,
    request_id: str | None,
    now: datetime,
) -> None:
    uow.connection.execute(
        insert(promotions).values(
            promotion_id=promotion.promotion_id,
            owner_partner_id=promotion.owner_partner_id,
            version=promotion.version,
            state=promotion.state,
            definition=canonical_definition(promotion),
            ends_at=promotion.ends_at,
            budget_points=promotion.budget_points,
            spent_points=0,
            budget_amount_minor=promotion.budget_amount_minor,
            spent_amount_minor=0,
            create_time=now,
            update_time=now,
        )
    )
    write_version(uow, promotion, change, actor, request_id, now)


def seed(uow: UnitOfWork, programme: Programme, source: str, now: datetime) -> list[str]:
    """Write the programme's promotions the database lacks (never overwrites one); the ids
    written."""
    if not programme.promotions:
        return []
    known = set(
        uow.connection.execute(
            select(promotions.c.promotion_id).where(
                promotions.c.promotion_id.in_([p.promotion_id for p in programme.promotions])
            )
        ).scalars()
    )
    written = []
    for promotion in programme.promotions:
        if promotion.promotion_id not in known:
            insert_promotion(uow, promotion, "seed", f"{SEED_ACTOR}:{source}", None, now)
            written.append(promotion.promotion_id)
    return written


@dataclass
class _Cached:
    version: int = -1
    checked_at: float = float("-inf")  # monotonic seconds
    promotions: tuple[Promotion, ...] = ()
    ids: frozenset[str] = frozenset()


class Catalogue:
    """This process's promotions in force, per database (tests run several)."""

    def __init__(self, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._by_database: dict[str, _Cached] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._by_database.clear()

    def promotions(
        self, uow: UnitOfWork, programme: Programme, now: datetime
    ) -> tuple[Promotion, ...]:
        """The promotions that may apply: the database's active ones and the programme
        file's that the database does not hold."""
        cached = self._current(uow, programme, now)
        seeded = tuple(p for p in programme.promotions if p.promotion_id not in cached.ids)
        return cached.promotions + seeded

    def _current(self, uow: UnitOfWork, programme: Programme, now: datetime) -> _Cached:
        key = str(uow.engine.url)
        with self._lock:
            cached = self._by_database.get(key)
        monotonic = time.monotonic()
        if cached is not None and monotonic - cached.checked_at < self.refresh_seconds:
            return cached
        row = driver.execute(uow, CATALOGUE_VERSION, (CATALOGUE_ROW_ID,)).fetchone()
        version = 0 if row is None else int(row[0])
        if cached is None or cached.version != version:
            cached = self._load(uow, programme, int(version), now)
        cached.checked_at = monotonic
        with self._lock:
            self._by_database[key] = cached
        return cached

    @staticmethod
    def _load(uow: UnitOfWork, programme: Programme, version: int, now: datetime) -> _Cached:
        rows = uow.connection.execute(
            select(promotions)
            .where(promotions.c.ends_at > now - LOOKBACK)
            .order_by(promotions.c.promotion_id)
            .limit(PROMOTIONS_MAX + 1)
        ).all()
        assert len(rows) <= PROMOTIONS_MAX, "creating a promotion keeps to PROMOTIONS_MAX"
        loaded = tuple(promotion_of_row(row) for row in rows)
        return _Cached(
            version=version,
            promotions=tuple(p for p in loaded if p.state == "active"),
            ids=frozenset(p.promotion_id for p in loaded),
        )


CATALOGUE = Catalogue()


def promotions_in_force_count(uow: UnitOfWork, now: datetime) -> int:
    """Promotions the catalogue loads (not ended longer ago than any backdating)."""
    return int(
        uow.connection.execute(
            select(func.count())
            .select_from(promotions)
            .where(promotions.c.ends_at > now - LOOKBACK)
        ).scalar_one()
    )


CATALOGUE_VERSION = Statement("SELECT version FROM promotion_catalogue WHERE catalogue_id = %s")
BUMP_CATALOGUE = Statement(
    "INSERT INTO promotion_catalogue (catalogue_id, version) VALUES (%s, 1)"
    " ON CONFLICT (catalogue_id) DO UPDATE SET version = promotion_catalogue.version + 1"
)
# Earn's statements on promotions, written once (store/driver.py). SQLite serialises writers,
# so it needs no row lock.
BUDGETS_LOCKED = {
    "postgresql": Statement(
        "SELECT promotion_id, budget_points - spent_points,"
        " budget_amount_minor - spent_amount_minor FROM promotions"
        f" WHERE promotion_id {IN_LIST} %s"
        " AND (budget_points IS NOT NULL OR budget_amount_minor IS NOT NULL)"
        " ORDER BY promotion_id FOR UPDATE"
    ),
    "sqlite": Statement(
        "SELECT promotion_id, budget_points - spent_points,"
        " budget_amount_minor - spent_amount_minor FROM promotions"
        f" WHERE promotion_id {IN_LIST} %s"
        " AND (budget_points IS NOT NULL OR budget_amount_minor IS NOT NULL)"
    ),
}
# The guarded counters: a budget is spent at most once per point and per minor unit,
# whatever races.
SPEND_BUDGET = Statement(
    "UPDATE promotions"
    " SET spent_points = spent_points + CASE WHEN budget_points IS NULL THEN 0 ELSE %s END,"
    " spent_amount_minor = spent_amount_minor + %s"
    " WHERE promotion_id = %s"
    " AND (budget_points IS NULL OR spent_points + %s <= budget_points)"
    " AND (budget_amount_minor IS NULL OR spent_amount_minor + %s <= budget_amount_minor)"
)
GRANTS_OF_MEMBER = Statement(
    "SELECT promotion_id, cap_period, grants FROM promotion_member_grants"
    f" WHERE member_id = %s AND promotion_id {IN_LIST} %s"
)
COUNT_GRANT = Statement(
    "INSERT INTO promotion_member_grants (promotion_id, member_id, cap_period, grants, points)"
    " VALUES (%s, %s, %s, 1, %s) ON CONFLICT (promotion_id, member_id, cap_period)"
    " DO UPDATE SET grants = promotion_member_grants.grants + 1,"
    " points = promotion_member_grants.points + excluded.points"
)


@dataclass(frozen=True)
class BudgetLeft:
    """What is left of a promotion's budget: points, and minor units of its money budget
    (None: it has no budget of that kind)."""

    points: int | None
    amount_minor: int | None


def lock_budgets(uow: UnitOfWork, promotion_ids: Iterable[str]) -> dict[str, BudgetLeft]:
    """What is left of each budget among `promotion_ids`, locked (FOR UPDATE, in promotion
    id order) until the transaction ends: concurrent earns of a budgeted promotion queue
    here, so the budget they see is the budget they spend. A promotion without a row (a
    file's promotion not seeded) has no budget left."""
    ids = sorted(set(promotion_ids))
    if not ids:
        return {}
    rows = driver.execute(uow, BUDGETS_LOCKED[uow.dialect_name], (ids,)).fetchall()
    return {
        promotion_id: BudgetLeft(
            None if points is None else int(points), None if minor is None else int(minor)
        )
        for promotion_id, points, minor in rows
    }


def grants_of_member(
    uow: UnitOfWork, member_id: str, promotion_ids: Iterable[str]
) -> dict[tuple[str, str], int]:
    """(promotion, cap period) -> the member's grants (read under the member's lock)."""
    ids = sorted(set(promotion_ids))
    if not ids:
        return {}
    rows = driver.execute(uow, GRANTS_OF_MEMBER, (member_id, ids)).fetchall()
    return {(promotion_id, period): int(grants) for promotion_id, period, grants in rows}


def record_grants(
    uow: UnitOfWork, member_id: str, transaction_id: int, grants: Iterable[PromotionGrant]
) -> None:
    """Count each grant against the member's cap and spend its points of the budget; the
    guarded UPDATE refuses to overspend (asserted: the lock taken before makes it exact).
    What a budgeted or capped grant used is kept with the earn, for a reversal to give back
    (`give_back`)."""
    kept = []
    for grant in grants:
        if grant.cap_period is not None:
            driver.execute(
                uow, COUNT_GRANT, (grant.promotion_id, member_id, grant.cap_period, grant.points)
            )
        if grant.budgeted:
            cursor = driver.execute(
                uow,
                SPEND_BUDGET,
                (
                    grant.points,
                    grant.amount_minor,
                    grant.promotion_id,
                    grant.points,
                    grant.amount_minor,
                ),
            )
            assert cursor.rowcount == 1, "a budget is spent under its lock, never overspent"
        if grant.cap_period is not None or grant.budgeted:
            kept.append(
                {
                    "transaction_id": transaction_id,
                    "promotion_id": grant.promotion_id,
                    "member_id": member_id,
                    "cap_period": grant.cap_period,
                    "points": grant.points,
                    "budget_points": grant.budget_points,
                    "budget_amount_minor": grant.amount_minor,
                }
            )
    if kept:
        uow.connection.execute(insert(promotion_earn_grants), kept)


@dataclass(frozen=True)
class EarnGrant:
    """What one earn's grant of a promotion used: `points` of bonus (counted in the member's
    cap row of `cap_period`, None: no cap), `budget_points` of its points budget,
    `budget_amount_minor` of its money budget."""

    promotion_id: str
    cap_period: str | None
    points: int
    budget_points: int
    budget_amount_minor: int


EARN_GRANTS = Statement(
    "SELECT promotion_id, cap_period, points, budget_points, budget_amount_minor"
    " FROM promotion_earn_grants WHERE member_id = %s AND transaction_id = %s"
    " ORDER BY promotion_id"
)
# A reversal's give-back: guarded like the spend, so a counter never goes below zero.
GIVE_BACK_BUDGET = Statement(
    "UPDATE promotions SET spent_points = spent_points - %s,"
    " spent_amount_minor = spent_amount_minor - %s"
    " WHERE promotion_id = %s AND spent_points >= %s AND spent_amount_minor >= %s"
)
GIVE_BACK_CAP_POINTS = Statement(
    "UPDATE promotion_member_grants SET grants = grants - %s, points = points - %s"
    " WHERE promotion_id = %s AND member_id = %s AND cap_period = %s"
    " AND grants - %s > 0 AND points >= %s"
)
DROP_LAST_CAP_GRANT = Statement(
    "DELETE FROM promotion_member_grants"
    " WHERE promotion_id = %s AND member_id = %s AND cap_period = %s AND grants = 1"
)


def earn_grants(uow: UnitOfWork, member_id: str, transaction_id: int) -> list[EarnGrant]:
    """The budgeted or capped grants of earn `transaction_id` of `member_id` (the earn's own
    member), by promotion id."""
    return [
        EarnGrant(promotion_id, cap_period, int(points), int(budget_points), int(amount_minor))
        for promotion_id, cap_period, points, budget_points, amount_minor in driver.execute(
            uow, EARN_GRANTS, (member_id, transaction_id)
        ).fetchall()
    ]


@dataclass(frozen=True)
class GiveBack:
    """What a reversal gives back of one earn grant."""

    grant: EarnGrant
    points: int  # of the bonus, off the member's cap row
    budget_points: int
    budget_amount_minor: int
    cap_grant: bool  # the grant itself, off the member's cap (the earn reversed in full)


def give_back(uow: UnitOfWork, member_id: str, give_backs: Iterable[GiveBack]) -> None:
    """Return to each promotion's budget and the member's cap what a reversal of an earn
    gave back, in promotion id order (the budget rows' lock order, after the member's lock).
    Every statement is guarded and asserted to change its row: a counter never goes below
    what its live grants spent."""
    for back in sorted(give_backs, key=lambda b: b.grant.promotion_id):
        grant = back.grant
        if back.budget_points or back.budget_amount_minor:
            cursor = driver.execute(
                uow,
                GIVE_BACK_BUDGET,
                (
                    back.budget_points,
                    back.budget_amount_minor,
                    grant.promotion_id,
                    back.budget_points,
                    back.budget_amount_minor,
                ),
            )
            assert cursor.rowcount == 1, "a budget gives back only what its live grants spent"
        if grant.cap_period is None or not (back.points or back.cap_grant):
            continue
        dropped = 0
        if back.cap_grant:
            dropped = driver.execute(
                uow, DROP_LAST_CAP_GRANT, (grant.promotion_id, member_id, grant.cap_period)
            ).rowcount
        if not dropped:
            taken = 1 if back.cap_grant else 0
            cursor = driver.execute(
                uow,
                GIVE_BACK_CAP_POINTS,
                (
                    taken,
                    back.points,
                    grant.promotion_id,
                    member_id,
                    grant.cap_period,
                    taken,
                    back.points,
                ),
            )
            assert cursor.rowcount == 1, "a member's cap row counts each of its live grants"

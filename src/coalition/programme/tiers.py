"""Member tiers: qualifying points, the current tier, upgrades at earn, the downgrade review.

Every function that changes a member's tier runs under that member's ledger lock
(journal.lock_member_balance), the same lock every earn takes, so an upgrade and a review of
one member never interleave.

`current_tier(uow, member_id, ladder)` is the read the member profile uses. The ladder is
always the caller's: the programme its process built at start (programme/config.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, insert, select

from coalition.domain.tiers import Tier, TierLadder, qualifying_months
from coalition.events.outbox import record_tier_change_events
from coalition.ledger import journal
from coalition.store.schema import member_tiers, tier_changes, tier_qualifying_months
from coalition.store.unit_of_work import UnitOfWork

REVIEW_BATCH_SIZE_DEFAULT = 500


@dataclass(frozen=True)
class MemberTier:
    tier: Tier
    since: datetime | None  # None: the base tier, held since enrolment


@dataclass(frozen=True)
class TierChange:
    tier_change_id: int
    member_id: str
    tier_id_before: str
    tier_id_after: str
    qualifying_points: int
    cause: str
    change_time: datetime


def current_tier(uow: UnitOfWork, member_id: str, ladder: TierLadder) -> MemberTier:
    """The member's tier now on `ladder` (one primary-key read); the base tier when none was
    reached."""
    if len(ladder.tiers) == 1:  # a one-tier programme: every member is in it, nothing to read
        return MemberTier(ladder.base, None)
    row = uow.connection.execute(
        select(member_tiers.c.tier_id, member_tiers.c.since).where(
            member_tiers.c.member_id == member_id
        )
    ).one_or_none()
    if row is None or ladder.get(row.tier_id) == ladder.base:
        return MemberTier(ladder.base, None)
    return MemberTier(ladder.get(row.tier_id), row.since)


def qualifying_points(uow: UnitOfWork, member_id: str, at: datetime) -> int:
    """Points credited by the member's earns in the rolling window at `at` (at most 12 rows)."""
    first_month, last_month = qualifying_months(at)
    points = uow.connection.execute(
        select(func.coalesce(func.sum(tier_qualifying_months.c.points), 0)).where(
            tier_qualifying_months.c.member_id == member_id,
            tier_qualifying_months.c.calendar_month.between(first_month, last_month),
        )
    ).scalar_one()
    return int(points)


def upgrade_after_earn(
    uow: UnitOfWork,
    member_id: str,
    partner_id: str,
    transaction_id: int,
    ladder: TierLadder,
    now: datetime,
) -> TierChange | None:
    """Raise the member's tier when its qualifying points now reach a higher one.

    Called by earn under the member lock; never lowers a tier (that is the review's job)."""
    tier_before = current_tier(uow, member_id, ladder).tier
    if tier_before == ladder.top:  # nothing higher to reach: spare the earn two reads
        return None
    points = qualifying_points(uow, member_id, now)
    tier_after = ladder.qualified_for(points)
    if ladder.rank(tier_after.tier_id) <= ladder.rank(tier_before.tier_id):
        return None
    return _change_tier(
        uow,
        member_id,
        tier_before,
        tier_after,
        points,
        ladder,
        "earn",
        transaction_id,
        partner_id,
        now,
    )


@dataclass(frozen=True)
class ReviewReport:
    members_reviewed: int
    members_downgraded: int


def review_tiers(
    unit_of_work: Callable[[], UnitOfWork],
    ladder: TierLadder,
    as_of: datetime,
    now: datetime,
    batch_size: int = REVIEW_BATCH_SIZE_DEFAULT,
) -> ReviewReport:
    """The scheduled downgrade: every member above the base tier whose qualifying points at
    `as_of` no longer reach it moves down to the tier they do reach.

    Walks member_tiers by member id in batches of `batch_size`, one unit of work per batch."""
    assert 0 < batch_size <= 10_000
    assert as_of <= now, "a review never looks into the future"
    after_member_id = ""
    reviewed = downgraded = 0
    while True:
        with unit_of_work() as uow:
            batch = _review_batch(uow, after_member_id, as_of, batch_size)
            if not batch:
                return ReviewReport(reviewed, downgraded)
            for member_id, tier_id, points in batch:
                if ladder.rank(ladder.qualified_for(points).tier_id) < ladder.rank(tier_id):
                    downgraded += _downgrade(uow, member_id, ladder, as_of, now)
            uow.commit()
        reviewed += len(batch)
        after_member_id = batch[-1][0]


def _review_batch(
    uow: UnitOfWork, after_member_id: str, as_of: datetime, batch_size: int
) -> list[tuple[str, str, int]]:
    """One set-based read: the next members above base, with their qualifying points."""
    first_month, last_month = qualifying_months(as_of)
    months = tier_qualifying_months.c
    statement = (
        select(
            member_tiers.c.member_id,
            member_tiers.c.tier_id,
            func.coalesce(func.sum(months.points), 0),
        )
        .outerjoin(
            tier_qualifying_months,
            and_(
                months.member_id == member_tiers.c.member_id,
                months.calendar_month.between(first_month, last_month),
            ),
        )
        .where(member_tiers.c.member_id > after_member_id)
        .group_by(member_tiers.c.member_id, member_tiers.c.tier_id)
        .order_by(member_tiers.c.member_id)
        .limit(batch_size)
    )
    return [(row[0], row[1], int(row[2])) for row in uow.connection.execute(statement)]


def _downgrade(
    uow: UnitOfWork, member_id: str, ladder: TierLadder, as_of: datetime, now: datetime
) -> int:
    # Decide again under the member lock: an earn may have raised the points since the read.
    journal.lock_member_balance(uow, member_id)
    tier_before = current_tier(uow, member_id, ladder).tier
    points = qualifying_points(uow, member_id, as_of)
    tier_after = ladder.qualified_for(points)
    if ladder.rank(tier_after.tier_id) >= ladder.rank(tier_before.tier_id):
        return 0
    _change_tier(uow, member_id, tier_before, tier_after, points, ladder, "review", None, None, now)
    return 1


def _change_tier(
    uow: UnitOfWork,
    member_id: str,
    tier_before: Tier,
    tier_after: Tier,
    points: int,
    ladder: TierLadder,
    cause: str,
    transaction_id: int | None,
    partner_id: str | None,
    now: datetime,
) -> TierChange:
    tier_change_id = uow.connection.execute(
        insert(tier_changes)
        .values(
            member_id=member_id,
            tier_id_before=tier_before.tier_id,
            tier_id_after=tier_after.tier_id,
            qualifying_points=points,
            cause=cause,
            transaction_id=transaction_id,
            change_time=now,
        )
        .returning(tier_changes.c.tier_change_id)
    ).scalar_one()
    _store_current_tier(uow, member_id, tier_after, ladder, now)
    record_tier_change_events(
        uow,
        tier_change_id=tier_change_id,
        member_id=member_id,
        also_partner_ids=[partner_id] if partner_id else [],
        now=now,
    )
    return TierChange(
        tier_change_id, member_id, tier_before.tier_id, tier_after.tier_id, points, cause, now
    )


def _store_current_tier(
    uow: UnitOfWork, member_id: str, tier: Tier, ladder: TierLadder, now: datetime
) -> None:
    # Only members above the base tier have a row, so the review walks just those.
    uow.connection.execute(delete(member_tiers).where(member_tiers.c.member_id == member_id))
    if tier != ladder.base:
        uow.connection.execute(
            insert(member_tiers).values(member_id=member_id, tier_id=tier.tier_id, since=now)
        )

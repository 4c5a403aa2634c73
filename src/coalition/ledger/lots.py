"""Lots: what each earn issued and what is left of it. Called only by the ledger operations,
under the member's lock (see journal.lock_member_balance).

Invariant: the remaining points of a member's lots sum to the member's balance.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update

from coalition.domain.errors import FailedPrecondition
from coalition.store.schema import lot_consumptions, lots
from coalition.store.unit_of_work import UnitOfWork

# Lots are read in pages while consuming, never all of a member's at once.
LOT_PAGE_SIZE = 64
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def consume(uow: UnitOfWork, member_id: str, burn_transaction_id: int, points: int) -> None:
    """Take `points` from the member's lots, earliest expiry first (never-expiring last)."""
    assert points > 0
    points_left = points
    while points_left > 0:
        page = uow.connection.execute(
            select(lots.c.lot_id, lots.c.remaining_points)
            .where(lots.c.member_id == member_id, lots.c.remaining_points > 0)
            .order_by(lots.c.expires_at.asc().nulls_last(), lots.c.lot_id)
            .limit(LOT_PAGE_SIZE)
        ).all()
        assert page, f"lots of member {member_id} hold less than its balance"
        taken: list[tuple[int, int]] = []
        for lot_id, remaining_points in page:
            points_taken = min(remaining_points, points_left)
            taken.append((lot_id, points_taken))
            points_left -= points_taken
            if points_left == 0:
                break
        _move_lots(uow, member_id, burn_transaction_id, burn_transaction_id, taken)


def restore(
    uow: UnitOfWork,
    member_id: str,
    burn_transaction_id: int,
    reversal_transaction_id: int,
    points: int,
) -> None:
    """Give back `points` of a burn to the lots it consumed, latest expiry first.

    The consumptions stay with the burn's member and a merge since moved the lots to
    `member_id` (the survivor): two statements, not a join (on Citus the first reads every
    shard, the second the member's)."""
    assert points > 0
    consumed = func.sum(lot_consumptions.c.points)
    by_lot = dict(
        uow.connection.execute(
            select(lot_consumptions.c.lot_id, consumed)
            .where(lot_consumptions.c.burn_transaction_id == burn_transaction_id)
            .group_by(lot_consumptions.c.lot_id)
            .having(consumed > 0)
        ).all()
    )
    expiries = uow.connection.execute(
        select(lots.c.lot_id, lots.c.expires_at).where(
            lots.c.member_id == member_id, lots.c.lot_id.in_(sorted(by_lot))
        )
    ).all()
    assert len(expiries) == len(by_lot), f"the lots of burn {burn_transaction_id} are the member's"
    # Never-expiring lots first, then the latest expiry, then the latest lot.
    rows = [
        (lot_id, by_lot[lot_id])
        for lot_id, _ in sorted(
            expiries, key=lambda row: (row[1] is None, row[1] or _EARLIEST, row[0]), reverse=True
        )
    ]
    given_back: list[tuple[int, int]] = []
    points_left = points
    for lot_id, points_consumed in rows:
        points_given = min(points_consumed, points_left)
        given_back.append((lot_id, -points_given))
        points_left -= points_given
        if points_left == 0:
            break
    assert points_left == 0, f"burn {burn_transaction_id} consumed less than is being reversed"
    _move_lots(uow, member_id, burn_transaction_id, reversal_transaction_id, given_back)


def take_from_earned_lot(
    uow: UnitOfWork, member_id: str, earn_transaction_id: int, points: int
) -> None:
    """Remove `points` from the lot an earn created (now `member_id`'s), for a reversal."""
    result = uow.connection.execute(
        update(lots)
        .where(
            lots.c.member_id == member_id,
            lots.c.transaction_id == earn_transaction_id,
            lots.c.remaining_points >= points,
        )
        .values(remaining_points=lots.c.remaining_points - points)
    )
    if result.rowcount != 1:
        raise FailedPrecondition(
            "POINTS_ALREADY_SPENT",
            f"only part of the points of earn {earn_transaction_id} is left unspent; "
            f"reverse at most what is left, or reverse the burns first",
            {"transaction_id": earn_transaction_id, "points_requested": points},
        )


def _move_lots(
    uow: UnitOfWork,
    member_id: str,
    burn_transaction_id: int,
    transaction_id: int,
    points_by_lot: list[tuple[int, int]],
) -> None:
    """Record consumption (positive) or restitution (negative) and update the lots."""
    if not points_by_lot:
        return
    uow.connection.execute(
        insert(lot_consumptions),
        [
            {
                "transaction_id": transaction_id,
                "member_id": member_id,
                "burn_transaction_id": burn_transaction_id,
                "lot_id": lot_id,
                "points": points,
            }
            for lot_id, points in points_by_lot
        ],
    )
    for lot_id, points in points_by_lot:
        result = uow.connection.execute(
            update(lots)
            .where(
                lots.c.member_id == member_id,
                lots.c.lot_id == lot_id,
                lots.c.remaining_points >= points,
            )
            .values(remaining_points=lots.c.remaining_points - points)
        )
        assert result.rowcount == 1, f"lot {lot_id} cannot give {points} points"

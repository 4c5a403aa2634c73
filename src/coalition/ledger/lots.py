"""Lots: what each earn issued and what is left of it. Called only by the ledger operations,
under the member's lock (see journal.lock_member_balance).

Invariant: the remaining points of a member's lots sum to the member's balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select, update

from coalition.domain.errors import FailedPrecondition
from coalition.ledger.writer import LotMove
from coalition.store import driver
from coalition.store.driver import IN_LIST, Statement
from coalition.store.schema import lot_consumptions, lots
from coalition.store.unit_of_work import UnitOfWork

# Lots are read in pages while planning a consumption, never all of a member's at once.
LOT_PAGE_SIZE = 64
_EARLIEST = datetime.min.replace(tzinfo=UTC)

# The member's lots a debit may take from, earliest expiry first (never-expiring last): those
# with points left, and those the same entry gives points back to first.
SPENDABLE_LOTS = Statement(
    "SELECT lot_id, remaining_points FROM lots WHERE member_id = %s"
    f" AND (remaining_points > 0 OR lot_id {IN_LIST} %s)"
    " ORDER BY expires_at ASC NULLS LAST, lot_id LIMIT %s OFFSET %s"
)


def consumption(
    uow: UnitOfWork, member_id: str, points: int, given_back: Sequence[LotMove] = ()
) -> tuple[LotMove, ...]:
    """The moves that take `points` from the member's lots, earliest expiry first, after the
    same entry's `given_back` moves (a capture gives its hold back before it spends). The
    ledger writer applies them with the entry."""
    assert points > 0 and all(move.points < 0 for move in given_back)
    returned: dict[int, int] = {}
    for move in given_back:
        returned[move.lot_id] = returned.get(move.lot_id, 0) - move.points
    taken: list[LotMove] = []
    points_left, offset = points, 0
    while points_left > 0:
        page = driver.execute(
            uow, SPENDABLE_LOTS, (member_id, sorted(returned), LOT_PAGE_SIZE, offset)
        ).fetchall()
        assert page, f"lots of member {member_id} hold less than its balance"
        for lot_id, remaining_points in page:
            points_taken = min(remaining_points + returned.get(lot_id, 0), points_left)
            if points_taken > 0:
                taken.append(LotMove(lot_id, points_taken))
                points_left -= points_taken
            if points_left == 0:
                break
        offset += LOT_PAGE_SIZE
    return tuple(taken)


def restitution(
    uow: UnitOfWork, member_id: str, burn_transaction_id: int, points: int
) -> tuple[LotMove, ...]:
    """The moves that give back `points` of a burn (or hold) to the lots it consumed, latest
    expiry first.

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
    given_back: list[LotMove] = []
    points_left = points
    for lot_id, points_consumed in rows:
        points_given = min(int(points_consumed), points_left)
        given_back.append(LotMove(lot_id, -points_given, burn_transaction_id))
        points_left -= points_given
        if points_left == 0:
            break
    assert points_left == 0, f"burn {burn_transaction_id} consumed less than is being reversed"
    return tuple(given_back)


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

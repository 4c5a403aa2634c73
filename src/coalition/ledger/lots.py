"""Lots: what each earn issued and what is left of it. Called only by the ledger operations,
under the member's lock (see journal.lock_member_balance).

Invariant: the remaining points of a member's lots sum to the member's balance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from coalition.domain.errors import FailedPrecondition
from coalition.ledger.writer import LotMove
from coalition.store import driver
from coalition.store.driver import IN_BIGINT_LIST, IN_LIST, Statement
from coalition.store.schema import lots
from coalition.store.unit_of_work import UnitOfWork

# Lots are read in pages while planning a consumption, never all of a member's at once.
LOT_PAGE_SIZE = 64
_EARLIEST = datetime.min.replace(tzinfo=UTC)

# The member's lots a debit may take from, earliest expiry first (never-expiring last): those
# with points left, and those the same entry gives points back to first.
SPENDABLE_LOTS = Statement(
    "SELECT lot_id, remaining_points FROM lots WHERE member_id = %s"
    f" AND (remaining_points > 0 OR lot_id {IN_BIGINT_LIST} %s)"
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


# The first page of spendable lots of each of several members, each lot with its position in
# consumption order (`first_pages` orders them).
SPENDABLE_LOTS_OF_MEMBERS_SQL = (
    "SELECT member_id, lot_id, remaining_points, position FROM (SELECT member_id, lot_id,"
    " remaining_points, row_number() OVER (PARTITION BY member_id"
    " ORDER BY expires_at ASC NULLS LAST, lot_id) AS position"
    f" FROM lots WHERE member_id {IN_LIST} %s AND remaining_points > 0) AS spendable"
    " WHERE position <= %s"
)
SPENDABLE_LOTS_OF_MEMBERS = Statement(SPENDABLE_LOTS_OF_MEMBERS_SQL)

# Each member's first page of spendable lots, (lot id, points left) in consumption order.
LotPages = dict[str, list[tuple[int, int]]]


def first_pages(member_ids: Iterable[str], rows: Iterable[Sequence[Any]]) -> LotPages:
    """The pages of `member_ids` from rows of SPENDABLE_LOTS_OF_MEMBERS_SQL (a member with no
    lot left has an empty page)."""
    pages: LotPages = {member_id: [] for member_id in member_ids}
    for member_id, lot_id, remaining_points, _ in sorted(rows, key=lambda row: (row[0], row[3])):
        pages[member_id].append((lot_id, remaining_points))
    return pages


def consumptions(
    uow: UnitOfWork, debits: Sequence[tuple[str, int]], read_pages: LotPages | None = None
) -> list[tuple[LotMove, ...]]:
    """The moves of each debit (member, points), consumed in order, earliest expiry first, as
    if each debit followed the previous one: from the first pages read under the members'
    locks (`read_pages`, availability.lock_members_for_debit) or else one statement for the
    group's; a member whose debits need more than a page is planned by `consumption`."""
    assert debits and all(points > 0 for _, points in debits)
    totals: dict[str, int] = defaultdict(int)
    for member_id, points in debits:
        totals[member_id] += points
    pages = {member_id: list(page) for member_id, page in (read_pages or {}).items()}
    unread = sorted(set(totals) - set(pages))
    if unread:
        rows = driver.fetch_all(uow, SPENDABLE_LOTS_OF_MEMBERS, (unread, LOT_PAGE_SIZE))
        pages.update(first_pages(unread, rows))
    for member_id, total in totals.items():
        if sum(points for _, points in pages[member_id]) < total:
            moves = consumption(uow, member_id, total)
            pages[member_id] = [(move.lot_id, move.points) for move in moves]
    return [_take(pages[member_id], points) for member_id, points in debits]


def _take(lots_left: list[tuple[int, int]], points: int) -> tuple[LotMove, ...]:
    """Take `points` from the front of `lots_left` (lot id, points left), which it updates."""
    taken: list[LotMove] = []
    while points > 0:
        assert lots_left, "a debit was checked against the member's balance"
        lot_id, points_left = lots_left[0]
        points_taken = min(points_left, points)
        taken.append(LotMove(lot_id, points_taken))
        points -= points_taken
        if points_taken == points_left:
            lots_left.pop(0)
        else:
            lots_left[0] = (lot_id, points_left - points_taken)
    return tuple(taken)


CONSUMED_BY_BURN = Statement(
    "SELECT lot_id, SUM(points) FROM lot_consumptions WHERE burn_transaction_id = %s"
    " GROUP BY lot_id HAVING SUM(points) > 0"
)
EXPIRIES = Statement(
    f"SELECT lot_id, expires_at FROM lots WHERE member_id = %s AND lot_id {IN_BIGINT_LIST} %s"
)


def restitution(
    uow: UnitOfWork, member_id: str, burn_transaction_id: int, points: int
) -> tuple[LotMove, ...]:
    """The moves that give back `points` of a burn (or hold) to the lots it consumed, latest
    expiry first.

    The consumptions stay with the burn's member and a merge since moved the lots to
    `member_id` (the survivor): two statements, not a join (on Citus the first reads every
    shard, the second the member's)."""
    assert points > 0
    by_lot = dict(driver.execute(uow, CONSUMED_BY_BURN, (burn_transaction_id,)).fetchall())
    expiries = [
        (lot_id, driver.utc_datetime(expires_at))
        for lot_id, expires_at in driver.execute(uow, EXPIRIES, (member_id, sorted(by_lot)))
    ]
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

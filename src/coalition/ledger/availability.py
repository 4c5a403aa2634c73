"""What a member can spend now, whether or not the jobs have run.

Two jobs post time-based changes in bulk: the hold TTL release (ledger/holds.py) and lot
expiry (ledger/expiry.py). Between their runs a hold past its TTL is as good as released, and
a lot past its `expires_at` as good as expired, so:

- every debit (burn, hold) first posts the member's own due changes under its lock: it
  releases the member's holds past their TTL, then expires its lots past expiry. In that
  order, because a released hold gives points back to the lots it took them from, which may
  have expired meanwhile. The burn then consumes only unexpired lots;
- every balance read (GetBalance, Quote, a profile's balance) counts what is due as done: it
  adds the points of holds past their TTL and subtracts the points of lots past expiry,
  including those a released hold would give back to such lots.

The balance cache and the lot invariant (lot remainders = balance cache) stay exact: they
describe what is posted, and `coalition reconcile integrity` checks them as such; only the
reads interpret what is due.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from coalition.ledger import expiry, holds, journal, writer
from coalition.ledger import lots as lot_plans
from coalition.store import driver
from coalition.store.driver import IN_LIST, Statement
from coalition.store.schema import holds as holds_table
from coalition.store.schema import lot_consumptions, lots
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Available:
    spendable_points: int  # what a burn can take now
    held_points: int  # reserved by open holds within their TTL


def lock_member_for_debit(uow: UnitOfWork, member_id: str, now: datetime) -> int:
    """Lock the member, post its due hold releases and lot expiries, and return its
    spendable balance (now exactly its balance cache)."""
    holds.lock_member_releasing_expired_holds(uow, member_id, now)
    expiry.expire_due_lots_of_member(uow, member_id, now)
    return journal.member_balance(uow, member_id)


# Members of a group with a change due (an open hold past its TTL or a lot past its expiry
# still holding points; no survivor), those merged (with their survivor), and the first page
# of spendable lots of every member (ledger/lots.py): one statement for the group. Usually it
# finds no change due, and the pages are what the group's debits take.
DUE_CHANGES_MERGED_AND_LOTS = Statement(
    "SELECT member_id, CAST(NULL AS TEXT), CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),"
    " CAST(NULL AS BIGINT) FROM holds"
    f" WHERE member_id {IN_LIST} %s AND status = 'open' AND expire_time <= %s"
    " UNION SELECT member_id, NULL, NULL, NULL, NULL FROM lots"
    f" WHERE member_id {IN_LIST} %s AND remaining_points > 0 AND expires_at <= %s"
    " UNION SELECT member_id, merged_into_member_id, NULL, NULL, NULL FROM members"
    f" WHERE member_id {IN_LIST} %s AND merged_into_member_id IS NOT NULL"
    " UNION ALL SELECT member_id, NULL, lot_id, remaining_points, position"
    f" FROM ({lot_plans.SPENDABLE_LOTS_OF_MEMBERS_SQL}) AS pages"
)


@dataclass(frozen=True)
class Debitable:
    """What a group's members can spend now, by member id, under their locks; and the first
    page of spendable lots of each member that had no change due (lots.consumptions)."""

    spendable_points: dict[str, int]
    lot_pages: lot_plans.LotPages


def lock_members_for_debit(
    uow: UnitOfWork, balances: Mapping[str, int], now: datetime
) -> Debitable:
    """`lock_member_for_debit` for a group whose members the caller locked, with `balances`
    (by member id) read under those locks: one statement finds the members with due changes,
    whose changes are posted one member at a time, and reads every member's first page of
    lots (kept for those with no change due).

    A member merged while the caller waited for its lock raises writer.MembersMerged, before
    anything is posted (a debit must not be judged against a closed account's balance)."""
    member_ids = sorted(balances)
    parameters = (member_ids, now, member_ids, now, member_ids, member_ids, lot_plans.LOT_PAGE_SIZE)
    rows = driver.fetch_all(uow, DUE_CHANGES_MERGED_AND_LOTS, parameters)
    survivors = {row[0]: row[1] for row in rows if row[1] is not None}
    if survivors:
        raise writer.MembersMerged(survivors)
    due = {row[0] for row in rows if row[2] is None}
    spendable = dict(balances)
    for member_id in sorted(due):
        spendable[member_id] = lock_member_for_debit(uow, member_id, now)
    pages = lot_plans.first_pages(
        (m for m in member_ids if m not in due),
        (row[:1] + row[2:] for row in rows if row[2] is not None and row[0] not in due),
    )
    return Debitable(spendable, pages)


def available_points(uow: UnitOfWork, member_id: str, now: datetime) -> Available:
    """The member's spendable and held points at `now`, as if every due change were posted
    (a read: no lock, nothing written)."""
    held_points, released_points = holds.held_points(uow, member_id, now)
    balance_points = journal.member_balance(uow, member_id)
    spendable_points = (
        balance_points
        + released_points
        - _due_lot_points(uow, member_id, now)
        - _released_to_due_lots(uow, member_id, now)
    )
    assert spendable_points >= 0, f"member {member_id}: due changes exceed its balance"
    return Available(spendable_points, held_points)


def _due_lot_points(uow: UnitOfWork, member_id: str, now: datetime) -> int:
    points = uow.connection.execute(
        select(func.coalesce(func.sum(lots.c.remaining_points), 0)).where(
            lots.c.member_id == member_id,
            lots.c.remaining_points > 0,
            lots.c.expires_at <= now,
        )
    ).scalar_one()
    return int(points)


def _released_to_due_lots(uow: UnitOfWork, member_id: str, now: datetime) -> int:
    """Points that open holds past their TTL took from lots now past expiry: their release
    gives them back to those lots, which then expire."""
    released_holds = select(holds_table.c.hold_transaction_id).where(
        holds_table.c.member_id == member_id,
        holds_table.c.status == "open",
        holds_table.c.expire_time <= now,
    )
    points = uow.connection.execute(
        select(func.coalesce(func.sum(lot_consumptions.c.points), 0))
        .select_from(lot_consumptions)
        # All the member's: a merge refuses a member with open holds (identity/merge.py).
        .join(
            lots,
            (lots.c.member_id == lot_consumptions.c.member_id)
            & (lots.c.lot_id == lot_consumptions.c.lot_id),
        )
        .where(
            lot_consumptions.c.member_id == member_id,
            lot_consumptions.c.burn_transaction_id.in_(released_holds.scalar_subquery()),
            lots.c.member_id == member_id,
            lots.c.expires_at <= now,
        )
    ).scalar_one()
    return int(points)

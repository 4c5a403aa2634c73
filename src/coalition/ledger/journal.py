"""The journal: the one place that inserts journal transactions and postings.

Every transaction is balanced (its postings sum to zero) and moves the balance cache of every
member account it posts to, in the same database transaction, under the members' row locks.
All but merges touch exactly one member account.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Label, Row, Select, func, insert, select, update
from sqlalchemy.orm import aliased

from coalition.domain.errors import FailedPrecondition
from coalition.events.outbox import record_transaction_event
from coalition.ledger.accounts import member_account_id
from coalition.store.schema import accounts, journal_transactions, members, postings
from coalition.store.unit_of_work import UnitOfWork

MEMBER_ACCOUNT_PREFIX = member_account_id("")


@dataclass(frozen=True)
class Posting:
    account_id: str
    points: int


@dataclass(frozen=True)
class JournalEntry:
    """A business operation to record: who, what, and the balanced postings."""

    kind: str  # earn, burn, reverse
    partner_id: str
    member_id: str
    request_id: str
    occurred_at: datetime
    postings: tuple[Posting, ...]
    rate_version_id: str | None = None
    parent_transaction_id: int | None = None
    amount_minor: int | None = None
    currency: str | None = None
    native_points: int | None = None
    partner_reference: str | None = None
    reason: str | None = None

    @property
    def member_points_delta(self) -> int:
        member_account = member_account_id(self.member_id)
        return sum(p.points for p in self.postings if p.account_id == member_account)


@dataclass(frozen=True)
class TransactionRecord:
    """A committed journal transaction, as callers see it."""

    transaction_id: int
    kind: str
    partner_id: str
    member_id: str
    points_delta: int
    balance_points_after: int
    occurred_at: datetime
    create_time: datetime
    request_id: str
    rate_version_id: str | None
    parent_transaction_id: int | None
    amount_minor: int | None
    currency: str | None
    native_points: int | None
    partner_reference: str | None
    reason: str | None
    points_reversed: int


def lock_member_balance(uow: UnitOfWork, member_id: str) -> int:
    """Lock the member's account row for the rest of the unit of work; return its balance.

    Every ledger mutation takes this lock first (SELECT ... FOR UPDATE on PostgreSQL; SQLite
    already serialises writers), so all checks on a member's balance, lots and reversals see
    a state no other request can change before commit.
    """
    statement = (
        select(accounts.c.balance_points)
        .where(accounts.c.account_id == member_account_id(member_id))
        .with_for_update()
    )
    balance_points = uow.connection.execute(statement).scalar_one()
    assert balance_points >= 0, f"negative balance cache for member {member_id}"
    _refuse_merged_member(uow, member_id)
    return int(balance_points)


def lock_member_balances(uow: UnitOfWork, member_ids: Iterable[str]) -> dict[str, int]:
    """Lock several members' account rows, in account-id order, so that requests locking
    overlapping sets never wait on each other in a circle; return balances by account id.

    Unlike `lock_member_balance` this does not refuse merged members: the caller does, for
    the members it is about to post to.
    """
    account_ids = sorted({member_account_id(member_id) for member_id in member_ids})
    if not account_ids:
        return {}
    balances = dict(
        uow.connection.execute(
            select(accounts.c.account_id, accounts.c.balance_points)
            .where(accounts.c.account_id.in_(account_ids))
            .order_by(accounts.c.account_id)
            .with_for_update()
        ).all()
    )
    assert len(balances) == len(account_ids), "every member has its account"
    assert all(balance >= 0 for balance in balances.values()), "negative balance cache"
    return balances


def _refuse_merged_member(uow: UnitOfWork, member_id: str) -> None:
    # Read after the lock, in a statement of its own, so that it sees a merge that committed
    # while this request waited: a merged member's account is closed, and points posted to it
    # would be stranded. The caller resolved the member just before a merge; a retry resolves
    # it to the survivor.
    survivor_member_id = uow.connection.execute(
        select(members.c.merged_into_member_id).where(members.c.member_id == member_id)
    ).scalar_one()
    if survivor_member_id is not None:
        raise FailedPrecondition(
            "MEMBER_MERGED",
            f"member {member_id} was merged into member {survivor_member_id}; retry with it",
            {"member_id": member_id, "survivor_member_id": survivor_member_id},
            retry_resolves=True,
        )


def member_balance(uow: UnitOfWork, member_id: str) -> int:
    """The member's balance cache, without a lock (for reads)."""
    balance_points = uow.connection.execute(
        select(accounts.c.balance_points).where(
            accounts.c.account_id == member_account_id(member_id)
        )
    ).scalar_one()
    return int(balance_points)


def post(uow: UnitOfWork, entry: JournalEntry, now: datetime) -> TransactionRecord:
    """Insert one balanced journal transaction and move the balance cache of every member
    account it posts to (the caller holds all their locks, taken in member id order)."""
    assert entry.postings, "a transaction has postings"
    assert sum(p.points for p in entry.postings) == 0, "postings must sum to zero"
    assert all(p.points != 0 for p in entry.postings), "no empty postings"
    member_points_delta = entry.member_points_delta
    # A capture of all that a hold held moves only member_hold:<id> (ledger/holds.py).
    assert member_points_delta != 0 or entry.kind == "capture", "the member's balance moves"
    for other_member_id, points_delta in _other_member_deltas(entry):
        _move_member_balance(uow, other_member_id, points_delta)
    balance_points_after = (
        _move_member_balance(uow, entry.member_id, member_points_delta)
        if member_points_delta
        else member_balance(uow, entry.member_id)
    )
    row: dict[str, Any] = {
        "kind": entry.kind,
        "partner_id": entry.partner_id,
        "member_id": entry.member_id,
        "points_delta": member_points_delta,
        "balance_points_after": balance_points_after,
        "occurred_at": entry.occurred_at,
        "create_time": now,
        "request_id": entry.request_id,
        "rate_version_id": entry.rate_version_id,
        "parent_transaction_id": entry.parent_transaction_id,
        "amount_minor": entry.amount_minor,
        "currency": entry.currency,
        "native_points": entry.native_points,
        "partner_reference": entry.partner_reference,
        "reason": entry.reason,
    }
    transaction_id = uow.connection.execute(
        insert(journal_transactions).values(row).returning(journal_transactions.c.transaction_id)
    ).scalar_one()
    uow.connection.execute(
        insert(postings),
        [
            {
                "transaction_id": transaction_id,
                "account_id": p.account_id,
                "points": p.points,
                "create_time": now,
            }
            for p in entry.postings
        ],
    )
    # The partner's event, in this same database transaction (events/outbox.py).
    record_transaction_event(
        uow,
        transaction_id=transaction_id,
        transaction_kind=entry.kind,
        partner_id=entry.partner_id,
        member_id=entry.member_id,
        points_delta=member_points_delta,
        balance_points_after=balance_points_after,
        now=now,
    )
    return TransactionRecord(transaction_id=transaction_id, points_reversed=0, **row)


def _other_member_deltas(entry: JournalEntry) -> list[tuple[str, int]]:
    """Net points of each member account other than the entry's own, in member id order.

    Only a merge has any (the duplicate's side); for every other kind this is one pass over
    two postings that finds nothing.
    """
    deltas: dict[str, int] = {}
    own_account_id = member_account_id(entry.member_id)
    for posting in entry.postings:
        if posting.account_id.startswith(MEMBER_ACCOUNT_PREFIX) and (
            posting.account_id != own_account_id
        ):
            member_id = posting.account_id.removeprefix(MEMBER_ACCOUNT_PREFIX)
            deltas[member_id] = deltas.get(member_id, 0) + posting.points
    assert all(deltas.values()), "every member account a transaction posts to moves"
    return sorted(deltas.items())


def _move_member_balance(uow: UnitOfWork, member_id: str, points_delta: int) -> int:
    # The guard repeats the caller's check at the row itself: a balance can never go negative,
    # even if a caller forgot to take the member lock.
    account = accounts.c
    statement = (
        update(accounts)
        .where(account.account_id == member_account_id(member_id))
        .where(account.balance_points + points_delta >= 0)
        .values(balance_points=account.balance_points + points_delta)
        .returning(account.balance_points)
    )
    balance_points_after = uow.connection.execute(statement).scalar_one_or_none()
    if balance_points_after is None:
        raise FailedPrecondition(
            "INSUFFICIENT_POINTS",
            f"member {member_id} has too few points for a debit of {-points_delta}",
            {"member_id": member_id, "points_requested": -points_delta},
        )
    return int(balance_points_after)


def _points_reversed_column() -> Label[Any]:
    children = aliased(journal_transactions)
    return (
        select(func.coalesce(func.sum(children.c.points_delta), 0))
        .where(children.c.parent_transaction_id == journal_transactions.c.transaction_id)
        .scalar_subquery()
        .label("children_points_delta")
    )


def select_transactions() -> Select[Any]:
    """SELECT of transaction records, with the points already reversed of each."""
    return select(journal_transactions, _points_reversed_column())


def record_from_row(row: Row[Any]) -> TransactionRecord:
    values = dict(row._mapping)
    children_points_delta = values.pop("children_points_delta")
    return TransactionRecord(points_reversed=abs(int(children_points_delta)), **values)


def find_transaction(uow: UnitOfWork, transaction_id: int) -> TransactionRecord | None:
    statement = select_transactions().where(journal_transactions.c.transaction_id == transaction_id)
    row = uow.connection.execute(statement).one_or_none()
    return None if row is None else record_from_row(row)

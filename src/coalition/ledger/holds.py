"""Burn holds: state, closing a hold, and releasing holds past their TTL.

Model (docs/programme.md): a hold is a journal transaction of kind 'hold' that moves points
from member:<id> to member_hold:<id> and consumes the member's lots, exactly like a burn
would. So the member's balance cache is what the member can spend now (available), the lot
invariant (lot remainders = member balance) holds unchanged, and held points are the balance
of member_hold:<id>, equal to the points of its open holds. A hold closes once:

- capture ('capture'): member_hold -held, partner:<p>:redemption +captured, member +released;
  the hold's lot consumptions are given back and the captured points consumed again under
  the capture, so the capture's consumptions name the lots (and issuers) that funded it;
- void ('void'), also used when the TTL has passed (reason 'hold expired'):
  member_hold -held, member +held; the hold's lot consumptions are given back.

Every close runs under the member's lock and flips the row with a guarded UPDATE
(`WHERE status = 'open'`), so no hold is ever closed twice, whatever the concurrency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, update

from coalition.ledger import journal, lots
from coalition.ledger.accounts import member_account_id, partner_redemption_account_id
from coalition.ledger.journal import JournalEntry, Posting, TransactionRecord
from coalition.ledger.system_accounts import member_hold_account_id
from coalition.store.schema import holds, journal_transactions, postings
from coalition.store.unit_of_work import UnitOfWork

# Holds released per member before a burn, and per job batch: both bounded.
RELEASE_PER_MEMBER_MAX = 100
RELEASE_BATCH_SIZE_DEFAULT = 200


@dataclass(frozen=True)
class Hold:
    hold_id: int  # the id of the hold's journal transaction
    partner_id: str
    member_id: str
    points_held: int
    status: str  # open, captured, voided, expired
    expire_time: datetime
    points_captured: int | None
    close_transaction_id: int | None
    create_time: datetime


def hold_from_row(row: Row[Any]) -> Hold:
    return Hold(
        hold_id=row.hold_transaction_id,
        partner_id=row.partner_id,
        member_id=row.member_id,
        points_held=row.points_held,
        status=row.status,
        expire_time=row.expire_time,
        points_captured=row.points_captured,
        close_transaction_id=row.close_transaction_id,
        create_time=row.create_time,
    )


def find_hold(uow: UnitOfWork, hold_id: int) -> Hold | None:
    row = uow.connection.execute(
        select(holds).where(holds.c.hold_transaction_id == hold_id)
    ).one_or_none()
    return None if row is None else hold_from_row(row)


def held_points(uow: UnitOfWork, member_id: str, now: datetime) -> tuple[int, int]:
    """(points held by open holds still within their TTL, points of open holds past it).

    Holds past their TTL are as good as released: the next burn or hold of the member, or
    the release job, posts their release before anything else."""
    still_held = holds.c.expire_time > now
    row = uow.connection.execute(
        select(
            func.coalesce(func.sum(holds.c.points_held).filter(still_held), 0),
            func.coalesce(func.sum(holds.c.points_held).filter(~still_held), 0),
        ).where(holds.c.member_id == member_id, holds.c.status == "open")
    ).one()
    return int(row[0]), int(row[1])


def lock_member_releasing_expired_holds(uow: UnitOfWork, member_id: str, now: datetime) -> int:
    """Lock the member, release its holds past their TTL, return its spendable balance."""
    journal.lock_member_balance(uow, member_id)
    expired_hold_ids = uow.connection.execute(
        select(holds.c.hold_transaction_id)
        .where(
            holds.c.member_id == member_id,
            holds.c.status == "open",
            holds.c.expire_time <= now,
        )
        .order_by(holds.c.hold_transaction_id)
        .limit(RELEASE_PER_MEMBER_MAX)
    ).scalars()
    for hold_id in list(expired_hold_ids):
        release_expired_hold(uow, hold_id, now)
    return journal.member_balance(uow, member_id)


def release_expired_hold(uow: UnitOfWork, hold_id: int, now: datetime) -> TransactionRecord:
    """Post the release of a hold past its TTL (the caller holds the member lock)."""
    hold = find_hold(uow, hold_id)
    assert hold is not None and hold.status == "open" and hold.expire_time <= now
    return close_hold(uow, hold, f"hub/hold-expired/{hold_id}", 0, "expired", now)


def close_hold(
    uow: UnitOfWork,
    hold: Hold,
    request_id: str,
    points_captured: int,
    status: str,
    now: datetime,
) -> TransactionRecord:
    """Capture `points_captured` (> 0) of the hold, or release it all (0), in one
    transaction. The caller holds the member lock and has checked the hold is open."""
    assert 0 <= points_captured <= hold.points_held
    assert (status == "captured") == (points_captured > 0)
    points_released = hold.points_held - points_captured
    postings = [Posting(member_hold_account_id(hold.member_id), -hold.points_held)]
    if points_captured:
        redemption = partner_redemption_account_id(hold.partner_id)
        postings.append(Posting(redemption, points_captured))
    if points_released:
        postings.append(Posting(member_account_id(hold.member_id), points_released))
    # The hold's points go back to the lots it took them from; a capture then spends what it
    # captures from the member's lots, earliest expiry first, as a burn would.
    given_back = lots.restitution(uow, hold.member_id, hold.hold_id, hold.points_held)
    spent = (
        lots.consumption(uow, hold.member_id, points_captured, given_back)
        if points_captured
        else ()
    )
    entry = JournalEntry(
        kind="capture" if points_captured else "void",
        partner_id=hold.partner_id,
        member_id=hold.member_id,
        request_id=request_id,
        occurred_at=now,
        postings=tuple(postings),
        # The hold's price: a capture is settled at the rate in force when it was authorised
        # (docs/settlement.md), and a close without one would make its partner unsettleable.
        rate_version_id=_hold_rate_version_id(uow, hold.hold_id),
        reason="hold expired" if status == "expired" else None,
        lot_moves=given_back + spent,
    )
    record = journal.post(uow, entry, now)
    _mark_closed(uow, hold.hold_id, status, points_captured or None, record, now)
    return record


def _hold_rate_version_id(uow: UnitOfWork, hold_id: int) -> str | None:
    rate_version_id: str | None = uow.connection.execute(
        select(journal_transactions.c.rate_version_id).where(
            journal_transactions.c.transaction_id == hold_id
        )
    ).scalar_one()
    return rate_version_id


def _mark_closed(
    uow: UnitOfWork,
    hold_id: int,
    status: str,
    points_captured: int | None,
    record: TransactionRecord,
    now: datetime,
) -> None:
    # The guard makes a second close impossible even if a caller skipped the member lock.
    closed = uow.connection.execute(
        update(holds)
        .where(
            holds.c.member_id == record.member_id,
            holds.c.hold_transaction_id == hold_id,
            holds.c.status == "open",
        )
        .values(
            status=status,
            points_captured=points_captured,
            close_transaction_id=record.transaction_id,
            close_time=now,
        )
    )
    assert closed.rowcount == 1, f"hold {hold_id} was closed twice"


@dataclass(frozen=True)
class ReleaseReport:
    holds_released: int
    batches: int


def release_expired_holds(
    unit_of_work: Callable[[], UnitOfWork],
    now: datetime,
    batch_size: int = RELEASE_BATCH_SIZE_DEFAULT,
) -> ReleaseReport:
    """The TTL job: release every open hold past its TTL, in batches of `batch_size`."""
    assert 0 < batch_size <= 5_000
    released = batches = 0
    while True:
        with unit_of_work() as uow:
            due = uow.connection.execute(
                select(holds.c.hold_transaction_id, holds.c.member_id)
                .where(holds.c.status == "open", holds.c.expire_time <= now)
                .order_by(holds.c.expire_time, holds.c.hold_transaction_id)
                .limit(batch_size)
            ).all()
            if not due:
                return ReleaseReport(released, batches)
            for member_id in sorted({member_id for _, member_id in due}):
                journal.lock_member_balance(uow, member_id)
            for hold_id, _ in due:
                hold = find_hold(uow, hold_id)
                assert hold is not None
                if hold.status == "open":  # a capture or void may have closed it meanwhile
                    release_expired_hold(uow, hold_id, now)
                    released += 1
            uow.commit()
        batches += 1


def held_points_as_of(uow: UnitOfWork, member_id: str, as_of: datetime) -> int:
    """Points in member_hold:<id> as posted at `as_of` (a hold counts until its release or
    capture is posted)."""
    points = uow.connection.execute(
        select(func.coalesce(func.sum(postings.c.points), 0)).where(
            postings.c.account_id == member_hold_account_id(member_id),
            postings.c.create_time <= as_of,
        )
    ).scalar_one()
    return int(points)

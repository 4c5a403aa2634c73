"""Expiry of lots: the job behind `coalition jobs expire --as-of`.

Every lot whose `expires_at` is at or before `as_of` and that still holds points gets one
journal transaction of kind 'expire' (partner: the lot's issuer), posting

    member:<id>                 - remaining points
    partner:<issuer>:breakage   + the partner-funded share
    coalition:promotions        + the share of coalition-funded bonus points in the lot

so breakage is attributed to the issuing partner for what it funded, and coalition-funded
extras go back to the programme. The lot's remainder drops to 0 in the same transaction.

Idempotent per lot: a lot is picked only while it holds points, under its member's lock, and
`lot_expiries` has one row per (lot, round), backed by the journal's unique request id
`hub/expire/lot/<lot>/<round>` ('/' is outside the request ids partners may use). A later
round exists only if a reversed burn gave points back to an already expired lot: those points
are past their validity too, and the next run expires them.

The job reads candidates by the partial index on unspent lots, in bounded batches, one unit of
work per batch; the member locks of a batch are taken in member id order, and requests only
ever hold one member lock, so the job and requests cannot deadlock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import Row, func, insert, select, tuple_, update

from coalition.domain.errors import FieldViolation, InvalidArgument
from coalition.ledger import journal
from coalition.ledger.accounts import member_account_id
from coalition.ledger.funding import coalition_funded_points
from coalition.ledger.journal import JournalEntry, Posting
from coalition.ledger.system_accounts import (
    ensure_coalition_promotions_account,
    ensure_partner_breakage_account,
)
from coalition.store.schema import lot_expiries, lots
from coalition.store.unit_of_work import UnitOfWork

EXPIRY_BATCH_SIZE_DEFAULT = 200
EXPIRY_BATCH_SIZE_MAX = 5_000


@dataclass(frozen=True)
class ExpiryReport:
    lots_expired: int
    points_expired: int
    batches: int


def expire_lots(
    unit_of_work: Callable[[], UnitOfWork],
    as_of: datetime,
    now: datetime,
    batch_size: int = EXPIRY_BATCH_SIZE_DEFAULT,
) -> ExpiryReport:
    """Expire every lot due at `as_of` (never later than `now`: points never expire early)."""
    if as_of > now:
        raise InvalidArgument(
            [FieldViolation("as_of", "must not be in the future")], reason="AS_OF_IN_FUTURE"
        )
    assert 0 < batch_size <= EXPIRY_BATCH_SIZE_MAX
    after: tuple[datetime, int] | None = None
    lots_expired = points_expired = batches = 0
    while True:
        with unit_of_work() as uow:
            candidates = _due_lots(uow, as_of, after, batch_size)
            if not candidates:
                return ExpiryReport(lots_expired, points_expired, batches)
            for member_id in sorted({member_id for _, _, member_id in candidates}):
                journal.lock_member_balance(uow, member_id)
            for _, lot_id, _ in candidates:
                points = expire_lot(uow, lot_id, now)
                lots_expired += points > 0
                points_expired += points
            uow.commit()
        batches += 1
        after = candidates[-1][:2]


# Due lots expired per page when a member's debit settles them (ledger/availability.py).
MEMBER_DUE_LOTS_PAGE_SIZE = 100


def expire_due_lots_of_member(uow: UnitOfWork, member_id: str, now: datetime) -> int:
    """Expire every lot of the member past its expiry, under the member's lock (the caller
    holds it): a debit must never consume an expired lot, whether or not the job ran.
    Returns the points expired. Pages are bounded; the job keeps their number small."""
    points_expired = 0
    while True:
        due = uow.connection.execute(
            select(lots.c.lot_id)
            .where(
                lots.c.member_id == member_id,
                lots.c.remaining_points > 0,
                lots.c.expires_at <= now,
            )
            .order_by(lots.c.expires_at, lots.c.lot_id)
            .limit(MEMBER_DUE_LOTS_PAGE_SIZE)
        ).scalars()
        lot_ids = list(due)
        if not lot_ids:
            return points_expired
        for lot_id in lot_ids:
            points_expired += expire_lot(uow, lot_id, now)


def _due_lots(
    uow: UnitOfWork, as_of: datetime, after: tuple[datetime, int] | None, batch_size: int
) -> list[tuple[datetime, int, str]]:
    statement = (
        select(lots.c.expires_at, lots.c.lot_id, lots.c.member_id)
        .where(lots.c.remaining_points > 0, lots.c.expires_at <= as_of)
        .order_by(lots.c.expires_at, lots.c.lot_id)
        .limit(batch_size)
    )
    if after is not None:
        statement = statement.where(tuple_(lots.c.expires_at, lots.c.lot_id) > tuple_(*after))
    return [(row[0], row[1], row[2]) for row in uow.connection.execute(statement)]


def expire_lot(uow: UnitOfWork, lot_id: int, now: datetime) -> int:
    """Post the expiry of what is left of `lot_id`; the caller holds its member's lock.
    Returns the points expired (0 when the lot was spent or expired meanwhile)."""
    lot = uow.connection.execute(select(lots).where(lots.c.lot_id == lot_id)).one()
    if lot.remaining_points == 0:
        return 0
    assert lot.expires_at is not None and lot.expires_at <= now
    expiry_round = uow.connection.execute(
        select(func.count()).select_from(lot_expiries).where(lot_expiries.c.lot_id == lot_id)
    ).scalar_one()
    record = journal.post(uow, _expiry_entry(uow, lot, expiry_round), now)
    taken = uow.connection.execute(
        update(lots)
        .where(lots.c.lot_id == lot_id, lots.c.remaining_points == lot.remaining_points)
        .values(remaining_points=0)
    )
    assert taken.rowcount == 1, f"lot {lot_id} changed under its member's lock"
    uow.connection.execute(
        insert(lot_expiries).values(
            transaction_id=record.transaction_id,
            member_id=record.member_id,
            lot_id=lot_id,
            expiry_round=expiry_round,
            points=lot.remaining_points,
        )
    )
    return int(lot.remaining_points)


def _expiry_entry(uow: UnitOfWork, lot: Row[Any], expiry_round: int) -> JournalEntry:
    remaining_points = int(lot.remaining_points)
    coalition_points = breakage_coalition_share(
        remaining_points, int(lot.points), coalition_funded_points(uow, lot.transaction_id)
    )
    partner_id, member_id = str(lot.partner_id), str(lot.member_id)
    postings = [Posting(member_account_id(member_id), -remaining_points)]
    if remaining_points > coalition_points:
        breakage_account = ensure_partner_breakage_account(uow, partner_id)
        postings.append(Posting(breakage_account, remaining_points - coalition_points))
    if coalition_points:
        postings.append(Posting(ensure_coalition_promotions_account(uow), coalition_points))
    return JournalEntry(
        kind="expire",
        partner_id=partner_id,
        member_id=member_id,
        request_id=f"hub/expire/lot/{lot.lot_id}/{expiry_round}",
        occurred_at=lot.expires_at,
        postings=tuple(postings),
        reason="points expired",
    )


def breakage_coalition_share(
    remaining_points: int, lot_points: int, points_coalition_funded: int
) -> int:
    """The coalition-funded part of expiring points, in proportion to the lot, rounded down
    (so the issuing partner's breakage is never understated)."""
    assert 0 < remaining_points <= lot_points and 0 <= points_coalition_funded <= lot_points
    return math.floor(Fraction(remaining_points * points_coalition_funded, lot_points))

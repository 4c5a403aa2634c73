"""Service functions for burn holds: AuthorizeBurn, CaptureBurn, VoidBurn.

Each runs in one unit of work with the same order as every ledger mutation (claim the
request id, lock the member, check, post, record, commit), so each is idempotent by its
request id and writes nothing when it fails. See ledger/holds.py for the accounting model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import insert

from coalition.domain.errors import FailedPrecondition, NotFound
from coalition.domain.points import Money
from coalition.identity.members import MemberReference, resolve
from coalition.ledger import journal, lots
from coalition.ledger.accounts import member_account_id
from coalition.ledger.availability import lock_member_for_debit
from coalition.ledger.holds import Hold, close_hold, find_hold
from coalition.ledger.idempotency import KeyedRequest, apply_once, record_result
from coalition.ledger.journal import JournalEntry, Posting, TransactionRecord
from coalition.ledger.system_accounts import ensure_member_hold_account
from coalition.operations.points import _occurred_at, _points_burned, require_available
from coalition.partners.catalog import partner_terms
from coalition.store.schema import holds
from coalition.store.unit_of_work import UnitOfWork

HOLD_TTL_DEFAULT = timedelta(minutes=15)
HOLD_TTL_MAX = timedelta(days=7)


@dataclass(frozen=True)
class AuthorizeCommand:
    request_id: str
    member: MemberReference
    ttl: timedelta
    points: int | None = None
    value: Money | None = None
    occurred_at: datetime | None = None
    partner_reference: str | None = None

    def __post_init__(self) -> None:
        assert (self.points is None) != (self.value is None), "points or value"
        assert timedelta(0) < self.ttl <= HOLD_TTL_MAX


@dataclass(frozen=True)
class CaptureCommand:
    request_id: str
    hold_id: int
    points: int  # 0: everything held


@dataclass(frozen=True)
class VoidCommand:
    request_id: str
    hold_id: int


@dataclass(frozen=True)
class HoldResult:
    transaction: TransactionRecord
    hold: Hold
    points: int  # held, captured or released
    points_released: int
    balance_points: int  # the member's spendable balance right after the transaction
    replayed: bool


def authorize_burn(
    uow: UnitOfWork, partner_id: str, command: AuthorizeCommand, now: datetime
) -> HoldResult:
    request = KeyedRequest(
        partner_id, command.request_id, "authorize_burn", _authorize_fingerprint(command), now
    )
    return apply_once(
        uow,
        request,
        lambda: _authorize_burn(uow, partner_id, command, now),
        lambda result_id: _replay_authorize(uow, int(result_id)),
        member_of=lambda: resolve(uow, partner_id, command.member),
    )


def _authorize_burn(
    uow: UnitOfWork, partner_id: str, command: AuthorizeCommand, now: datetime
) -> HoldResult:
    terms = partner_terms(uow, partner_id)
    partner = terms.partner
    occurred_at = _occurred_at(command.occurred_at, now, partner)
    member_id = resolve(uow, partner_id, command.member)
    rate = terms.rate_at(occurred_at)
    points_held = _points_burned(partner, rate, command.points, command.value, "value")
    balance_points = lock_member_for_debit(uow, member_id, now)
    require_available(member_id, balance_points, points_held)
    entry = JournalEntry(
        kind="hold",
        partner_id=partner_id,
        member_id=member_id,
        request_id=command.request_id,
        occurred_at=occurred_at,
        postings=(
            Posting(member_account_id(member_id), -points_held),
            Posting(ensure_member_hold_account(uow, member_id), points_held),
        ),
        rate_version_id=rate.rate_version_id,
        amount_minor=command.value.amount_minor if command.value else None,
        currency=command.value.currency if command.value else None,
        partner_reference=command.partner_reference,
        lot_moves=lots.consumption(uow, member_id, points_held),
    )
    record = journal.post(uow, entry, now)
    hold = _insert_hold(uow, record, points_held, now + command.ttl, now)
    record_result(uow, partner_id, command.request_id, str(record.transaction_id), member_id)
    uow.commit()
    return HoldResult(record, hold, points_held, 0, record.balance_points_after, False)


def capture_burn(
    uow: UnitOfWork, partner_id: str, command: CaptureCommand, now: datetime
) -> HoldResult:
    """Capture up to the held points, once; the rest goes back to the member."""
    request = KeyedRequest(
        partner_id,
        command.request_id,
        "capture_burn",
        {"hold_id": command.hold_id, "points": command.points},
        now,
    )
    return apply_once(
        uow,
        request,
        lambda: _capture_burn(uow, partner_id, command, now),
        lambda result_id: _replay_close(uow, int(result_id), command.hold_id),
        member_of=lambda: _member_of_hold(uow, partner_id, command.hold_id),
    )


def _capture_burn(
    uow: UnitOfWork, partner_id: str, command: CaptureCommand, now: datetime
) -> HoldResult:
    hold = _open_hold_of(uow, partner_id, command.hold_id, now)
    if hold.expire_time <= now:
        raise FailedPrecondition(
            "HOLD_EXPIRED",
            f"hold {hold.hold_id} expired at {hold.expire_time.isoformat()}; "
            "authorise the burn again",
            {"hold_id": hold.hold_id, "expire_time": hold.expire_time.isoformat()},
        )
    points_captured = command.points or hold.points_held
    if points_captured > hold.points_held:
        raise FailedPrecondition(
            "CAPTURE_EXCEEDS_HOLD",
            f"hold {hold.hold_id} holds {hold.points_held} points, {points_captured} requested",
            {
                "hold_id": hold.hold_id,
                "points_held": hold.points_held,
                "points_requested": points_captured,
            },
        )
    record = close_hold(uow, hold, command.request_id, points_captured, "captured", now)
    return _commit_close(uow, partner_id, command.request_id, record, hold.hold_id)


def void_burn(uow: UnitOfWork, partner_id: str, command: VoidCommand, now: datetime) -> HoldResult:
    """Release a hold, also one past its TTL that was not released yet."""
    request = KeyedRequest(
        partner_id, command.request_id, "void_burn", {"hold_id": command.hold_id}, now
    )
    return apply_once(
        uow,
        request,
        lambda: _void_burn(uow, partner_id, command, now),
        lambda result_id: _replay_close(uow, int(result_id), command.hold_id),
        member_of=lambda: _member_of_hold(uow, partner_id, command.hold_id),
    )


def _member_of_hold(uow: UnitOfWork, partner_id: str, hold_id: int) -> str:
    """The member of the caller's hold ('' when there is none: the close refuses it)."""
    hold = find_hold(uow, hold_id)
    return hold.member_id if hold is not None and hold.partner_id == partner_id else ""


def _void_burn(uow: UnitOfWork, partner_id: str, command: VoidCommand, now: datetime) -> HoldResult:
    hold = _open_hold_of(uow, partner_id, command.hold_id, now)
    record = close_hold(uow, hold, command.request_id, 0, "voided", now)
    return _commit_close(uow, partner_id, command.request_id, record, hold.hold_id)


def _open_hold_of(uow: UnitOfWork, partner_id: str, hold_id: int, now: datetime) -> Hold:
    """The caller's hold, read under its member's lock, which must still be open."""
    hold = find_hold(uow, hold_id)
    # Another partner's hold is reported as missing: its existence is not ours to know.
    if hold is None or hold.partner_id != partner_id:
        raise NotFound("HOLD_NOT_FOUND", f"hold {hold_id} does not exist", {"hold_id": hold_id})
    journal.lock_member_balance(uow, hold.member_id)
    hold = find_hold(uow, hold_id)  # again, under the lock every close of it takes
    assert hold is not None
    if hold.status != "open":
        raise FailedPrecondition(
            "HOLD_NOT_OPEN",
            f"hold {hold_id} is already {hold.status}",
            {"hold_id": hold_id, "status": hold.status},
        )
    return hold


def _insert_hold(
    uow: UnitOfWork,
    record: TransactionRecord,
    points_held: int,
    expire_time: datetime,
    now: datetime,
) -> Hold:
    hold = Hold(
        hold_id=record.transaction_id,
        partner_id=record.partner_id,
        member_id=record.member_id,
        points_held=points_held,
        status="open",
        expire_time=expire_time,
        points_captured=None,
        close_transaction_id=None,
        create_time=now,
    )
    uow.connection.execute(
        insert(holds).values(
            hold_transaction_id=hold.hold_id,
            partner_id=hold.partner_id,
            member_id=hold.member_id,
            points_held=points_held,
            status="open",
            expire_time=expire_time,
            create_time=now,
        )
    )
    return hold


def _commit_close(
    uow: UnitOfWork, partner_id: str, request_id: str, record: TransactionRecord, hold_id: int
) -> HoldResult:
    record_result(uow, partner_id, request_id, str(record.transaction_id), record.member_id)
    hold = find_hold(uow, hold_id)
    assert hold is not None
    uow.commit()
    return _close_result(record, hold, replayed=False)


def _close_result(record: TransactionRecord, hold: Hold, replayed: bool) -> HoldResult:
    points_captured = hold.points_captured or 0
    points_released = hold.points_held - points_captured
    points = points_captured if record.kind == "capture" else points_released
    return HoldResult(record, hold, points, points_released, record.balance_points_after, replayed)


def _replay_authorize(uow: UnitOfWork, hold_id: int) -> HoldResult:
    """The response as first sent: then the hold was open."""
    record = journal.find_transaction(uow, hold_id)
    hold = find_hold(uow, hold_id)
    assert record is not None and hold is not None, f"hold {hold_id} vanished"
    hold = replace(hold, status="open", points_captured=None, close_transaction_id=None)
    return HoldResult(
        replace(record, points_reversed=0),
        hold,
        hold.points_held,
        0,
        record.balance_points_after,
        True,
    )


def _replay_close(uow: UnitOfWork, transaction_id: int, hold_id: int) -> HoldResult:
    record = journal.find_transaction(uow, transaction_id)
    hold = find_hold(uow, hold_id)
    assert record is not None and hold is not None
    assert hold.close_transaction_id == transaction_id, "a replay names the close it made"
    return _close_result(record, hold, replayed=True)


def _authorize_fingerprint(command: AuthorizeCommand) -> dict[str, str | int | None]:
    return {
        "member.member_id": command.member.member_id,
        "member.partner_customer_id": command.member.partner_customer_id,
        "points": command.points,
        "value.amount_minor": command.value.amount_minor if command.value else None,
        "value.currency": command.value.currency if command.value else None,
        "ttl_seconds": int(command.ttl.total_seconds()),
        "occurred_at": command.occurred_at.isoformat() if command.occurred_at else None,
        "partner_reference": command.partner_reference,
    }

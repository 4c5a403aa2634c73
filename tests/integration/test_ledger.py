"""Ledger service functions against real SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from coalition import operations
from coalition.domain.errors import (
    AlreadyExists,
    CoalitionError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from coalition.domain.points import Money
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations.points import BurnCommand, EarnCommand, LedgerResult, ReverseCommand
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.schema import lot_consumptions, lots
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound, row_counts

pytestmark = pytest.mark.integration

CURRENCY = {"test-coffee": "CNY", "test-air": "EUR", "test-cinema": "GBP"}


def now() -> datetime:
    return datetime.now(UTC)


def enroll(engine: Engine, partner_id: str = "test-coffee") -> str:
    enrolment = members.enroll(
        UnitOfWork(engine), partner_id, new_id(), f"customer-{new_id()}", "Mei Lin", now()
    )
    return enrolment.member.member_id


def new_id() -> str:
    return uuid.uuid4().hex


def earn(
    engine: Engine,
    member_id: str,
    amount_minor: int,
    partner_id: str = "test-coffee",
    occurred_at: datetime | None = None,
    request_id: str | None = None,
) -> LedgerResult:
    command = EarnCommand(
        request_id=request_id or new_id(),
        member=MemberReference(member_id=member_id),
        spend=Money(amount_minor, CURRENCY[partner_id]),
        occurred_at=occurred_at,
    )
    return operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, partner_id, command, now())


def burn(
    engine: Engine, member_id: str, points: int, partner_id: str = "test-coffee"
) -> LedgerResult:
    command = BurnCommand(
        request_id=new_id(), member=MemberReference(member_id=member_id), points=points
    )
    return operations.burn(UnitOfWork(engine), partner_id, command, now())


def reverse(
    engine: Engine, transaction_id: int, points: int = 0, partner_id: str = "test-coffee"
) -> LedgerResult:
    command = ReverseCommand(request_id=new_id(), transaction_id=transaction_id, points=points)
    return operations.reverse(UnitOfWork(engine), partner_id, command, now())


def balance(engine: Engine, member_id: str) -> int:
    reference = MemberReference(member_id=member_id)
    found = operations.get_balance(UnitOfWork(engine), "test-coffee", reference, None, now())
    return found.balance_points


def test_earn_by_spend_rounds_down_and_creates_a_lot(engine: Engine) -> None:
    member_id = enroll(engine)
    result = earn(engine, member_id, 1999)  # 19.99 CNY at 0.2 points per CNY: 3.998
    assert (result.points, result.balance_points, result.replayed) == (3, 3, False)
    assert result.transaction.rate_version_id == "test-coffee@2026-01-01T00:00:00Z"
    with engine.connect() as connection:
        lot = connection.execute(select(lots)).one()
    assert (lot.points, lot.remaining_points, lot.partner_id) == (3, 3, "test-coffee")
    assert lot.expires_at.year == result.transaction.occurred_at.year + 2
    assert_ledger_sound(engine)


def test_earn_uses_the_rate_version_in_force_when_the_purchase_happened(engine: Engine) -> None:
    member_id = enroll(engine)
    before = earn(engine, member_id, 10_000, occurred_at=datetime(2025, 12, 31, 23, tzinfo=UTC))
    after = earn(engine, member_id, 10_000, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert (before.points, after.points) == (10, 20)
    assert before.transaction.rate_version_id == "test-coffee@2025-01-01T00:00:00Z"


def test_earn_by_native_points_converts_at_the_native_rate(engine: Engine) -> None:
    member_id = enroll(engine, "test-air")
    command = EarnCommand(
        request_id=new_id(), member=MemberReference(member_id=member_id), native_points=1001
    )
    result = operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, "test-air", command, now())
    assert result.points == 500  # 1001 miles at 0.5, rounded down
    assert result.transaction.native_points == 1001


@pytest.mark.parametrize(
    ("command", "error", "reason"),
    [
        (
            EarnCommand("r", MemberReference(member_id="missing"), spend=Money(100, "CNY")),
            NotFound,
            "MEMBER_NOT_FOUND",
        ),
        (
            EarnCommand(
                "r", MemberReference(partner_customer_id="nobody"), spend=Money(100, "CNY")
            ),
            NotFound,
            "MEMBER_NOT_FOUND",
        ),
        (
            EarnCommand("r", MemberReference(member_id="?"), spend=Money(1000, "EUR")),
            InvalidArgument,
            "CURRENCY_MISMATCH",
        ),
        (
            EarnCommand("r", MemberReference(member_id="?"), spend=Money(4, "CNY")),
            FailedPrecondition,
            "NO_POINTS_EARNED",
        ),
        (
            EarnCommand("r", MemberReference(member_id="?"), native_points=100),
            FailedPrecondition,
            "NATIVE_CONVERSION_NOT_OFFERED",
        ),
        (
            EarnCommand(
                "r",
                MemberReference(member_id="?"),
                spend=Money(1000, "CNY"),
                occurred_at=datetime(2024, 12, 31, tzinfo=UTC),
            ),
            FailedPrecondition,
            "RATE_NOT_FOUND",
        ),
        (
            EarnCommand(
                "r",
                MemberReference(member_id="?"),
                spend=Money(1000, "CNY"),
                occurred_at=datetime.now(UTC) + timedelta(days=1),
            ),
            InvalidArgument,
            "OCCURRED_AT_IN_FUTURE",
        ),
    ],
)
def test_a_refused_earn_writes_nothing(
    engine: Engine, command: EarnCommand, error: type[CoalitionError], reason: str
) -> None:
    member_id = enroll(engine)
    if command.member.member_id == "?":
        command = EarnCommand(
            **{**command.__dict__, "member": MemberReference(member_id=member_id)}
        )
    rows_before = row_counts(engine)
    with pytest.raises(error) as raised:
        operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, "test-coffee", command, now())
    assert raised.value.reason == reason
    assert row_counts(engine) == rows_before


def test_burn_by_value_rounds_points_up(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 100_000)  # 200 points
    command = BurnCommand(
        request_id=new_id(), member=MemberReference(member_id=member_id), value=Money(501, "CNY")
    )
    result = operations.burn(UnitOfWork(engine), "test-coffee", command, now())
    assert (result.points, result.balance_points) == (101, 99)  # 501 fen at 5 fen per point


def test_an_insufficient_balance_refuses_the_burn_and_writes_nothing(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 5_000)  # 10 points
    rows_before = row_counts(engine)
    with pytest.raises(FailedPrecondition) as raised:
        burn(engine, member_id, 11)
    assert raised.value.reason == "INSUFFICIENT_POINTS"
    assert raised.value.metadata["balance_points"] == "10"
    assert row_counts(engine) == rows_before
    assert balance(engine, member_id) == 10


def test_burns_consume_lots_earliest_expiry_first_across_partners(engine: Engine) -> None:
    member_id = enroll(engine)
    members.link_partner_account(
        UnitOfWork(engine), "test-cinema", new_id(), member_id, "cinema-1", now()
    )
    coffee = earn(engine, member_id, 10_000)  # 20 points, expire in 24 months
    cinema = earn(engine, member_id, 1_500, partner_id="test-cinema")  # 15 points, 12 months
    burned = burn(engine, member_id, 18, partner_id="test-air")
    with engine.connect() as connection:
        remaining = dict(
            connection.execute(select(lots.c.partner_id, lots.c.remaining_points)).all()
        )
        funded = connection.execute(
            select(lot_consumptions.c.lot_id, lot_consumptions.c.points).where(
                lot_consumptions.c.transaction_id == burned.transaction.transaction_id
            )
        ).all()
    assert remaining == {"test-cinema": 0, "test-coffee": 17}
    assert sorted(points for _, points in funded) == [3, 15]
    assert coffee.points == 20 and cinema.points == 15
    assert_ledger_sound(engine)


def test_reversals_are_partial_then_complete_and_never_more(engine: Engine) -> None:
    member_id = enroll(engine)
    earned = earn(engine, member_id, 10_000)  # 20 points
    first = reverse(engine, earned.transaction.transaction_id, points=5)
    assert (first.points, first.balance_points) == (5, 15)
    assert first.transaction.parent_transaction_id == earned.transaction.transaction_id
    with pytest.raises(FailedPrecondition) as too_many:
        reverse(engine, earned.transaction.transaction_id, points=16)
    assert too_many.value.reason == "REVERSAL_EXCEEDS_REMAINING"
    rest = reverse(engine, earned.transaction.transaction_id)
    assert (rest.points, rest.balance_points) == (15, 0)
    with pytest.raises(FailedPrecondition) as again:
        reverse(engine, earned.transaction.transaction_id, points=1)
    assert again.value.reason == "ALREADY_FULLY_REVERSED"
    with pytest.raises(FailedPrecondition) as reversal_of_reversal:
        reverse(engine, rest.transaction.transaction_id)
    assert reversal_of_reversal.value.reason == "TRANSACTION_NOT_REVERSIBLE"
    assert_ledger_sound(engine)


def test_reversing_an_earn_whose_points_were_spent_fails_clearly(engine: Engine) -> None:
    member_id = enroll(engine)
    earned = earn(engine, member_id, 10_000)  # 20 points
    burn(engine, member_id, 15)
    rows_before = row_counts(engine)
    with pytest.raises(FailedPrecondition) as raised:
        reverse(engine, earned.transaction.transaction_id)
    assert raised.value.reason == "POINTS_ALREADY_SPENT"
    assert row_counts(engine) == rows_before
    assert reverse(engine, earned.transaction.transaction_id, points=5).balance_points == 0


def test_reversing_a_burn_gives_the_points_back_to_their_lots(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 10_000)
    burned = burn(engine, member_id, 12)
    restored = reverse(engine, burned.transaction.transaction_id, points=7)
    assert (restored.points, restored.balance_points) == (7, 15)
    assert restored.transaction.points_delta == 7
    assert_ledger_sound(engine)


def test_a_partner_cannot_reverse_another_partners_transaction(engine: Engine) -> None:
    member_id = enroll(engine)
    earned = earn(engine, member_id, 10_000)
    with pytest.raises(NotFound) as raised:
        reverse(engine, earned.transaction.transaction_id, partner_id="test-air")
    assert raised.value.reason == "TRANSACTION_NOT_FOUND"
    assert balance(engine, member_id) == 20


def test_a_replay_returns_the_original_result_and_writes_nothing(engine: Engine) -> None:
    member_id = enroll(engine)
    first = earn(engine, member_id, 10_000, request_id="receipt-1")
    rows_after_first = row_counts(engine)
    replay = earn(engine, member_id, 10_000, request_id="receipt-1")
    assert replay.replayed and not first.replayed
    assert (replay.transaction, replay.points, replay.balance_points) == (
        first.transaction,
        first.points,
        first.balance_points,
    )
    assert row_counts(engine) == rows_after_first


def test_a_reused_request_id_names_the_fields_that_differ(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 10_000, request_id="receipt-1")
    with pytest.raises(AlreadyExists) as raised:
        earn(engine, member_id, 12_000, request_id="receipt-1")
    assert raised.value.reason == "REQUEST_ID_REUSED"
    assert raised.value.metadata["differing_fields"] == "spend.amount_minor"
    with pytest.raises(AlreadyExists) as other_operation:
        command = BurnCommand("receipt-1", MemberReference(member_id=member_id), points=1)
        operations.burn(UnitOfWork(engine), "test-coffee", command, now())
    assert "operation" in other_operation.value.metadata["differing_fields"]


def test_request_ids_are_scoped_to_the_partner(engine: Engine) -> None:
    member_id = enroll(engine)
    members.link_partner_account(UnitOfWork(engine), "test-air", new_id(), member_id, "a-1", now())
    coffee = earn(engine, member_id, 10_000, request_id="shared-id")
    air = earn(engine, member_id, 1_000, partner_id="test-air", request_id="shared-id")
    assert not air.replayed and air.transaction.transaction_id != coffee.transaction.transaction_id


def test_balance_as_of_a_past_instant_comes_from_the_journal(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 10_000)
    middle = now()
    burn(engine, member_id, 5)
    reference = MemberReference(member_id=member_id)
    past = operations.get_balance(UnitOfWork(engine), "test-coffee", reference, middle, now())
    assert past.balance_points == 20
    assert balance(engine, member_id) == 15
    with pytest.raises(InvalidArgument):
        future = now() + timedelta(hours=1)
        operations.get_balance(UnitOfWork(engine), "test-coffee", reference, future, now())


def test_list_transactions_pages_newest_first_and_only_the_callers(engine: Engine) -> None:
    member_id = enroll(engine)
    members.link_partner_account(UnitOfWork(engine), "test-air", new_id(), member_id, "a-1", now())
    mine = [earn(engine, member_id, 1_000 * (i + 1)).transaction.transaction_id for i in range(5)]
    earn(engine, member_id, 1_000, partner_id="test-air")
    seen: list[int] = []
    cursor = None
    while True:
        page = operations.list_transactions(UnitOfWork(engine), "test-coffee", None, cursor, 2)
        seen += [record.transaction_id for record in page]
        if len(page) < 2:
            break
        cursor = page[-1].transaction_id
    assert seen == sorted(mine, reverse=True)


def test_enrolling_a_linked_customer_again_returns_the_same_member(engine: Engine) -> None:
    first = members.enroll(UnitOfWork(engine), "test-coffee", new_id(), "c-1", "Mei", now())
    second = members.enroll(UnitOfWork(engine), "test-coffee", new_id(), "c-1", "Mei", now())
    assert first.created and not second.created
    assert first.member.member_id == second.member.member_id
    other = members.enroll(UnitOfWork(engine), "test-air", new_id(), "c-1", "Someone", now())
    assert other.member.member_id != first.member.member_id  # customer ids are per partner

"""Merges create and lose no point, keep every ledger invariant, and are idempotent:
hypothesis-generated histories on real SQLite and PostgreSQL, through the service functions."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from coalition import operations
from coalition.domain.errors import CoalitionError
from coalition.domain.points import Money
from coalition.identity import members, merge
from coalition.identity.members import MemberReference
from coalition.ledger.journal import member_balance
from coalition.operations.points import BurnCommand, EarnCommand
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.schema import lots, member_accounts
from coalition.store.schema import members as members_table
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound, row_counts

pytestmark = pytest.mark.integration

CURRENCY = {"test-coffee": "CNY", "test-air": "EUR", "test-cinema": "GBP"}
MEMBERS_PER_EXAMPLE = 3
step = st.one_of(
    st.tuples(st.just("earn"), st.integers(0, 2), st.sampled_from(sorted(CURRENCY)),
              st.integers(500, 40_000)),
    st.tuples(st.just("burn"), st.integers(0, 2), st.integers(1, 200)),
    st.tuples(st.just("merge"), st.integers(0, 2), st.integers(0, 2)),
)  # fmt: skip


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def enrol(engine: Engine) -> str:
    enrolment = members.enroll(UnitOfWork(engine), "test-coffee", new_id(), new_id(), "M", now())
    return enrolment.member.member_id


def member_points_total(engine: Engine) -> int:
    with engine.connect() as connection:
        total = connection.execute(
            select(func.coalesce(func.sum(member_accounts.c.balance_points), 0)).where(
                member_accounts.c.kind == "member"
            )
        ).scalar_one()
    return int(total)


def surviving(engine: Engine, member_id: str) -> str:
    with UnitOfWork(engine, read_only=True) as uow:
        return members.surviving_member_id(uow, member_id)


def apply(engine: Engine, move: tuple[object, ...], member_ids: list[str]) -> None:
    kind, index = move[0], int(move[1])  # type: ignore[call-overload]
    target = MemberReference(member_id=surviving(engine, member_ids[index]))
    if kind == "earn":
        partner_id, amount_minor = str(move[2]), int(move[3])  # type: ignore[call-overload]
        command = EarnCommand(new_id(), target, spend=Money(amount_minor, CURRENCY[partner_id]))
        operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, partner_id, command, now())
    elif kind == "burn":
        command_burn = BurnCommand(new_id(), target, points=int(move[2]))  # type: ignore[call-overload]
        operations.burn(UnitOfWork(engine), "test-air", command_burn, now())


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=15))
def test_merges_conserve_points_and_replay_without_writing(
    engine: Engine, steps: list[tuple[object, ...]]
) -> None:
    member_ids = [enrol(engine) for _ in range(MEMBERS_PER_EXAMPLE)]
    for move in steps:
        if move[0] != "merge":
            try:
                apply(engine, move, member_ids)
            except CoalitionError as refused:  # too few points: refused, nothing written
                assert refused.reason == "INSUFFICIENT_POINTS"
            continue
        survivor = surviving(engine, member_ids[int(move[1])])  # type: ignore[call-overload]
        duplicate = surviving(engine, member_ids[int(move[2])])  # type: ignore[call-overload]
        if survivor == duplicate:
            continue
        total_before = member_points_total(engine)
        with UnitOfWork(engine, read_only=True) as uow:
            survivor_points = member_balance(uow, survivor)
            duplicate_points = member_balance(uow, duplicate)
        request_id = new_id()
        result = merge.merge_members(
            UnitOfWork(engine), "ops", request_id, survivor, duplicate, now()
        )
        assert result.points_moved == duplicate_points
        assert (result.transaction_id is None) == (duplicate_points == 0)
        assert member_points_total(engine) == total_before
        with UnitOfWork(engine, read_only=True) as uow:
            assert member_balance(uow, survivor) == survivor_points + duplicate_points
            assert member_balance(uow, duplicate) == 0
        counts = row_counts(engine)
        replay = merge.merge_members(
            UnitOfWork(engine), "ops", request_id, survivor, duplicate, now()
        )
        assert replay.replayed and replay.transaction_id == result.transaction_id
        assert row_counts(engine) == counts
        assert_ledger_sound(engine)
    with engine.connect() as connection:
        owners = set(
            connection.execute(
                select(lots.c.member_id).where(lots.c.remaining_points > 0)
            ).scalars()
        )
        merged = set(connection.execute(select(members_table.c.member_id).where(
            members_table.c.merged_into_member_id.is_not(None))).scalars())  # fmt: skip
    assert not owners & merged, "a merged member holds no lot with points left"
    assert_ledger_sound(engine)


def test_concurrent_earns_and_a_merge_strand_no_point(engine: Engine) -> None:
    """Earns racing a merge either land before it (and move) or are refused with MEMBER_MERGED
    (and land on the survivor when retried): the duplicate ends with nothing."""
    survivor, duplicate = enrol(engine), enrol(engine)
    earns_per_member = 12

    def earn_retrying(member_id: str) -> int:
        for _ in range(3):
            try:
                target = MemberReference(member_id=member_id)
                command = EarnCommand(new_id(), target, spend=Money(1_000, "EUR"))
                return operations.earn(
                    UnitOfWork(engine), DEFAULT_PROGRAMME, "test-air", command, now()
                ).points
            except CoalitionError as refused:
                assert refused.reason == "MEMBER_MERGED"
        raise AssertionError("an earn kept meeting the merge")

    with ThreadPoolExecutor(max_workers=6) as pool:
        earned = [pool.submit(earn_retrying, duplicate) for _ in range(earns_per_member)]
        merged = pool.submit(
            merge.merge_members, UnitOfWork(engine), "ops", new_id(), survivor, duplicate, now()
        )
        points_earned = sum(future.result() for future in earned)
        merged.result()
    with UnitOfWork(engine, read_only=True) as uow:
        assert member_balance(uow, duplicate) == 0
        assert member_balance(uow, survivor) == points_earned
    assert_ledger_sound(engine)

"""Money invariants under random operation sequences and concurrent clients."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from coalition import operations
from coalition.domain.errors import CoalitionError
from coalition.domain.points import Money
from coalition.identity.members import MemberReference
from coalition.operations.points import BurnCommand, EarnCommand, LedgerResult, ReverseCommand
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.schema import journal_transactions
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound
from tests.integration.test_ledger import CURRENCY, balance, burn, earn, enroll

pytestmark = pytest.mark.integration

PARTNERS = ("test-coffee", "test-air", "test-cinema")
MEMBERS_PER_EXAMPLE = 3
operation = st.one_of(
    st.tuples(
        st.just("earn"), st.integers(0, 2), st.sampled_from(PARTNERS), st.integers(500, 50_000)
    ),
    st.tuples(st.just("burn"), st.integers(0, 2), st.sampled_from(PARTNERS), st.integers(1, 300)),
    st.tuples(st.just("reverse"), st.integers(0, 50), st.integers(0, 200)),
    st.tuples(st.just("replay"), st.integers(0, 50)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations_to_apply=st.lists(operation, min_size=1, max_size=25))
def test_random_operations_keep_every_invariant(
    engine: Engine, operations_to_apply: list[tuple[object, ...]]
) -> None:
    member_ids = [enroll(engine) for _ in range(MEMBERS_PER_EXAMPLE)]
    model = dict.fromkeys(member_ids, 0)  # the expected balance of each member
    applied: list[tuple[str, Callable[[], LedgerResult], LedgerResult]] = []
    for step in operations_to_apply:
        kind = step[0]
        if kind == "replay" and applied:
            _, send, original = applied[int(step[1]) % len(applied)]
            transactions_before = _transaction_count(engine)
            replay = send()
            assert replay.replayed and replay.transaction == original.transaction
            assert _transaction_count(engine) == transactions_before
            continue
        if kind == "earn":
            _, member_index, partner_id, amount_minor = step
            command = EarnCommand(
                uuid.uuid4().hex,
                MemberReference(member_id=member_ids[int(member_index)]),
                spend=Money(int(amount_minor), CURRENCY[str(partner_id)]),
            )
            send = partial(
                operations.earn,
                UnitOfWork(engine),
                DEFAULT_PROGRAMME,
                str(partner_id),
                command,
                _now(),
            )
        elif kind == "burn":
            _, member_index, partner_id, points = step
            command = BurnCommand(
                uuid.uuid4().hex,
                MemberReference(member_id=member_ids[int(member_index)]),
                points=int(points),
            )
            send = partial(operations.burn, UnitOfWork(engine), str(partner_id), command, _now())
        elif kind == "reverse" and applied:
            _, index, points = step
            partner_id = applied[int(index) % len(applied)][2].transaction.partner_id
            parent = applied[int(index) % len(applied)][2].transaction.transaction_id
            command = ReverseCommand(uuid.uuid4().hex, parent, int(points))
            send = partial(operations.reverse, UnitOfWork(engine), partner_id, command, _now())
        else:
            continue
        try:
            result = send()
        except CoalitionError as error:
            assert error.reason in EXPECTED_REFUSALS[str(kind)], error.reason
            if error.reason == "INSUFFICIENT_POINTS":
                assert model[command.member.member_id] < command.points  # type: ignore[union-attr,operator]
            continue
        model[result.transaction.member_id] += result.transaction.points_delta
        assert result.balance_points == model[result.transaction.member_id]
        applied.append((str(kind), send, result))
    for member_id, expected_points in model.items():
        assert balance(engine, member_id) == expected_points
    assert_ledger_sound(engine)


EXPECTED_REFUSALS = {
    "earn": set(),
    "burn": {"INSUFFICIENT_POINTS"},
    "reverse": {
        "POINTS_ALREADY_SPENT",
        "REVERSAL_EXCEEDS_REMAINING",
        "ALREADY_FULLY_REVERSED",
        "TRANSACTION_NOT_REVERSIBLE",
    },
}


def _transaction_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(journal_transactions)
        ).scalar_one()


def _now() -> datetime:
    return datetime.now(UTC)


CLIENTS = 8


def test_identical_requests_racing_each_other_apply_once(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 100_000)  # 200 points
    command = BurnCommand("checkout-42", MemberReference(member_id=member_id), points=150)
    start = threading.Barrier(CLIENTS)

    def send() -> operations.LedgerResult:
        start.wait()
        return operations.burn(UnitOfWork(engine), "test-coffee", command, _now())

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda _: send(), range(CLIENTS)))
    assert len({result.transaction.transaction_id for result in results}) == 1
    assert sum(not result.replayed for result in results) == 1
    assert balance(engine, member_id) == 50
    assert_ledger_sound(engine)


def test_concurrent_burns_never_overdraw_a_balance(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 50_000)  # 100 points
    start = threading.Barrier(CLIENTS)

    def try_burn(_: int) -> bool:
        start.wait()
        try:
            burn(engine, member_id, 30)
            return True
        except CoalitionError as error:
            assert error.reason == "INSUFFICIENT_POINTS"
            return False

    with ThreadPoolExecutor(CLIENTS) as pool:
        succeeded = sum(pool.map(try_burn, range(CLIENTS)))
    assert succeeded == 3
    assert balance(engine, member_id) == 10
    assert_ledger_sound(engine)


def test_concurrent_partial_reversals_never_exceed_the_parent(engine: Engine) -> None:
    member_id = enroll(engine)
    earned = earn(engine, member_id, 50_000)  # 100 points
    start = threading.Barrier(CLIENTS)

    def try_reverse(_: int) -> int:
        start.wait()
        command = ReverseCommand(uuid.uuid4().hex, earned.transaction.transaction_id, 40)
        try:
            return operations.reverse(UnitOfWork(engine), "test-coffee", command, _now()).points
        except CoalitionError as error:
            assert error.reason == "REVERSAL_EXCEEDS_REMAINING"
            return 0

    with ThreadPoolExecutor(CLIENTS) as pool:
        reversed_points = sum(pool.map(try_reverse, range(CLIENTS)))
    assert reversed_points == 80
    assert balance(engine, member_id) == 20
    assert_ledger_sound(engine)

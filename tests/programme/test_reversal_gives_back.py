"""A reversed earn gives back what its promotion grants used: budget points, budget money and
the member's cap grant, exactly (docs/promotions.md, "Reversals"), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from coalition import operations
from coalition.operations.points import LedgerResult, ReverseCommand
from coalition.store.schema import promotion_member_grants, promotions
from coalition.store.unit_of_work import UnitOfWork
from tests.programme.conftest import assert_programme_sound, earn, enroll, new_id, now
from tests.programme.test_promotions_as_data import AIR, COALITION, create

pytestmark = pytest.mark.integration


def reverse(engine: Engine, earned: LedgerResult, points: int = 0) -> LedgerResult:
    command = ReverseCommand(new_id(), earned.transaction.transaction_id, points)
    return operations.reverse(UnitOfWork(engine), "test-air", command, now())


def spent(engine: Engine, promotion_id: str) -> tuple[int, int]:
    """(points, minor units) spent of the promotion's budgets."""
    with engine.connect() as connection:
        row = connection.execute(
            select(promotions.c.spent_points, promotions.c.spent_amount_minor).where(
                promotions.c.promotion_id == promotion_id
            )
        ).one()
    return int(row[0]), int(row[1])


def cap_rows(engine: Engine, promotion_id: str) -> list[tuple[str, int, int]]:
    with engine.connect() as connection:
        return [
            (row.member_id, int(row.grants), int(row.points))
            for row in connection.execute(
                select(promotion_member_grants)
                .where(promotion_member_grants.c.promotion_id == promotion_id)
                .order_by(promotion_member_grants.c.member_id)
            )
        ]


def test_a_partial_reversal_gives_back_its_share_and_a_full_one_the_rest(
    engine: Engine,
) -> None:
    # test-air: 1 point per euro at 1.2 cents a point; the promotion doubles the base.
    create(
        engine,
        AIR,
        promotion_id="test-air.double",
        multiplier="2",
        budget_points=150,
        budget_amount_minor=1_000,
        budget_currency="EUR",
    )
    alice = enroll(engine)
    earned = earn(engine, alice, 10_000)
    assert earned.points == 200  # 100 + 100, which spend 100 points and 120 cents
    assert spent(engine, "test-air.double") == (100, 120)
    reverse(engine, earned, 50)  # a quarter of the earn: a quarter of its grant back
    assert spent(engine, "test-air.double") == (75, 90)
    reverse(engine, earned, 1)  # floor(51 x 100 / 200) - floor(50 x 100 / 200) = 0
    assert spent(engine, "test-air.double") == (75, 90)
    reverse(engine, earned)  # the rest: everything the grant spent is back
    assert spent(engine, "test-air.double") == (0, 0)
    # What was given back is granted again, in full.
    assert earn(engine, enroll(engine), 15_000).points == 150 + 150
    assert spent(engine, "test-air.double") == (150, 180)
    assert_programme_sound(engine)


def test_a_full_reversal_gives_the_cap_grant_back_and_a_partial_one_does_not(
    engine: Engine,
) -> None:
    create(
        engine,
        COALITION,
        promotion_id="once",
        bonus_points=30,
        funded_by="coalition",
        grants_per_member_max=1,
    )
    mei = enroll(engine)
    first = earn(engine, mei, 1_000)
    assert first.points == 10 + 30
    assert earn(engine, mei, 1_000).points == 10  # capped
    reverse(engine, first, 20)  # half the earn: half the bonus off the cap row
    assert cap_rows(engine, "once") == [(mei, 1, 15)]
    assert earn(engine, mei, 1_000).points == 10  # the grant is still taken
    reverse(engine, first)
    assert cap_rows(engine, "once") == []  # reversed in full: the grant is the member's again
    assert earn(engine, mei, 1_000).points == 10 + 30
    assert cap_rows(engine, "once") == [(mei, 1, 30)]
    assert_programme_sound(engine)


def test_reversals_and_earns_racing_for_a_budget_spend_it_exactly(engine: Engine) -> None:
    create(
        engine,
        AIR,
        promotion_id="test-air.launch",
        bonus_points=100,
        budget_points=100,
        budget_amount_minor=120,
        budget_currency="EUR",
    )
    alice = enroll(engine)
    earned = earn(engine, alice, 10_000)  # 100 + 100: the whole budget
    assert spent(engine, "test-air.launch") == (100, 120)
    others = [enroll(engine) for _ in range(4)]
    jobs: list[Any] = [20] * 10 + others  # ten reversals of 20 points each, four earns
    start = threading.Barrier(len(jobs))

    def send(job: Any) -> int:
        start.wait()
        if isinstance(job, int):
            reverse(engine, earned, job)
            return 0
        return earn(engine, job, 1_000).points - 10

    with ThreadPoolExecutor(len(jobs)) as pool:
        bonuses = list(pool.map(send, jobs))
    # The earn is reversed in full, whatever the order: its grant is all back, and the
    # racing earns got no more than it had freed when each ran (a grant may be cut to what
    # was back by then), each spend counted exactly once, at 1.2 cents a point rounded up.
    assert sum(bonuses) <= 100
    assert spent(engine, "test-air.launch") == (
        sum(bonuses),
        sum(-(-bonus * 6 // 5) for bonus in bonuses),
    )
    assert_programme_sound(engine)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("earn"), st.integers(100, 40_000)),
            st.tuples(st.just("reverse"), st.integers(0, 300)),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_budget_spent_is_always_the_sum_of_live_grants(
    engine: Engine, steps: list[tuple[str, int]]
) -> None:
    promotion_id = f"test-air.p{uuid.uuid4().hex[:12]}"
    create(
        engine,
        AIR,
        promotion_id=promotion_id,
        multiplier="1.7",
        budget_points=500,
        budget_amount_minor=700,
        budget_currency="EUR",
        grants_per_member_max=2,
        cap_period="day",
    )
    members = [enroll(engine) for _ in range(2)]
    earns: list[tuple[LedgerResult, int]] = []  # each earn and the points left to reverse
    for index, (kind, amount) in enumerate(steps):
        if kind == "earn":
            result = earn(engine, members[index % 2], amount)
            earns.append((result, result.points))
        elif earns:
            position = amount % len(earns)
            result, left = earns[position]
            points = min(amount, left)  # 0: the rest
            if left:
                reverse(engine, result, points)
                earns[position] = (result, 0 if points == 0 else left - points)
    # spent == the sum of live grants, caps count live grants, never over budget.
    assert_programme_sound(engine)

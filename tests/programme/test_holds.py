"""Burn holds: authorise, capture once, void, TTL release, idempotency, concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from coalition.domain.errors import CoalitionError, FailedPrecondition, NotFound
from coalition.ledger.holds import find_hold, release_expired_holds
from coalition.store.schema import holds, lot_consumptions
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import row_counts
from tests.programme.conftest import (
    assert_programme_sound,
    authorize,
    balance,
    burn,
    capture,
    earn,
    enroll,
    new_id,
    now,
    void,
)

pytestmark = pytest.mark.integration


def member_with(engine: Engine, points: int) -> str:
    member_id = enroll(engine)
    earn(engine, member_id, points * 100)  # test-air: 1 point per euro
    return member_id


def test_hold_reserves_and_capture_takes_up_to_the_hold_once(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    held = authorize(engine, member_id, 60)
    assert (held.points, held.balance_points, held.hold.status) == (60, 40, "open")
    assert balance(engine, member_id) == (40, 60)
    with pytest.raises(FailedPrecondition) as caught:
        burn(engine, member_id, 41)
    assert caught.value.reason == "INSUFFICIENT_POINTS"

    captured = capture(engine, held.hold.hold_id, 45)
    assert (captured.points, captured.points_released, captured.balance_points) == (45, 15, 55)
    assert (captured.hold.status, captured.hold.points_captured) == ("captured", 45)
    assert balance(engine, member_id) == (55, 0)
    for attempt in (
        partial(capture, engine, held.hold.hold_id),
        partial(void, engine, held.hold.hold_id),
    ):
        rows_before = row_counts(engine)
        with pytest.raises(FailedPrecondition) as caught:
            attempt()
        assert (caught.value.reason, caught.value.metadata["status"]) == (
            "HOLD_NOT_OPEN",
            "captured",
        )
        assert row_counts(engine) == rows_before
    assert_programme_sound(engine)


def test_capture_consumes_lots_under_the_capture(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    held = authorize(engine, member_id, 30)
    captured = capture(engine, held.hold.hold_id)
    assert (captured.points, captured.points_released) == (30, 0)
    with engine.connect() as connection:
        consumed = connection.execute(
            select(lot_consumptions.c.points).where(
                lot_consumptions.c.burn_transaction_id == captured.transaction.transaction_id
            )
        ).scalars()
        assert sum(consumed) == 30
    assert_programme_sound(engine)


def test_capture_beyond_the_hold_and_of_expired_holds_is_refused(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    held = authorize(engine, member_id, 10, ttl=timedelta(minutes=1))
    rows_before = row_counts(engine)
    with pytest.raises(FailedPrecondition) as caught:
        capture(engine, held.hold.hold_id, 11)
    assert caught.value.reason == "CAPTURE_EXCEEDS_HOLD"
    with pytest.raises(FailedPrecondition) as caught:
        capture(engine, held.hold.hold_id, at=now() + timedelta(minutes=2))
    assert caught.value.reason == "HOLD_EXPIRED"
    assert row_counts(engine) == rows_before


def test_another_partners_hold_does_not_exist_for_the_caller(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    held = authorize(engine, member_id, 10)
    with pytest.raises(NotFound) as caught:
        capture(engine, held.hold.hold_id, partner_id="test-cinema")
    assert caught.value.reason == "HOLD_NOT_FOUND"
    with pytest.raises(NotFound):
        void(engine, held.hold.hold_id, partner_id="test-coffee")


def test_void_releases_and_operations_replay_by_request_id(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    request_id = new_id()
    held = authorize(engine, member_id, 25, request_id=request_id)
    replay = authorize(engine, member_id, 25, request_id=request_id)
    assert replay.replayed and replay.hold == held.hold and replay.transaction == held.transaction
    void_request_id = new_id()
    voided = void(engine, held.hold.hold_id, request_id=void_request_id)
    assert (voided.points, voided.balance_points, voided.hold.status) == (25, 100, "voided")
    rows_before = row_counts(engine)
    again = void(engine, held.hold.hold_id, request_id=void_request_id)
    assert again.replayed and again.transaction == voided.transaction
    replay_after_void = authorize(engine, member_id, 25, request_id=request_id)
    assert replay_after_void.hold.status == "open", "a replay answers as first sent"
    assert row_counts(engine) == rows_before
    assert balance(engine, member_id) == (100, 0)
    assert_programme_sound(engine)


def test_holds_past_their_ttl_are_available_and_released(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    first = authorize(engine, member_id, 70, ttl=timedelta(minutes=1))
    later = now() + timedelta(minutes=2)
    assert balance(engine, member_id) == (30, 70)
    # A burn after the TTL first releases the hold, then takes what it needs.
    burned = burn(engine, member_id, 90, at=later)
    assert burned.balance_points == 10
    with UnitOfWork(engine, read_only=True) as uow:
        hold = find_hold(uow, first.hold.hold_id)
    assert hold is not None and hold.status == "expired"
    second = authorize(engine, member_id, 5, ttl=timedelta(minutes=1))
    report = release_expired_holds(partial(UnitOfWork, engine), now() + timedelta(minutes=2))
    assert report.holds_released == 1
    assert release_expired_holds(partial(UnitOfWork, engine), later).holds_released == 0
    with UnitOfWork(engine, read_only=True) as uow:
        hold = find_hold(uow, second.hold.hold_id)
    assert hold is not None and hold.status == "expired"
    assert balance(engine, member_id) == (10, 0)
    assert_programme_sound(engine)


def test_balance_as_of_separates_held_points(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    before_hold = now()
    held = authorize(engine, member_id, 40)
    while_held = now()
    capture(engine, held.hold.hold_id, 30)
    assert balance(engine, member_id, as_of=before_hold) == (100, 0)
    assert balance(engine, member_id, as_of=while_held) == (60, 40)
    assert balance(engine, member_id, as_of=now()) == (70, 0)


def test_no_double_capture_under_concurrency(engine: Engine) -> None:
    member_id = member_with(engine, 100)
    held = authorize(engine, member_id, 50)
    attempts = 12

    def attempt(index: int) -> str:
        try:
            if index % 2:
                capture(engine, held.hold.hold_id, 10 + index)
                return "captured"
            void(engine, held.hold.hold_id)
            return "voided"
        except CoalitionError as error:
            return error.reason

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        outcomes = list(pool.map(attempt, range(attempts)))
    successes = [outcome for outcome in outcomes if outcome in ("captured", "voided")]
    assert len(successes) == 1, outcomes
    assert outcomes.count("HOLD_NOT_OPEN") == attempts - 1
    with engine.connect() as connection:
        status = connection.execute(
            select(holds.c.status).where(holds.c.hold_transaction_id == held.hold.hold_id)
        ).scalar_one()
    assert status == successes[0]
    assert_programme_sound(engine)


hold_step = st.one_of(
    st.tuples(st.just("hold"), st.integers(1, 60)),
    st.tuples(st.just("capture"), st.integers(0, 9), st.integers(0, 70)),
    st.tuples(st.just("void"), st.integers(0, 9)),
    st.tuples(st.just("burn"), st.integers(1, 60)),
    st.tuples(st.just("earn"), st.integers(1, 60)),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(hold_step, min_size=1, max_size=20))
def test_available_is_exactly_balance_minus_held(
    engine: Engine, steps: list[tuple[int | str, ...]]
) -> None:
    """A model of owned and held points predicts every outcome; refused steps write nothing."""
    member_id = member_with(engine, 100)
    owned, open_holds = 100, {}  # hold id -> points held
    hold_ids: list[int] = []
    for step in steps:
        kind = step[0]
        available = owned - sum(open_holds.values())
        rows_before = row_counts(engine)
        try:
            if kind == "hold":
                result = authorize(engine, member_id, int(step[1]))
                open_holds[result.hold.hold_id] = int(step[1])
                hold_ids.append(result.hold.hold_id)
            elif kind == "earn":
                earn(engine, member_id, int(step[1]) * 100)
                owned += int(step[1])
            elif kind == "burn":
                burn(engine, member_id, int(step[1]))
                owned -= int(step[1])
            elif hold_ids:
                hold_id = hold_ids[int(step[1]) % len(hold_ids)]
                if kind == "capture":
                    points_captured = capture(engine, hold_id, int(step[2])).points
                    owned -= points_captured
                else:
                    void(engine, hold_id)
                open_holds.pop(hold_id)
        except FailedPrecondition as error:
            assert row_counts(engine) == rows_before
            expected = {
                "hold": "INSUFFICIENT_POINTS",
                "burn": "INSUFFICIENT_POINTS",
                "capture": "HOLD_NOT_OPEN",
                "void": "HOLD_NOT_OPEN",
            }[str(kind)]
            if error.reason == "CAPTURE_EXCEEDS_HOLD":
                assert int(step[2]) > open_holds[hold_id]
            else:
                assert error.reason == expected
                if expected == "INSUFFICIENT_POINTS":
                    assert int(step[1]) > available
                else:
                    assert hold_id not in open_holds
        assert balance(engine, member_id) == (
            owned - sum(open_holds.values()),
            sum(open_holds.values()),
        )
    assert_programme_sound(engine)

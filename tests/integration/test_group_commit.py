"""Group commit against real SQLite and PostgreSQL: earns of several partners share one
transaction, each keeps its own answer, refusal, request id and sight of the balance."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from coalition.domain.errors import CoalitionError
from coalition.domain.points import Money
from coalition.domain.promotions import Promotion
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations import batch_earn
from coalition.operations.group_commit import Committer
from coalition.operations.points import EarnCommand
from coalition.programme.config import DEFAULT_PROGRAMME, Programme
from coalition.store.engine import CITUS_INFO_KEY, create_committer_engine
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound, remembered_refusals

pytestmark = pytest.mark.integration

# Partner -> currency of its spend (tests/conftest.py); every one earns 1 point per unit or
# more at today's rates, so 10 units earn points everywhere.
CURRENCY_OF = {"test-coffee": "CNY", "test-air": "EUR", "test-cinema": "GBP"}


def now() -> datetime:
    return datetime.now(UTC)


def enroll_at_coffee(engine: Engine) -> str:
    enrolment = members.enroll(
        UnitOfWork(engine), "test-coffee", uuid.uuid4().hex, uuid.uuid4().hex, "Ana", now()
    )
    return enrolment.member.member_id


def earn(member_id: str, partner_id: str, request_id: str = "", currency: str = "") -> EarnCommand:
    return EarnCommand(
        request_id=request_id or uuid.uuid4().hex,
        member=MemberReference(member_id=member_id),
        spend=Money(10_000, currency or CURRENCY_OF[partner_id]),
    )


def commit_ids(engine: Engine) -> Counter[int]:
    """Events per committing transaction id (PostgreSQL records it on every event)."""
    with engine.connect() as connection:
        return Counter(connection.execute(text("SELECT commit_xid FROM events")).scalars())


def test_earns_of_three_partners_share_one_transaction_and_keep_their_own_answers(
    engine: Engine,
) -> None:
    member_id = enroll_at_coffee(engine)  # linked at coffee only
    shared_request_id = uuid.uuid4().hex  # request ids are each partner's own
    earns = [
        ("test-coffee", earn(member_id, "test-coffee", shared_request_id)),
        ("test-air", earn(member_id, "test-air", shared_request_id)),
        ("test-cinema", earn(member_id, "test-cinema", currency="CNY")),  # refused
        ("test-cinema", earn(member_id, "test-cinema")),
    ]
    events_before = commit_ids(engine)

    result = batch_earn.earn_many(UnitOfWork(engine), DEFAULT_PROGRAMME, earns, now())

    coffee, air, refused, cinema = result.outcomes
    assert refused.error is not None and refused.error.reason == "CURRENCY_MISMATCH"
    applied = [coffee, air, cinema]
    assert all(outcome.result is not None for outcome in applied)
    records = [outcome.result.transaction for outcome in applied if outcome.result]
    assert [record.partner_id for record in records] == ["test-coffee", "test-air", "test-cinema"]
    # Each answer's balance is the member's right after its own earn, in order.
    running = 0
    for outcome in applied:
        assert outcome.result is not None
        running += outcome.result.points
        assert outcome.result.balance_points == running
    # Only the partner the member is linked at may see the balance.
    assert [outcome.balance_visible for outcome in applied] == [True, False, False]
    refused_request = earns[2][1].request_id
    assert remembered_refusals(engine)[("test-cinema", refused_request)] == "CURRENCY_MISMATCH"
    new_events = commit_ids(engine) - events_before
    assert sum(new_events.values()) == 3
    if engine.dialect.name == "postgresql":
        assert len(new_events) == 1, "one transaction for the three partners' earns"
    assert_ledger_sound(engine)


def test_a_group_replays_each_partners_request_ids_apart(engine: Engine) -> None:
    member_id = enroll_at_coffee(engine)
    request_id = uuid.uuid4().hex
    first = [
        ("test-coffee", earn(member_id, "test-coffee", request_id)),
        ("test-air", earn(member_id, "test-air", request_id)),
    ]
    applied = batch_earn.earn_many(UnitOfWork(engine), DEFAULT_PROGRAMME, first, now())
    again = batch_earn.earn_many(
        UnitOfWork(engine), DEFAULT_PROGRAMME, list(reversed(first)), now()
    )

    assert [o.result.replayed for o in applied.outcomes if o.result] == [False, False]
    assert [o.result.replayed for o in again.outcomes if o.result] == [True, True]
    assert [o.result.transaction.transaction_id for o in again.outcomes if o.result] == [
        o.result.transaction.transaction_id for o in reversed(applied.outcomes) if o.result
    ]
    assert_ledger_sound(engine)


def test_a_group_applies_a_new_request_id_another_partner_already_used(engine: Engine) -> None:
    # Request ids are each partner's own: the coffee chain's replay of an id and the airline's
    # first use of the same id, in one group, are one replay and one new earn.
    member_id = enroll_at_coffee(engine)
    request_id = uuid.uuid4().hex
    coffee = ("test-coffee", earn(member_id, "test-coffee", request_id))
    first = batch_earn.earn_many(UnitOfWork(engine), DEFAULT_PROGRAMME, [coffee], now())
    air = ("test-air", earn(member_id, "test-air", request_id))

    again = batch_earn.earn_many(UnitOfWork(engine), DEFAULT_PROGRAMME, [coffee, air], now())

    replay, new = (outcome.result for outcome in again.outcomes)
    original = first.outcomes[0].result
    assert replay is not None and new is not None and original is not None
    assert replay.replayed and not new.replayed
    assert replay.transaction.transaction_id == original.transaction.transaction_id
    assert new.transaction.partner_id == "test-air"
    with engine.connect() as connection:
        earns_of_the_id = connection.execute(
            text("SELECT partner_id FROM journal_transactions WHERE request_id = :r"),
            {"r": request_id},
        ).scalars()
        assert sorted(earns_of_the_id) == ["test-air", "test-coffee"]
    assert_ledger_sound(engine)


def test_the_committer_gathers_concurrent_earns_of_every_partner(engine: Engine) -> None:
    member_ids = [enroll_at_coffee(engine) for _ in range(4)]
    partners = sorted(CURRENCY_OF)
    calls = [
        (partners[n % 3], earn(member_ids[n % 4], partners[n % 3], currency="")) for n in range(48)
    ]
    calls.append(("test-air", earn(member_ids[0], "test-air", currency="GBP")))  # refused
    events_before = commit_ids(engine)
    # A 20 ms window lets a group gather what 16 threads send at once.
    committer = Committer(engine, DEFAULT_PROGRAMME, window_seconds=0.02)
    try:

        def call(partner_and_command: tuple[str, EarnCommand]) -> object:
            partner_id, command = partner_and_command
            try:
                return committer.earn(partner_id, command, 30.0)
            except CoalitionError as error:
                return error

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, calls))
    finally:
        committer.stop()

    *earned, refused = answers
    assert isinstance(refused, CoalitionError) and refused.reason == "CURRENCY_MISMATCH"
    assert not any(isinstance(answer, CoalitionError) for answer in earned)
    visible = {
        partner_id: {
            answer.balance_visible
            for (p, _), answer in zip(calls[:-1], earned, strict=True)
            if p == partner_id
        }
        for partner_id in partners
    }
    assert visible == {"test-air": {False}, "test-cinema": {False}, "test-coffee": {True}}
    new_events = commit_ids(engine) - events_before
    assert sum(new_events.values()) == 48
    if engine.dialect.name == "postgresql":
        assert len(new_events) < 48, "concurrent earns shared transactions"
    with engine.connect() as connection:
        balances = dict(
            connection.execute(
                text("SELECT member_id, balance_points FROM member_accounts WHERE kind = 'member'")
            ).all()
        )
    earned_points = Counter()
    for (_, command), answer in zip(calls[:-1], earned, strict=True):
        earned_points[command.member.member_id] += answer.result.points
    assert {m: balances[m] for m in member_ids} == dict(earned_points)
    assert_ledger_sound(engine)


def test_a_partner_with_a_promotion_goes_in_a_group_of_its_own(engine: Engine) -> None:
    """Earns the programme adds to go item by item: the committer splits them from the
    set-based group, and each earn gets its own bonus and explanation."""
    bonus = Promotion(
        promotion_id="test-coffee.double-days",
        starts_at=datetime(2020, 1, 1, tzinfo=UTC),
        ends_at=datetime(2100, 1, 1, tzinfo=UTC),
        funded_by="partner",
        time_zone="UTC",
        partner_ids=frozenset({"test-coffee"}),
        bonus_points=7,
        owner_partner_id="test-coffee",
    )
    member_id = enroll_at_coffee(engine)
    calls = [(p, earn(member_id, p)) for p in ("test-coffee", "test-air", "test-cinema") * 4]
    events_before = commit_ids(engine)
    committer = Committer(
        engine, Programme(DEFAULT_PROGRAMME.ladder, (bonus,)), window_seconds=0.02
    )
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda call: committer.earn(*call, 30.0), calls))
    finally:
        committer.stop()

    for (partner_id, _), answer in zip(calls, answers, strict=True):
        explanation = answer.result.explanation
        assert explanation is not None
        bonus_points = [b.points for b in explanation.bonuses]
        assert bonus_points == ([7] if partner_id == "test-coffee" else [])
        assert answer.result.points == explanation.base_points + sum(bonus_points)
    new_events = commit_ids(engine) - events_before
    assert sum(new_events.values()) == 12
    if engine.dialect.name == "postgresql":
        transactions_of = {xid: set() for xid in new_events}
        with engine.connect() as connection:
            for xid, partner_id in connection.execute(
                text("SELECT commit_xid, partner_id FROM events")
            ):
                if xid in transactions_of:
                    transactions_of[xid].add(partner_id)
        assert all(
            "test-coffee" not in partners or partners == {"test-coffee"}
            for partners in transactions_of.values()
        ), "coffee's earns never share a transaction with the set-based group"
    assert_ledger_sound(engine)


def test_the_window_holds_a_group_open_for_calls_that_arrive_during_it(engine: Engine) -> None:
    """The window runs from the first queued call to its end (or a full group): calls arriving
    meanwhile join the group instead of ending the window."""
    member_id = enroll_at_coffee(engine)  # one member: one shard on Citus too
    events_before = commit_ids(engine)
    window_seconds = 0.1  # the longest allowed
    committer = Committer(engine, DEFAULT_PROGRAMME, window_seconds=window_seconds)
    answered_after: list[float] = []
    try:

        def call(number: int) -> None:
            time.sleep(0.01 * number)  # queued 0, 10 and 20 ms after the first
            started = time.monotonic()
            committer.earn("test-coffee", earn(member_id, "test-coffee"), 30.0)
            answered_after.append(time.monotonic() - started)

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(call, range(3)))
    finally:
        committer.stop()

    # No call is answered before the window that its group formed in has ended.
    assert max(answered_after) >= window_seconds - 0.01
    new_events = commit_ids(engine) - events_before
    assert sum(new_events.values()) == 3
    if engine.dialect.name == "postgresql":
        assert len(new_events) == 1, "the three earns shared the window's one transaction"
    assert_ledger_sound(engine)


def test_without_a_window_a_lone_call_waits_for_nothing(engine: Engine) -> None:
    member_id = enroll_at_coffee(engine)
    committer = Committer(engine, DEFAULT_PROGRAMME, window_seconds=0.0)
    try:
        started = time.monotonic()
        committer.earn("test-coffee", earn(member_id, "test-coffee"), 30.0)
        elapsed_seconds = time.monotonic() - started
    finally:
        committer.stop()
    # Far below any window worth setting, and far above a commit: the group went at once.
    assert elapsed_seconds < 0.5


def test_the_committers_statements_run_on_generic_plans(engine: Engine) -> None:
    """Its statements take arrays: planned for each group's own arrays, PostgreSQL would plan
    them again on every group (store/engine.py, create_committer_engine)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no plan cache to choose")
    member_ids = [enroll_at_coffee(engine) for _ in range(3)]
    committer_engine = create_committer_engine(engine, 1, 30.0)
    try:
        with committer_engine.connect() as connection:
            if connection.info.get(CITUS_INFO_KEY):
                pytest.skip("Citus plans distributed statements its own way")
        # psycopg prepares a statement at its fifth execution (prepare_threshold).
        for _ in range(8):
            earns = [("test-coffee", earn(member_id, "test-coffee")) for member_id in member_ids]
            outcomes = batch_earn.earn_many(
                UnitOfWork(committer_engine), DEFAULT_PROGRAMME, earns, now()
            ).outcomes
            assert all(outcome.result is not None for outcome in outcomes)
        with committer_engine.connect() as connection:  # the pool's one connection
            plans = connection.execute(
                text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
            ).all()
    finally:
        committer_engine.dispose()
    writes = [plan for plan in plans if "INSERT INTO journal_transactions" in plan.statement]
    assert len(writes) == 1, "the writer's statement is prepared"
    assert all(plan.custom_plans == 0 and plan.generic_plans > 0 for plan in plans), plans
    assert_ledger_sound(engine)

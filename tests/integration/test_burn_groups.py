"""Burns in groups against real SQLite and PostgreSQL (operations/batch_burn.py): burns of
several partners and members share one transaction; each keeps its own answer, refusal and
request id; burns of one member are checked in order against its balance; lots are consumed
earliest expiry first across the group; a concurrent crowd through the committer keeps every
invariant."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from coalition.domain.errors import CoalitionError
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations import batch_burn
from coalition.operations.group_commit import Committer
from coalition.operations.points import BurnCommand
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound, remembered_refusals
from tests.integration.test_group_commit import commit_ids, earn
from tests.integration.test_ledger import earn as earn_points

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def enroll_at(engine: Engine, partner_id: str) -> str:
    enrolment = members.enroll(
        UnitOfWork(engine), partner_id, uuid.uuid4().hex, uuid.uuid4().hex, "Ana", now()
    )
    return enrolment.member.member_id


def burn(member_id: str, points: int, request_id: str = "") -> BurnCommand:
    return BurnCommand(
        request_id=request_id or uuid.uuid4().hex,
        member=MemberReference(member_id=member_id),
        points=points,
    )


def balance_of(engine: Engine, member_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT balance_points FROM member_accounts"
                    " WHERE member_id = :m AND account_id = :a"
                ),
                {"m": member_id, "a": f"member:{member_id}"},
            ).scalar_one()
        )


def test_burns_of_one_member_are_checked_in_order_and_a_refusal_keeps_the_others(
    engine: Engine,
) -> None:
    member_id = enroll_at(engine, "test-coffee")
    earn_points(engine, member_id, 50_000)  # 100 points at coffee (0.2 a yuan)
    assert balance_of(engine, member_id) == 100
    burns = [
        ("test-coffee", burn(member_id, 60)),
        ("test-coffee", burn(member_id, 50)),  # 40 left: refused
        ("test-coffee", burn(member_id, 40)),
    ]
    events_before = commit_ids(engine)

    first, refused, last = batch_burn.burn_many(UnitOfWork(engine), burns, now())

    assert first.result is not None and first.result.balance_points == 40
    assert refused.error is not None and refused.error.reason == "INSUFFICIENT_POINTS"
    assert refused.error.metadata["balance_points"] == "40"
    assert last.result is not None and last.result.balance_points == 0
    assert balance_of(engine, member_id) == 0
    refused_key = ("test-coffee", burns[1][1].request_id)
    assert remembered_refusals(engine)[refused_key] == "INSUFFICIENT_POINTS"
    new_events = commit_ids(engine) - events_before
    assert sum(new_events.values()) == 2
    if engine.dialect.name == "postgresql":
        assert len(new_events) == 1, "one transaction for the group"
    # The refusal is final: the same request again, alone, hears it again and writes nothing.
    (again,) = batch_burn.burn_many(UnitOfWork(engine), [burns[1]], now())
    assert again.error is not None and again.error.reason == "INSUFFICIENT_POINTS"
    assert_ledger_sound(engine)


def test_a_group_of_partners_and_members_replays_and_refuses_reuse_per_partner(
    engine: Engine,
) -> None:
    ana, bo = enroll_at(engine, "test-coffee"), enroll_at(engine, "test-air")
    earn_points(engine, ana, 10_000)  # 20 points
    earn_points(engine, bo, 10_000, partner_id="test-air")  # 100 points
    shared_request_id = uuid.uuid4().hex  # each partner's own
    burns = [
        ("test-coffee", burn(ana, 10, shared_request_id)),
        ("test-air", burn(bo, 5, shared_request_id)),
        ("test-coffee", burn(ana, 10, shared_request_id)),  # the same request within the group
        ("test-coffee", burn(ana, 11, shared_request_id)),  # another payload: a reuse
    ]
    coffee, air, repeated, reused = batch_burn.burn_many(UnitOfWork(engine), burns, now())

    assert coffee.result is not None and not coffee.result.replayed
    assert air.result is not None and air.result.transaction.member_id == bo
    assert repeated.result is not None and repeated.result.replayed
    assert repeated.result.transaction.transaction_id == coffee.result.transaction.transaction_id
    assert reused.error is not None and reused.error.reason == "REQUEST_ID_REUSED"
    again = batch_burn.burn_many(UnitOfWork(engine), burns[:2], now())
    assert [o.result.replayed for o in again if o.result] == [True, True]
    assert balance_of(engine, ana) == coffee.result.balance_points
    assert_ledger_sound(engine)


def test_a_group_consumes_each_members_lots_earliest_expiry_first(engine: Engine) -> None:
    member_id = enroll_at(engine, "test-coffee")
    earn_points(engine, member_id, 10_000)  # 20 points, expire in 24 months
    earn_points(engine, member_id, 1_500, partner_id="test-cinema")  # 15 points, 12 months
    burns = [("test-coffee", burn(member_id, 10)), ("test-coffee", burn(member_id, 8))]

    outcomes = batch_burn.burn_many(UnitOfWork(engine), burns, now())

    assert all(outcome.result is not None for outcome in outcomes)
    with engine.connect() as connection:
        consumed = connection.execute(
            text(
                "SELECT j.request_id, l.partner_id, c.points FROM lot_consumptions c"
                " JOIN lots l ON l.lot_id = c.lot_id AND l.member_id = c.member_id"
                " JOIN journal_transactions j"
                " ON j.member_id = c.member_id AND j.transaction_id = c.transaction_id"
                " WHERE c.member_id = :m ORDER BY c.transaction_id, l.expires_at"
            ),
            {"m": member_id},
        ).all()
    first, second = (command.request_id for _, command in burns)
    # The second burn sees what the first left of the cinema lot, then takes coffee's.
    assert [tuple(row) for row in consumed] == [
        (first, "test-cinema", 10),
        (second, "test-cinema", 5),
        (second, "test-coffee", 3),
    ]
    assert_ledger_sound(engine)


def test_a_group_spends_more_lots_than_one_page(engine: Engine) -> None:
    member_id = enroll_at(engine, "test-coffee")
    for _ in range(70):  # more lots than lots.LOT_PAGE_SIZE (64)
        earn_points(engine, member_id, 500)  # 1 point each
    burns = [("test-coffee", burn(member_id, 30)), ("test-coffee", burn(member_id, 40))]

    first, second = batch_burn.burn_many(UnitOfWork(engine), burns, now())

    assert first.result is not None and second.result is not None
    assert second.result.balance_points == 0
    assert_ledger_sound(engine)


def test_due_changes_are_posted_before_a_groups_burns(engine: Engine) -> None:
    """A lot past its expiry is never spent, though the expiry job has not run."""
    member_id = enroll_at(engine, "test-coffee")
    earn_points(engine, member_id, 5_000)  # 10 points
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE lots SET expires_at = :t WHERE member_id = :m"),
            {"t": now() - timedelta(days=1), "m": member_id},
        )
    other = enroll_at(engine, "test-coffee")
    earn_points(engine, other, 10_000)  # 20 points
    burns = [("test-coffee", burn(member_id, 10)), ("test-coffee", burn(other, 10))]

    refused, applied = batch_burn.burn_many(UnitOfWork(engine), burns, now())

    assert refused.error is not None and refused.error.reason == "INSUFFICIENT_POINTS"
    assert refused.error.metadata["balance_points"] == "0"
    assert applied.result is not None and applied.result.balance_points == 10
    assert balance_of(engine, member_id) == 0  # the expiry was posted and kept
    assert_ledger_sound(engine)


def test_a_group_spends_only_the_lots_left_after_its_due_changes(engine: Engine) -> None:
    """A member with a lot past its expiry and one still good: the group reads every member's
    lots with the due changes, and spends that member's only once its expiry is posted."""
    member_id = enroll_at(engine, "test-coffee")
    earn_points(engine, member_id, 5_000)  # 10 points, expired below
    earn_points(engine, member_id, 10_000)  # 20 points
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE lots SET expires_at = :t WHERE member_id = :m AND lot_id ="
                " (SELECT min(lot_id) FROM lots WHERE member_id = :m)"
            ),
            {"t": now() - timedelta(days=1), "m": member_id},
        )
    other = enroll_at(engine, "test-coffee")
    earn_points(engine, other, 10_000)  # 20 points
    burns = [("test-coffee", burn(member_id, 15)), ("test-coffee", burn(other, 15))]

    outcomes = batch_burn.burn_many(UnitOfWork(engine), burns, now())

    assert [outcome.result.balance_points for outcome in outcomes if outcome.result] == [5, 5]
    with engine.connect() as connection:
        remaining = connection.execute(
            text("SELECT remaining_points FROM lots WHERE member_id = :m ORDER BY lot_id"),
            {"m": member_id},
        ).scalars()
        assert list(remaining) == [0, 5]  # the expired lot expired, the good one spent
    assert_ledger_sound(engine)


def test_a_partners_burn_needs_its_sight_of_the_balance(engine: Engine) -> None:
    member_id = enroll_at(engine, "test-coffee")  # not linked at air
    earn_points(engine, member_id, 10_000)
    burns = [
        ("test-air", burn(member_id, 1)),
        ("test-coffee", burn(member_id, 1)),
        ("test-coffee", burn("mem_nobody", 1)),
    ]

    unlinked, linked, unknown = batch_burn.burn_many(
        UnitOfWork(engine), burns, now(), require_sight=True
    )

    assert unlinked.error is not None and unlinked.error.reason == "MEMBER_NOT_LINKED"
    assert unknown.error is not None and unknown.error.reason == "MEMBER_NOT_FOUND"
    assert linked.result is not None and linked.balance_visible
    # Refused at the door: no claim keeps them, so a retry after linking applies.
    assert ("test-air", burns[0][1].request_id) not in remembered_refusals(engine)
    assert_ledger_sound(engine)


def test_the_committer_gathers_concurrent_burns_and_earns(engine: Engine) -> None:
    member_ids = [enroll_at(engine, "test-coffee") for _ in range(4)]
    for member_id in member_ids:
        earn_points(engine, member_id, 10_000)  # 20 points each
    # 8 burns of 3 points per member: 6 fit in 20, 2 are refused, whatever the grouping;
    # earns of other members go through the same committer meanwhile.
    burns = [("test-coffee", burn(member_ids[n % 4], 3)) for n in range(32)]
    earners = [enroll_at(engine, "test-coffee") for _ in range(2)]
    earns = [("test-coffee", earn(earners[n % 2], "test-coffee")) for n in range(8)]
    committer = Committer(engine, DEFAULT_PROGRAMME, window_seconds=0.02)
    try:

        def call(index: int) -> object:
            try:
                if index < len(burns):
                    return committer.burn(*burns[index], 30.0)
                return committer.earn(*earns[index - len(burns)], 30.0)
            except CoalitionError as error:
                return error

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, range(len(burns) + len(earns))))
    finally:
        committer.stop()

    refusals = [a for a in answers if isinstance(a, CoalitionError)]
    assert all(not isinstance(a, CoalitionError) for a in answers[len(burns) :])
    assert {refusal.reason for refusal in refusals} == {"INSUFFICIENT_POINTS"}
    assert len(refusals) == 8
    assert all(balance_of(engine, member_id) == 2 for member_id in member_ids)
    assert_ledger_sound(engine)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    earned=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    debits=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 60)), min_size=1, max_size=12),
)
def test_any_group_of_burns_equals_the_same_burns_one_by_one(
    engine: Engine, earned: list[int], debits: list[tuple[int, int]]
) -> None:
    """The group's answers are those of the burns applied one after the other: a burn is
    refused exactly when what the member has left cannot cover it."""
    member_ids = [enroll_at(engine, "test-coffee") for _ in range(3)]
    for index, points in enumerate(earned):
        earn_points(engine, member_ids[index % 3], points * 500)  # `points` points
    left = {member_id: balance_of(engine, member_id) for member_id in member_ids}
    burns = [("test-coffee", burn(member_ids[m], points)) for m, points in debits]

    outcomes = batch_burn.burn_many(UnitOfWork(engine), burns, now())

    for (_, command), outcome in zip(burns, outcomes, strict=True):
        member_id = command.member.member_id or ""
        if command.points is not None and command.points <= left[member_id]:
            left[member_id] -= command.points
            assert outcome.result is not None and outcome.result.balance_points == left[member_id]
        else:
            assert outcome.error is not None and outcome.error.reason == "INSUFFICIENT_POINTS"
    assert {m: balance_of(engine, m) for m in member_ids} == left
    assert_ledger_sound(engine)

"""Expiry of lots with breakage, on real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from coalition.domain.errors import FailedPrecondition, InvalidArgument
from coalition.ledger.expiry import breakage_coalition_share, expire_lots
from coalition.ledger.system_accounts import COALITION_PROMOTIONS_ACCOUNT_ID
from coalition.programme.config import Programme
from coalition.store.schema import (
    journal_transactions,
    lot_consumptions,
    lot_expiries,
    lots,
    postings,
)
from coalition.store.unit_of_work import UnitOfWork
from tests.programme.conftest import (
    PLAIN,
    assert_programme_sound,
    authorize,
    balance,
    burn,
    earn,
    enroll,
    now,
    promotion,
    void,
)

pytestmark = pytest.mark.integration

# Test Cinema's points last 12 months: earned on 2025-06-15, they expire on 2026-06-15.
CINEMA_EARNED_AT = datetime(2025, 6, 15, 12, tzinfo=UTC)
CINEMA_EXPIRES_AT = datetime(2026, 6, 15, 12, tzinfo=UTC)
AFTER_EXPIRY = CINEMA_EXPIRES_AT + timedelta(days=1)


def expire(engine: Engine, as_of: datetime, batch_size: int = 200) -> tuple[int, int]:
    report = expire_lots(partial(UnitOfWork, engine), as_of, now(), batch_size)
    return report.lots_expired, report.points_expired


def posted(engine: Engine, account_id: str) -> int:
    with engine.connect() as connection:
        points = connection.execute(
            select(func.coalesce(func.sum(postings.c.points), 0)).where(
                postings.c.account_id == account_id
            )
        ).scalar_one()
    return int(points)


def test_expiry_posts_breakage_to_the_issuer_once(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 1_000, "test-cinema", at=CINEMA_EARNED_AT)  # 10 points
    earn(engine, member_id, 700, "test-air", at=CINEMA_EARNED_AT)  # 7, valid for 36 months
    # from the cinema lot: it expires first
    burn(engine, member_id, 4, "test-air", at=CINEMA_EARNED_AT + timedelta(hours=1))
    assert expire(engine, CINEMA_EXPIRES_AT - timedelta(seconds=1)) == (0, 0)

    assert expire(engine, AFTER_EXPIRY) == (1, 6)

    assert balance(engine, member_id) == (7, 0)
    assert posted(engine, "partner:test-cinema:breakage") == 6
    assert posted(engine, "partner:test-air:breakage") == 0
    with engine.connect() as connection:
        expiry = connection.execute(
            select(journal_transactions).where(journal_transactions.c.kind == "expire")
        ).one()
    assert (expiry.partner_id, expiry.points_delta) == ("test-cinema", -6)
    assert expiry.occurred_at == CINEMA_EXPIRES_AT
    assert expire(engine, AFTER_EXPIRY) == (0, 0), "a second run expires nothing"
    assert balance(engine, member_id) == (7, 0)
    assert_programme_sound(engine)


def test_batches_are_bounded_and_cover_every_lot(engine: Engine) -> None:
    member_ids = [enroll(engine) for _ in range(3)]
    for member_id in member_ids:
        for _ in range(3):
            earn(engine, member_id, 500, "test-cinema", occurred_at=CINEMA_EARNED_AT)
    report = expire_lots(partial(UnitOfWork, engine), AFTER_EXPIRY, now(), batch_size=2)
    assert (report.lots_expired, report.points_expired, report.batches) == (9, 45, 5)
    assert all(balance(engine, member_id) == (0, 0) for member_id in member_ids)
    assert_programme_sound(engine)


def test_as_of_in_the_future_is_refused_and_changes_nothing(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 1_000, "test-cinema", at=CINEMA_EARNED_AT)
    with pytest.raises(InvalidArgument) as caught:
        expire(engine, now() + timedelta(days=1))
    assert caught.value.reason == "AS_OF_IN_FUTURE"
    assert balance(engine, member_id, as_of=now()) == (10, 0)  # the books as posted


def test_held_points_do_not_expire_and_expire_after_release(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 1_000, "test-cinema", at=CINEMA_EARNED_AT)
    week = timedelta(days=7)
    hold = authorize(
        engine, member_id, 4, "test-cinema", ttl=week, at=CINEMA_EXPIRES_AT - timedelta(hours=1)
    )
    assert expire(engine, AFTER_EXPIRY) == (1, 6)
    assert balance(engine, member_id, at=AFTER_EXPIRY - timedelta(hours=1)) == (0, 4)
    # the points return to the expired lot: not spendable, though the job has not run
    void(engine, hold.hold.hold_id, "test-cinema", at=AFTER_EXPIRY)
    assert balance(engine, member_id, at=AFTER_EXPIRY) == (0, 0)
    assert expire(engine, AFTER_EXPIRY) == (1, 4), "a second round for the returned points"
    with engine.connect() as connection:
        rounds = connection.execute(
            select(lot_expiries.c.expiry_round).order_by(lot_expiries.c.expiry_round)
        ).scalars()
        assert list(rounds) == [0, 1]
    assert balance(engine, member_id) == (0, 0)
    assert_programme_sound(engine)


def test_coalition_funded_bonus_breakage_returns_to_the_coalition(engine: Engine) -> None:
    double = Programme(PLAIN.ladder, (promotion("double", multiplier=Decimal(3)),))
    member_id = enroll(engine)
    # 10 base + 20 coalition-funded
    earn(engine, member_id, 1_000, "test-cinema", at=CINEMA_EARNED_AT, programme=double)
    burn(engine, member_id, 9, "test-cinema", at=CINEMA_EARNED_AT + timedelta(hours=1))
    assert expire(engine, AFTER_EXPIRY) == (1, 21)
    # 21 of 30 remain; the coalition funded 2/3 of the lot: 14 go back to it, 7 are breakage.
    assert posted(engine, "partner:test-cinema:breakage") == 7
    assert posted(engine, COALITION_PROMOTIONS_ACCOUNT_ID) == -20 + 14
    assert_programme_sound(engine)


def test_balance_as_of_answers_from_the_journal_across_expiry(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 1_000, "test-cinema", occurred_at=CINEMA_EARNED_AT)
    before_expiry = now()
    expire(engine, AFTER_EXPIRY)
    after_expiry = now()
    assert balance(engine, member_id, as_of=before_expiry) == (10, 0)
    assert balance(engine, member_id, as_of=after_expiry) == (0, 0)


@pytest.mark.unit
@given(
    lot_points=st.integers(1, 10**9),
    data=st.data(),
)
def test_breakage_share_stays_within_the_coalition_funded_points(
    lot_points: int, data: st.DataObject
) -> None:
    coalition_points = data.draw(st.integers(0, lot_points))
    remaining = data.draw(st.integers(1, lot_points))
    share = breakage_coalition_share(remaining, lot_points, coalition_points)
    assert 0 <= share <= min(remaining, coalition_points)
    assert share * lot_points <= remaining * coalition_points < (share + 1) * lot_points


step = st.one_of(
    st.tuples(st.just("earn"), st.integers(0, 1), st.sampled_from(["test-cinema", "test-air"])),
    st.tuples(st.just("burn"), st.integers(0, 1), st.integers(1, 25)),
    st.tuples(st.just("hold"), st.integers(0, 1), st.integers(1, 25)),
    st.tuples(st.just("expire"), st.integers(0, 1), st.integers(1, 3)),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=15))
def test_expiry_keeps_balances_lots_and_journal_consistent(
    engine: Engine, steps: list[tuple[object, ...]]
) -> None:
    """Whatever the order of earns, burns, holds and expiry runs: no point is expired twice,
    expired lots hold nothing, and every balance equals its postings and its lots."""
    member_ids = [enroll(engine), enroll(engine)]
    for kind, member_index, argument in steps:
        member_id = member_ids[int(member_index)]  # type: ignore[call-overload]
        available, _ = balance(engine, member_id)
        if kind == "earn":
            occurred_at = CINEMA_EARNED_AT if argument == "test-cinema" else None
            earn(engine, member_id, 1_000, str(argument), occurred_at=occurred_at)
        elif kind in ("burn", "hold") and available >= int(argument):  # type: ignore[call-overload]
            points = int(argument)  # type: ignore[call-overload]
            (burn if kind == "burn" else authorize)(engine, member_id, points)
        elif kind == "expire":
            expire(engine, AFTER_EXPIRY, batch_size=int(argument))  # type: ignore[call-overload]
            with engine.connect() as connection:
                unexpired = connection.execute(
                    select(func.count()).where(
                        lots.c.expires_at <= AFTER_EXPIRY, lots.c.remaining_points > 0
                    )
                ).scalar_one()
            assert unexpired == 0
    assert_programme_sound(engine)


def test_jobs_expire_command_is_idempotent(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from coalition import cli

    member_id = enroll(engine)
    earn(engine, member_id, 1_000, "test-cinema", occurred_at=CINEMA_EARNED_AT)
    arguments = ["jobs", "expire", "--db", database_url, "--as-of", "2026-06-16"]
    assert cli.main(arguments) == 0
    assert cli.main(arguments) == 0
    assert cli.main([*arguments[:-1], "2999-01-01"]) == 1
    output = capsys.readouterr()
    assert output.out.splitlines() == [
        "expired 10 points in 1 lots (1 batches)",
        "expired 0 points in 0 lots (0 batches)",
    ]
    assert "AS_OF_IN_FUTURE" in output.err
    assert balance(engine, member_id) == (0, 0)


def test_a_lot_past_its_expiry_is_never_spent_or_counted_though_the_job_has_not_run(
    engine: Engine,
) -> None:
    """Found by an independent client: expired points stayed spendable until the job ran."""
    member_id = enroll(engine)
    earn(engine, member_id, 1_000, "test-cinema", at=CINEMA_EARNED_AT)  # 10, expire first
    earn(engine, member_id, 700, "test-air", at=CINEMA_EARNED_AT)  # 7, for 36 months
    assert balance(engine, member_id, at=AFTER_EXPIRY) == (7, 0)
    for debit in (burn, authorize):
        with pytest.raises(FailedPrecondition) as refused:
            debit(engine, member_id, 8, "test-air", at=AFTER_EXPIRY)
        assert refused.value.reason == "INSUFFICIENT_POINTS"
    burned = burn(engine, member_id, 5, "test-air", at=AFTER_EXPIRY)
    assert burned.balance_points == 2
    # the burn expired the due lot first, under the member's lock, and spent only the other
    assert posted(engine, "partner:test-cinema:breakage") == 10
    with engine.connect() as connection:
        consumed_from = connection.execute(
            select(lots.c.partner_id, func.sum(lot_consumptions.c.points))
            .join(
                lots,
                (lots.c.member_id == lot_consumptions.c.member_id)
                & (lots.c.lot_id == lot_consumptions.c.lot_id),
            )
            .where(lot_consumptions.c.burn_transaction_id == burned.transaction.transaction_id)
            .group_by(lots.c.partner_id)
        ).all()
    assert [tuple(row) for row in consumed_from] == [("test-air", 5)]
    assert expire(engine, AFTER_EXPIRY) == (0, 0), "nothing left for the job"
    assert balance(engine, member_id, at=AFTER_EXPIRY) == (2, 0)
    assert_programme_sound(engine)

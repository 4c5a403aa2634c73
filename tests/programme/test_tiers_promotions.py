"""Tier multipliers, promotions and their funding, tier upgrades and the downgrade review."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial

import pytest
from sqlalchemy import Engine, func, insert, select

from coalition.ledger.accounts import partner_issuance_account_id
from coalition.ledger.system_accounts import COALITION_PROMOTIONS_ACCOUNT_ID
from coalition.programme.config import Programme
from coalition.programme.tiers import current_tier, review_tiers
from coalition.store.schema import earn_bonuses, events, member_profiles, postings, tier_changes
from coalition.store.unit_of_work import UnitOfWork
from tests.programme.conftest import LADDER, assert_programme_sound, earn, enroll, now, promotion
from tests.programme.test_expiry import posted
from tests.programme.test_holds import member_with

pytestmark = pytest.mark.integration


def bonuses(engine: Engine, transaction_id: int) -> dict[str, tuple[int, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(earn_bonuses).where(earn_bonuses.c.transaction_id == transaction_id)
        )
        return {row.rule_id: (row.points, row.funding_partner_id) for row in rows}


def tier_of(engine: Engine, member_id: str) -> str:
    with UnitOfWork(engine, read_only=True) as uow:
        return current_tier(uow, member_id, LADDER).tier.tier_id


def test_promotions_are_recorded_and_funded_by_their_funder(engine: Engine) -> None:
    programme = Programme(
        LADDER,
        (
            promotion("coalition-double", multiplier=Decimal(2)),
            promotion("air-bonus", bonus_points=7, funded_by="partner", partner_ids={"test-air"}),
            promotion("cinema-only", bonus_points=1000, partner_ids={"test-cinema"}),
        ),
    )
    member_id = enroll(engine)
    result = earn(engine, member_id, 10_000, programme=programme)  # 100 base points at test-air
    assert result.points == 100 + 100 + 7
    assert bonuses(engine, result.transaction.transaction_id) == {
        "promotion:coalition-double": (100, None),
        "promotion:air-bonus": (7, "test-air"),
    }
    assert posted(engine, partner_issuance_account_id("test-air")) == -107
    assert posted(engine, COALITION_PROMOTIONS_ACCOUNT_ID) == -100
    assert_programme_sound(engine)


def test_reversal_returns_each_funders_share(engine: Engine) -> None:
    from coalition import operations
    from coalition.operations.points import ReverseCommand

    programme = Programme(LADDER, (promotion("triple", multiplier=Decimal(3)),))
    member_id = enroll(engine)
    result = earn(engine, member_id, 10_000, programme=programme)  # 100 base + 200 coalition
    transaction_id = result.transaction.transaction_id
    for points in (1, 1, 1, 0):  # partial reversals, then the rest
        command = ReverseCommand(
            request_id=f"r-{points}-{now().timestamp()}",
            transaction_id=transaction_id,
            points=points,
        )
        operations.reverse(UnitOfWork(engine), "test-air", command, now())
    assert posted(engine, partner_issuance_account_id("test-air")) == 0
    assert posted(engine, COALITION_PROMOTIONS_ACCOUNT_ID) == 0
    assert_programme_sound(engine)


def test_member_day_counts_in_the_promotions_time_zone(engine: Engine) -> None:
    member_day = promotion("eighth", member_day=8, bonus_points=50, time_zone="Asia/Shanghai")
    member_id = enroll(engine)
    programme = Programme(LADDER, (member_day,))
    # 2026-03-07 17:00 UTC is already the 8th in Shanghai (UTC+8).
    eighth, seventh = datetime(2026, 3, 7, 17, tzinfo=UTC), datetime(2026, 3, 7, 15, tzinfo=UTC)
    on_the_day = earn(engine, member_id, 100, occurred_at=eighth, programme=programme)
    before = earn(engine, member_id, 100, occurred_at=seventh, programme=programme)
    assert (on_the_day.points, before.points) == (51, 1)


def test_birthday_month_reads_the_identity_profile(engine: Engine) -> None:
    birthday = promotion("birthday", birthday_month=True, bonus_points=30)
    member_id, other_id = enroll(engine), enroll(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(member_profiles).values(
                member_id=member_id, birthday=date(1990, 3, 20), update_time=now()
            )
        )
    in_march = datetime(2026, 3, 2, tzinfo=UTC)
    programme = Programme(LADDER, (birthday,))
    assert earn(engine, member_id, 100, occurred_at=in_march, programme=programme).points == 31
    next_month = in_march + timedelta(days=31)
    assert earn(engine, member_id, 100, occurred_at=next_month, programme=programme).points == 1
    assert earn(engine, other_id, 100, occurred_at=in_march, programme=programme).points == 1


def test_tier_upgrade_at_earn_applies_its_multiplier_and_tier_filters(engine: Engine) -> None:
    gold_only = promotion("gold-bonus", bonus_points=100, tier_ids={"gold"})
    member_id = enroll(engine)
    programme = Programme(LADDER, (gold_only,))
    first = earn(engine, member_id, 99_900, programme=programme)  # 999 points: still a member
    assert tier_of(engine, member_id) == "member"
    earn(engine, member_id, 100, programme=programme)  # 1000: silver
    assert tier_of(engine, member_id) == "silver"
    silver_earn = earn(engine, member_id, 1_001, programme=programme)  # 10 * 1.5 = 15 (down)
    assert silver_earn.points == 15
    assert bonuses(engine, silver_earn.transaction.transaction_id) == {"tier:silver": (5, None)}
    earn(engine, member_id, 400_000, programme=programme)  # 4000 + 2000 silver bonus: gold
    assert tier_of(engine, member_id) == "gold"
    gold_earn = earn(engine, member_id, 1_000, programme=programme)  # 10 + 10 (x2) + 100
    assert gold_earn.points == 120
    assert first.points == 999
    with engine.connect() as connection:
        changes = connection.execute(
            select(tier_changes.c.tier_id_before, tier_changes.c.tier_id_after).order_by(
                tier_changes.c.tier_change_id
            )
        ).all()
        tier_events = connection.execute(
            select(events.c.partner_id).where(events.c.kind == "tier_changed")
        ).scalars()
        assert sorted(tier_events) == ["test-air", "test-air", "test-coffee", "test-coffee"]
    assert [tuple(change) for change in changes] == [("member", "silver"), ("silver", "gold")]
    assert_programme_sound(engine)


def test_review_downgrades_members_whose_window_dropped(engine: Engine) -> None:
    member_ids = [enroll(engine) for _ in range(3)]
    last_year = now() - timedelta(days=400)
    tiered = Programme(LADDER, ())
    earn(engine, member_ids[0], 600_000, programme=tiered)  # gold from points this month
    # Silver a year ago, from points now outside the rolling window.
    earn(engine, member_ids[1], 150_000, occurred_at=last_year, at=last_year, programme=tiered)
    earn(engine, member_ids[2], 100_000, occurred_at=last_year, at=last_year, programme=tiered)
    earn(engine, member_ids[2], 60_000, programme=tiered)  # still 600 this year: below silver
    assert [tier_of(engine, m) for m in member_ids] == ["gold", "silver", "silver"]
    report = review_tiers(partial(UnitOfWork, engine), LADDER, now(), now(), batch_size=1)
    assert (report.members_reviewed, report.members_downgraded) == (3, 2)
    assert [tier_of(engine, m) for m in member_ids] == ["gold", "member", "member"]
    again = review_tiers(partial(UnitOfWork, engine), LADDER, now(), now())
    assert (again.members_reviewed, again.members_downgraded) == (1, 0)
    with engine.connect() as connection:
        causes = connection.execute(
            select(tier_changes.c.cause, func.count()).group_by(tier_changes.c.cause)
        ).all()
    assert dict(causes) == {"earn": 3, "review": 2}


def test_qualifying_points_drop_with_reversed_earns(engine: Engine) -> None:
    from coalition import operations
    from coalition.operations.points import ReverseCommand
    from coalition.programme.tiers import qualifying_points

    member_id = member_with(engine, 300)
    with UnitOfWork(engine, read_only=True) as uow:
        assert qualifying_points(uow, member_id, now()) == 300
    with engine.connect() as connection:
        transaction_id = connection.execute(
            select(func.max(postings.c.transaction_id))
        ).scalar_one()
    command = ReverseCommand(request_id="undo", transaction_id=transaction_id, points=100)
    operations.reverse(UnitOfWork(engine), "test-air", command, now())
    with UnitOfWork(engine, read_only=True) as uow:
        assert qualifying_points(uow, member_id, now()) == 200

"""Promotions as data: created, changed and paused while hubs run; caps, budgets and the
rules marketing needs, applied exactly, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from coalition.domain.errors import CoalitionError
from coalition.ledger.accounts import partner_issuance_account_id
from coalition.ledger.system_accounts import COALITION_PROMOTIONS_ACCOUNT_ID
from coalition.operations import promotion_admin
from coalition.operations.promotion_admin import Actor
from coalition.programme.config import load_programme
from coalition.programme.promotion_catalogue import CATALOGUE, Catalogue, seed
from coalition.store.schema import (
    earn_bonuses,
    member_profiles,
    promotion_versions,
    promotions,
)
from coalition.store.unit_of_work import UnitOfWork
from tests.programme.conftest import PLAIN, assert_programme_sound, earn, enroll, now
from tests.programme.test_expiry import posted
from tests.programme.test_rules import REPOSITORY

pytestmark = pytest.mark.integration

COALITION = Actor("admin-1", None)
AIR = Actor("test-air-key", "test-air")
COFFEE = Actor("test-coffee-key", "test-coffee")
WINDOW = {
    "starts_at": datetime(2020, 1, 1, tzinfo=UTC),
    "ends_at": datetime(2100, 1, 1, tzinfo=UTC),
}


def create(engine: Engine, actor: Actor, request_id: str | None = None, **entry: Any) -> Any:
    return promotion_admin.create_promotion(
        UnitOfWork(engine), actor, {**WINDOW, **entry}, request_id, PLAIN, now()
    )


def refused(call: Any) -> CoalitionError:
    with pytest.raises(CoalitionError) as raised:
        call()
    return raised.value


def bonus_points(engine: Engine, rule_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.coalesce(func.sum(earn_bonuses.c.points), 0)).where(
                    earn_bonuses.c.rule_id == rule_id
                )
            ).scalar_one()
        )


def set_birthday(engine: Engine, member_id: str, birthday: date) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(member_profiles).values(
                member_id=member_id, birthday=birthday, update_time=now()
            )
        )


def test_the_shipped_birthday_promotion_pays_once_a_year(engine: Engine) -> None:
    """Issue 17: three purchases in the birthday month gave 201, 201, 201 points."""
    programme = load_programme(REPOSITORY / "config")
    member_id = enroll(engine)
    set_birthday(engine, member_id, date(1990, 3, 20))
    march = datetime(2026, 3, 2, 12, tzinfo=UTC)
    with UnitOfWork(engine) as uow:
        assert "birthday-month" in seed(uow, programme, "promotions.toml", now())
        uow.commit()
    CATALOGUE.invalidate()
    points = [
        earn(
            engine, member_id, 1_000, occurred_at=march + timedelta(hours=hour), programme=programme
        ).points
        for hour in range(3)
    ]
    assert points == [210, 10, 10]  # test-air: 1 point per euro; 200 once in the year
    assert bonus_points(engine, "promotion:birthday-month") == 200
    assert_programme_sound(engine)


def test_a_promotion_created_over_the_api_applies_at_once_and_pause_stops_it(
    engine: Engine,
) -> None:
    member_id = enroll(engine)
    create(engine, COALITION, promotion_id="double", multiplier="2", funded_by="coalition")
    assert earn(engine, member_id, 10_000).points == 200
    paused = promotion_admin.set_promotion_state(
        UnitOfWork(engine), COALITION, "double", "paused", "pause-1", now()
    )
    assert (paused.promotion.state, paused.promotion.version) == ("paused", 2)
    assert earn(engine, member_id, 10_000).points == 100
    promotion_admin.set_promotion_state(
        UnitOfWork(engine), COALITION, "double", "active", None, now()
    )
    assert earn(engine, member_id, 10_000).points == 200
    with engine.connect() as connection:
        audit = connection.execute(
            select(promotion_versions.c.version, promotion_versions.c.change)
            .where(promotion_versions.c.promotion_id == "double")
            .order_by(promotion_versions.c.version)
        ).all()
    assert [tuple(row) for row in audit] == [(1, "create"), (2, "pause"), (3, "resume")]
    # The coalition's points were posted to it, never to the partner's issuance account.
    assert posted(engine, partner_issuance_account_id("test-air")) == -300
    assert posted(engine, COALITION_PROMOTIONS_ACCOUNT_ID) == -200
    assert_programme_sound(engine)


def test_another_process_sees_a_change_within_its_refresh(engine: Engine) -> None:
    """Another hub process has a catalogue of its own: it learns of a change by polling."""
    other_process = Catalogue(refresh_seconds=0.2)
    with UnitOfWork(engine) as uow:
        assert other_process.promotions(uow, PLAIN, now()) == ()
    create(engine, COALITION, promotion_id="later", bonus_points=5, funded_by="coalition")
    with UnitOfWork(engine) as uow:
        assert other_process.promotions(uow, PLAIN, now()) == ()  # not yet: cached
    threading.Event().wait(0.3)
    with UnitOfWork(engine) as uow:
        (seen,) = other_process.promotions(uow, PLAIN, now())
    assert seen.promotion_id == "later"


def test_a_budget_is_spent_exactly_under_concurrency(engine: Engine) -> None:
    create(
        engine,
        COALITION,
        promotion_id="launch",
        bonus_points=100,
        funded_by="coalition",
        budget_points=250,
    )
    members = [enroll(engine) for _ in range(8)]
    start = threading.Barrier(len(members))

    def send(member_id: str) -> int:
        start.wait()
        return earn(engine, member_id, 1_000).points - 10

    with ThreadPoolExecutor(len(members)) as pool:
        bonuses = sorted(pool.map(send, members))
    assert sum(bonuses) == 250  # two whole grants and the 50 left, never more
    assert bonuses[-3:] == [50, 100, 100] and set(bonuses[:-3]) == {0}
    with engine.connect() as connection:
        spent = connection.execute(
            select(promotions.c.spent_points).where(promotions.c.promotion_id == "launch")
        ).scalar_one()
    assert spent == bonus_points(engine, "promotion:launch") == 250
    assert_programme_sound(engine)


def test_caps_weekdays_minimum_spend_and_first_purchase(engine: Engine) -> None:
    create(
        engine,
        AIR,
        promotion_id="test-air.tuesday-big-spend",
        bonus_points=7,
        weekdays=[2],
        spend_amount_minor_min=5_000,
        spend_currency="EUR",
        grants_per_member_max=2,
        cap_period="week",
    )
    create(
        engine,
        COALITION,
        promotion_id="welcome",
        bonus_points=50,
        funded_by="coalition",
        first_purchase="coalition",
    )
    tuesday = datetime(2026, 12, 1, 10, tzinfo=UTC)
    member_id = enroll(engine)

    def earned(amount_minor: int, at: datetime) -> int:
        return earn(engine, member_id, amount_minor, occurred_at=at, at=at).points

    assert earned(5_000, tuesday) == 50 + 7 + 50  # first purchase anywhere, Tuesday, 50 EUR
    assert earned(4_999, tuesday) == 49  # under the minimum spend
    assert earned(5_000, tuesday) == 57  # second grant of the week
    assert earned(5_000, tuesday) == 50  # the cap of 2 a week is reached
    assert earned(5_000, tuesday + timedelta(days=1)) == 50  # a Wednesday
    assert earned(5_000, tuesday + timedelta(days=7)) == 57  # next week's first
    # The partner's own bonus is billed to it; the coalition's welcome is not.
    assert posted(engine, partner_issuance_account_id("test-air")) == -(50 + 49 + 50 * 4 + 7 * 3)
    assert posted(engine, COALITION_PROMOTIONS_ACCOUNT_ID) == -50
    assert_programme_sound(engine)


def test_who_may_create_and_change_what(engine: Engine) -> None:
    error = refused(
        lambda: create(
            engine, COALITION, promotion_id="test-air.x", bonus_points=1, funded_by="partner"
        )
    )
    assert (error.reason, error.field_violations[0].field) == (
        "INVALID_FIELD",
        "promotion.funded_by",
    )
    error = refused(
        lambda: create(
            engine, AIR, promotion_id="test-air.x", bonus_points=1, funded_by="coalition"
        )
    )
    assert error.reason == "INVALID_FIELD"
    error = refused(
        lambda: create(
            engine,
            AIR,
            promotion_id="test-air.x",
            bonus_points=1,
            partner_ids=["test-air", "test-coffee"],
        )
    )
    assert error.reason == "INVALID_FIELD"
    own = create(engine, AIR, "create-1", promotion_id="test-air.own", bonus_points=3)
    assert own.promotion.owner_partner_id == "test-air"
    assert create(engine, AIR, "create-1", promotion_id="test-air.own", bonus_points=3) == own
    error = refused(
        lambda: create(engine, AIR, "create-2", promotion_id="test-air.own", bonus_points=3)
    )
    assert error.reason == "PROMOTION_EXISTS"
    error = refused(
        lambda: promotion_admin.get_promotion(UnitOfWork(engine), COFFEE, "test-air.own")
    )
    assert error.reason == "PROMOTION_NOT_FOUND"
    error = refused(
        lambda: promotion_admin.set_promotion_state(
            UnitOfWork(engine), COALITION, "test-air.own", "paused", None, now()
        )
    )
    assert error.reason == "PROMOTION_NOT_OWNED"
    update = {**WINDOW, "promotion_id": "test-air.own", "bonus_points": 4}
    error = refused(
        lambda: promotion_admin.update_promotion(
            UnitOfWork(engine), AIR, update, 7, None, PLAIN, now()
        )
    )
    assert error.reason == "PROMOTION_VERSION_MISMATCH"
    updated = promotion_admin.update_promotion(
        UnitOfWork(engine), AIR, update, 1, "update-1", PLAIN, now()
    )
    assert (updated.promotion.version, updated.promotion.bonus_points) == (2, 4)
    page, token = promotion_admin.list_promotions(UnitOfWork(engine), COFFEE, 10, "")
    assert (page, token) == ([], "")
    page, _ = promotion_admin.list_promotions(UnitOfWork(engine), AIR, 10, "")
    assert [stored.promotion.promotion_id for stored in page] == ["test-air.own"]
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(promotions)).scalar_one() == 1


def test_a_referral_campaign_pays_each_side_its_bonus_in_its_window(engine: Engine) -> None:
    from coalition.identity.members import MemberReference
    from coalition.identity.members import enroll as enroll_member
    from coalition.referrals.service import get_referral_code

    create(
        engine,
        COALITION,
        promotion_id="spring-referrals",
        funded_by="coalition",
        referral_referred_points=300,
        referral_referrer_points=100,
        partner_ids=["test-air"],
    )
    error = refused(
        lambda: create(
            engine,
            COALITION,
            promotion_id="bad-referrals",
            funded_by="coalition",
            referral_referred_points=300,
            referral_referrer_points=100,
            budget_points=1_000,
        )
    )
    assert error.field_violations[0].field == "promotion.budget_points"
    referrer = enroll(engine, "test-air")
    _, code = get_referral_code(
        UnitOfWork(engine), "test-air", MemberReference(member_id=referrer), now()
    )
    referred = enroll_member(
        UnitOfWork(engine), "test-air", "enrol-bob", "bob", "Bob", now(), referral_code=code
    ).member.member_id
    first = earn(engine, referred, 5_000)  # 50 points at test-air
    assert first.explanation is not None
    assert first.explanation.balance_points_after == 350  # the answer counts the bonus
    assert [(b.rule_id, b.points) for b in first.explanation.bonuses] == [
        ("referral:referred", 300)
    ]
    assert earn(engine, referred, 5_000).explanation.bonuses == ()  # once per referral
    assert bonus_points(engine, "referral:referrer") == 100
    assert posted(engine, COALITION_PROMOTIONS_ACCOUNT_ID) == -400
    assert posted(engine, partner_issuance_account_id("test-air")) == -100
    assert_programme_sound(engine)


def money_spent(engine: Engine, promotion_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(promotions.c.spent_amount_minor).where(
                    promotions.c.promotion_id == promotion_id
                )
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("budget_amount_minor", "spent_amount_minor"),
    # test-air issues at 1.2 cents a point: 100 points cost 120; 60 cents pay for the last 50.
    # With 301 the last cent pays for no whole point and stays.
    [(300, 300), (301, 300)],
)
def test_a_money_budget_is_spent_exactly_under_concurrency(
    engine: Engine, budget_amount_minor: int, spent_amount_minor: int
) -> None:
    create(
        engine,
        AIR,
        promotion_id="test-air.launch",
        bonus_points=100,
        budget_amount_minor=budget_amount_minor,
        budget_currency="EUR",
    )
    members = [enroll(engine) for _ in range(8)]
    start = threading.Barrier(len(members))

    def send(member_id: str) -> int:
        start.wait()
        return earn(engine, member_id, 1_000).points - 10

    with ThreadPoolExecutor(len(members)) as pool:
        bonuses = sorted(pool.map(send, members))
    assert bonuses[-3:] == [50, 100, 100] and set(bonuses[:-3]) == {0}
    assert earn(engine, members[0], 1_000).points == 10  # spent: no more grants
    granted = [bonus for bonus in bonuses if bonus]
    # every grant spent its points at the issuance price, rounded up to a cent
    assert money_spent(engine, "test-air.launch") == sum(
        -(-points * 12 // 10) for points in granted
    )
    assert money_spent(engine, "test-air.launch") == spent_amount_minor <= budget_amount_minor
    assert bonus_points(engine, "promotion:test-air.launch") == 250
    with engine.connect() as connection:
        assert (
            connection.execute(
                select(promotions.c.spent_points).where(
                    promotions.c.promotion_id == "test-air.launch"
                )
            ).scalar_one()
            == 0
        )  # no points budget, no points counter
    assert_programme_sound(engine)


def test_a_money_budget_is_the_funders_and_stays_once_spent(engine: Engine) -> None:
    def fault(actor: Actor, **entry: Any) -> str:
        error = refused(lambda: create(engine, actor, **entry))
        assert len(error.field_violations) == 1
        return error.field_violations[0].field

    launch = {"promotion_id": "test-air.launch", "bonus_points": 100}
    assert fault(AIR, **launch, budget_amount_minor=300) == "promotion.budget_currency"
    assert fault(AIR, **launch, budget_currency="EUR") == "promotion.budget_currency"
    assert (
        fault(AIR, **launch, budget_amount_minor=300, budget_currency="XXX")
        == "promotion.budget_currency"
    )
    assert (
        fault(AIR, **launch, budget_amount_minor=300, budget_currency="CNY")
        == "promotion.budget_currency"
    )  # not test-air's currency
    assert (
        fault(AIR, **launch, budget_amount_minor=0, budget_currency="EUR")
        == "promotion.budget_amount_minor"
    )
    assert (
        fault(AIR, **launch, budget_amount_minor=10**15 + 1, budget_currency="EUR")
        == "promotion.budget_amount_minor"
    )
    assert (
        fault(
            COALITION,
            promotion_id="shared",
            bonus_points=1,
            funded_by="coalition",
            budget_amount_minor=300,
            budget_currency="EUR",
        )
        == "promotion.budget_amount_minor"
    )  # the coalition has no issuance price of its own
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(promotions)).scalar_one() == 0

    stored = create(engine, AIR, **launch, budget_amount_minor=300, budget_currency="EUR")
    assert stored.promotion.budget_amount_minor == 300
    earn(engine, enroll(engine), 1_000)
    assert money_spent(engine, "test-air.launch") == 120

    def update(**entry: Any) -> Any:
        return promotion_admin.update_promotion(
            UnitOfWork(engine), AIR, {**WINDOW, **launch, **entry}, 1, None, PLAIN, now()
        )

    for entry in ({}, {"budget_amount_minor": 119, "budget_currency": "EUR"}):
        error = refused(lambda entry=entry: update(**entry))
        assert [v.field for v in error.field_violations] == ["promotion.budget_amount_minor"]
    raised = update(budget_amount_minor=120, budget_currency="EUR")
    assert (raised.promotion.version, raised.spent_amount_minor) == (2, 120)
    assert earn(engine, enroll(engine), 1_000).points == 10  # the budget is spent
    assert_programme_sound(engine)


def test_a_money_budget_rounds_each_grant_up_and_cuts_the_last(engine: Engine) -> None:
    """test-cinema issues at 1.02 pence a point: 7 points cost 7.14, spent as 8; of 20 pence,
    after 8 + 8 the 4 left pay for 3 points (3.06, spent as 4), then nothing."""
    cinema = Actor("test-cinema-key", "test-cinema")
    create(
        engine,
        cinema,
        promotion_id="test-cinema.premiere",
        bonus_points=7,
        budget_amount_minor=20,
        budget_currency="GBP",
    )
    member_id = enroll(engine, "test-cinema")
    bonuses = [
        earn(engine, member_id, 1_000, partner_id="test-cinema").points - 10 for _ in range(4)
    ]
    assert bonuses == [7, 7, 3, 0]
    assert money_spent(engine, "test-cinema.premiere") == 20
    assert_programme_sound(engine)

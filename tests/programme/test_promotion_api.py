"""PromotionService over real gRPC on loopback: owners, versions, bad input, and an earn that
explains what it credited."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import Engine

from coalition.v1 import (
    common_pb2,
    points_service_pb2,
    points_service_pb2_grpc,
    promotion_service_pb2,
    promotion_service_pb2_grpc,
)
from tests.conftest import api_key
from tests.end_to_end.support import expect_failure, row_counts, timestamp
from tests.programme.conftest import enroll, new_id

pytestmark = pytest.mark.end_to_end

TIMEOUT_SECONDS = 15.0
messages = promotion_service_pb2


def promotion(promotion_id: str, **fields: object) -> messages.Promotion:
    return messages.Promotion(
        promotion_id=promotion_id,
        starts_at=timestamp(datetime(2020, 1, 1, tzinfo=UTC)),
        ends_at=timestamp(datetime(2100, 1, 1, tzinfo=UTC)),
        **fields,
    )


def test_partners_and_the_coalition_run_their_own_promotions(
    channel: grpc.Channel, engine: Engine
) -> None:
    stub = promotion_service_pb2_grpc.PromotionServiceStub(channel)
    air, coffee = api_key(engine, "test-air"), api_key(engine, "test-coffee")
    admin = api_key(engine, "marketing", "admin")

    def create(metadata: object, message: messages.Promotion, request_id: str = "") -> object:
        return stub.CreatePromotion(
            messages.CreatePromotionRequest(request_id=request_id or new_id(), promotion=message),
            metadata=metadata,
            timeout=TIMEOUT_SECONDS,
        )

    own = create(air, promotion("test-air.weekend", bonus_points=25, weekdays=[6, 7]), "c-1")
    assert own.promotion.owner_partner_id == "test-air"
    assert own.promotion.funded_by == common_pb2.PROMOTION_FUNDING_PARTNER
    assert list(own.promotion.partner_ids) == ["test-air"]
    assert (
        create(air, promotion("test-air.weekend", bonus_points=25, weekdays=[6, 7]), "c-1") == own
    )

    before = row_counts(engine)
    expect_failure(
        lambda: create(
            admin, promotion("x", bonus_points=1, funded_by=common_pb2.PROMOTION_FUNDING_PARTNER)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("promotion.funded_by",),
    )
    expect_failure(
        lambda: create(
            air,
            promotion(
                "test-air.x",
                bonus_points=1,
                weekdays=[8],
                spend_min=common_pb2.Money(amount_minor=5),
            ),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("promotion.weekdays",),
    )
    expect_failure(
        lambda: create(air, messages.Promotion(promotion_id="test-air.x", bonus_points=1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("promotion.starts_at", "promotion.ends_at"),
    )
    expect_failure(
        lambda: create(air, promotion("test-air.weekend", multiplier="2")),
        grpc.StatusCode.ALREADY_EXISTS,
        "PROMOTION_EXISTS",
    )
    expect_failure(
        lambda: stub.GetPromotion(
            messages.GetPromotionRequest(promotion_id="test-air.weekend"),
            metadata=coffee,
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.NOT_FOUND,
        "PROMOTION_NOT_FOUND",
    )
    expect_failure(
        lambda: stub.PausePromotion(
            messages.PausePromotionRequest(request_id=new_id(), promotion_id="test-air.weekend"),
            metadata=admin,
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROMOTION_NOT_OWNED",
    )
    expect_failure(
        lambda: stub.UpdatePromotion(
            messages.UpdatePromotionRequest(
                request_id=new_id(),
                promotion=promotion("test-air.weekend", bonus_points=30),
                expected_version=5,
            ),
            metadata=air,
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROMOTION_VERSION_MISMATCH",
    )
    assert row_counts(engine) == before  # refusals change nothing

    create(
        admin,
        promotion(
            "coalition-double",
            multiplier="2",
            funded_by=common_pb2.PROMOTION_FUNDING_COALITION,
            budget_points=1_000,
            grants_per_member_max=1,
            cap_period=messages.CAP_PERIOD_YEAR,
        ),
    )
    updated = stub.UpdatePromotion(
        messages.UpdatePromotionRequest(
            request_id=new_id(),
            promotion=promotion("test-air.weekend", bonus_points=30),
            expected_version=1,
        ),
        metadata=air,
        timeout=TIMEOUT_SECONDS,
    ).promotion
    assert (updated.version, updated.bonus_points) == (2, 30)
    listed = stub.ListPromotions(
        messages.ListPromotionsRequest(page_size=1), metadata=coffee, timeout=TIMEOUT_SECONDS
    )
    assert [p.promotion_id for p in listed.promotions] == ["coalition-double"]
    assert listed.next_page_token == ""
    listed = stub.ListPromotions(
        messages.ListPromotionsRequest(page_size=1), metadata=air, timeout=TIMEOUT_SECONDS
    )
    assert [p.promotion_id for p in listed.promotions] == ["coalition-double"]
    rest = stub.ListPromotions(
        messages.ListPromotionsRequest(page_size=1, page_token=listed.next_page_token),
        metadata=air,
        timeout=TIMEOUT_SECONDS,
    )
    assert [p.promotion_id for p in rest.promotions] == ["test-air.weekend"]
    assert rest.next_page_token == ""
    paused = stub.PausePromotion(
        messages.PausePromotionRequest(request_id=new_id(), promotion_id="test-air.weekend"),
        metadata=air,
        timeout=TIMEOUT_SECONDS,
    ).promotion
    assert (paused.state, paused.version) == (messages.PROMOTION_STATE_PAUSED, 3)

    # An earn explains itself: base points, each bonus by promotion, the balance after all.
    member_id = enroll(engine, "test-air")
    points = points_service_pb2_grpc.PointsServiceStub(channel)
    earned = points.Earn(
        points_service_pb2.EarnRequest(
            request_id=new_id(),
            member=common_pb2.MemberReference(member_id=member_id),
            spend=common_pb2.Money(amount_minor=10_000, currency="EUR"),
        ),
        metadata=air,
        timeout=TIMEOUT_SECONDS,
    )
    assert (earned.points, earned.base_points, earned.balance_points) == (200, 100, 200)
    assert [(b.rule_id, b.promotion_id, b.points, b.funded_by) for b in earned.bonuses] == [
        (
            "promotion:coalition-double",
            "coalition-double",
            100,
            common_pb2.PROMOTION_FUNDING_COALITION,
        )
    ]
    budget = stub.GetPromotion(
        messages.GetPromotionRequest(promotion_id="coalition-double"),
        metadata=admin,
        timeout=TIMEOUT_SECONDS,
    ).promotion
    assert (budget.spent_points, budget.budget_points) == (100, 1_000)
    performance = stub.GetPromotionPerformance(
        messages.GetPromotionPerformanceRequest(
            promotion_id="coalition-double", period=datetime.now(UTC).strftime("%Y-%m")
        ),
        metadata=coffee,  # the coalition's promotion, but only figures at test-coffee
        timeout=TIMEOUT_SECONDS,
    )
    assert list(performance.performance) == []
    (at_air,) = stub.GetPromotionPerformance(
        messages.GetPromotionPerformanceRequest(
            promotion_id="coalition-double", period=datetime.now(UTC).strftime("%Y-%m")
        ),
        metadata=air,
        timeout=TIMEOUT_SECONDS,
    ).performance
    # 100 points at test-air's issuance price of 1.2 cents; one visit of 100 euros, no other.
    assert (at_air.partner_id, at_air.members_reached, at_air.points_granted) == (
        "test-air",
        1,
        100,
    )
    assert (at_air.cost.amount_minor, at_air.cost.currency) == (120, "EUR")
    assert at_air.participant_spend.amount_minor == 10_000
    assert not at_air.HasField("incremental_spend") and at_air.roi == ""
    assert not at_air.HasField("budget_money_spent")  # a budget in points only
    assert not at_air.HasField("budget_money_left")
    expect_failure(
        lambda: stub.GetPromotionPerformance(
            messages.GetPromotionPerformanceRequest(
                promotion_id="test-air.weekend", period="2026-13"
            ),
            metadata=air,
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("period",),
    )


def test_a_budget_in_money_over_grpc(channel: grpc.Channel, engine: Engine) -> None:
    stub = promotion_service_pb2_grpc.PromotionServiceStub(channel)
    air = api_key(engine, "test-air")

    def create(message: messages.Promotion) -> messages.CreatePromotionResponse:
        return stub.CreatePromotion(
            messages.CreatePromotionRequest(request_id=new_id(), promotion=message),
            metadata=air,
            timeout=TIMEOUT_SECONDS,
        )

    before = row_counts(engine)
    for money, field in (
        (common_pb2.Money(amount_minor=300, currency="CNY"), "promotion.budget_money.currency"),
        (common_pb2.Money(amount_minor=300), "promotion.budget_money.currency"),
        (common_pb2.Money(currency="EUR"), "promotion.budget_money.amount_minor"),
        (common_pb2.Money(amount_minor=-1, currency="EUR"), "promotion.budget_money.amount_minor"),
    ):
        expect_failure(
            lambda money=money: create(
                promotion("test-air.launch", bonus_points=100, budget_money=money)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            (field,),
        )
    assert row_counts(engine) == before

    created = create(
        promotion(
            "test-air.launch",
            bonus_points=100,
            budget_money=common_pb2.Money(amount_minor=300, currency="EUR"),
        )
    ).promotion
    assert (created.budget_money.amount_minor, created.budget_money.currency) == (300, "EUR")
    points = points_service_pb2_grpc.PointsServiceStub(channel)
    member_id = enroll(engine)
    earned = [
        points.Earn(
            points_service_pb2.EarnRequest(
                request_id=new_id(),
                member=common_pb2.MemberReference(member_id=member_id),
                spend=common_pb2.Money(amount_minor=1_000, currency="EUR"),
            ),
            metadata=air,
            timeout=TIMEOUT_SECONDS,
        ).points
        for _ in range(4)
    ]
    assert earned == [110, 110, 60, 10]  # 120 + 120 + 60 cents at 1.2 a point, then spent
    got = stub.GetPromotion(
        messages.GetPromotionRequest(promotion_id="test-air.launch"),
        metadata=air,
        timeout=TIMEOUT_SECONDS,
    ).promotion
    assert (got.spent_amount_minor, got.spent_points, got.budget_points) == (300, 0, 0)
    (at_air,) = stub.GetPromotionPerformance(
        messages.GetPromotionPerformanceRequest(
            promotion_id="test-air.launch", period=datetime.now(UTC).strftime("%Y-%m")
        ),
        metadata=air,
        timeout=TIMEOUT_SECONDS,
    ).performance
    # The money budget in money: 300 cents spent, nothing left.
    assert at_air.points_granted == 250
    assert (at_air.budget_money_spent.amount_minor, at_air.budget_money_spent.currency) == (
        300,
        "EUR",
    )
    assert (at_air.budget_money_left.amount_minor, at_air.budget_money_left.currency) == (0, "EUR")

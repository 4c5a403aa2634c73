"""ListPromotions at its bounds, over real gRPC: promotions as large as the API accepts, asked
for at the largest page size, still come in messages within the 4 MiB limit (the page is cut
by bytes, AIP-158), and following the tokens lists every one once, in order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import Engine

from coalition.api import promotions as promotion_api
from coalition.api.bounds import MESSAGE_BYTES_MAX, PAGE_TOKEN_AND_TAGS_BYTES_MAX
from coalition.api.requests import PAGE_SIZE_MAX
from coalition.domain.tiers import Tier, TierLadder
from coalition.programme.config import ID_LENGTH_MAX, PROMOTIONS_MAX, TIERS_MAX, Programme
from coalition.v1 import common_pb2, promotion_service_pb2, promotion_service_pb2_grpc
from tests.conftest import api_key
from tests.end_to_end.support import timestamp

pytestmark = pytest.mark.end_to_end

messages = promotion_service_pb2
TIMEOUT_SECONDS = 30.0
# Each promotion names the most partners, with the longest ids, in 4-byte UTF-8 characters.
WIDEST_CHARACTER = "\U0001f600"
LONGEST_TIME_ZONE = "America/Argentina/ComodRivadavia"
# Enough of the largest promotions that their page must be cut.
PROMOTIONS_COUNT = promotion_api.PAGE_BYTES_MAX // promotion_api.PROMOTION_BYTES_MAX + 3


def tier_id(index: int) -> str:
    return f"{index:02}".ljust(ID_LENGTH_MAX, "t")


@pytest.fixture
def programme() -> Programme:
    """The hub serves a ladder of the most tiers, with the longest ids, so that a promotion
    may name them all."""
    tiers = tuple(Tier(tier_id(i), f"Tier {i}", 1_000 * i, Decimal(1)) for i in range(TIERS_MAX))
    return Programme(TierLadder(tiers), ())


def largest_promotion(index: int, ladder: TierLadder) -> messages.Promotion:
    return messages.Promotion(
        promotion_id=f"{index:04}".ljust(ID_LENGTH_MAX, "p"),
        funded_by=common_pb2.PROMOTION_FUNDING_COALITION,
        starts_at=timestamp(datetime(2020, 1, 1, tzinfo=UTC)),
        ends_at=timestamp(datetime(2100, 1, 1, tzinfo=UTC)),
        time_zone=LONGEST_TIME_ZONE,
        partner_ids=[
            f"{n:03}".ljust(ID_LENGTH_MAX, WIDEST_CHARACTER) for n in range(PROMOTIONS_MAX)
        ],
        tier_ids=[tier.tier_id for tier in ladder.tiers],
        member_day=31,
        weekdays=list(range(1, 8)),
        birthday_month=True,
        multiplier="99." + "9" * 29,  # decimal text of the most characters accepted (32)
        spend_min=common_pb2.Money(amount_minor=10**15, currency="CNY"),
        first_purchase=messages.FIRST_PURCHASE_IN_COALITION,
        grants_per_member_max=1_000_000,
        cap_period=messages.CAP_PERIOD_YEAR,
        budget_points=10**15,
    )


def test_a_page_of_the_largest_promotions_at_the_largest_size_fits_a_message(
    channel: grpc.Channel, engine: Engine, programme: Programme
) -> None:
    stub = promotion_service_pb2_grpc.PromotionServiceStub(channel)
    admin = api_key(engine, "marketing", "admin")
    created = [
        stub.CreatePromotion(
            messages.CreatePromotionRequest(
                request_id=f"create-{index}",
                promotion=largest_promotion(index, programme.ladder),
            ),
            metadata=admin,
            timeout=TIMEOUT_SECONDS,
        ).promotion
        for index in range(PROMOTIONS_COUNT)
    ]
    largest_bytes = max(promotion.ByteSize() for promotion in created)
    assert largest_bytes <= promotion_api.PROMOTION_BYTES_MAX, "the bound covers the largest"
    assert largest_bytes > promotion_api.PROMOTION_BYTES_MAX * 0.9, "and is not far above it"
    # Without the byte bound, a page at the largest size would not fit a message.
    assert PAGE_SIZE_MAX * largest_bytes > MESSAGE_BYTES_MAX

    listed: list[str] = []
    pages: list[messages.ListPromotionsResponse] = []
    token = ""
    while True:
        page = stub.ListPromotions(
            messages.ListPromotionsRequest(page_size=PAGE_SIZE_MAX, page_token=token),
            metadata=admin,
            timeout=TIMEOUT_SECONDS,
        )
        pages.append(page)
        listed += [promotion.promotion_id for promotion in page.promotions]
        token = page.next_page_token
        if not token:
            break
    assert listed == sorted(promotion.promotion_id for promotion in created)
    assert len(pages) > 1, "the largest promotions do not fit one page"
    for page in pages:
        assert page.ByteSize() <= promotion_api.PAGE_BYTES_MAX + PAGE_TOKEN_AND_TAGS_BYTES_MAX
        assert page.ByteSize() <= MESSAGE_BYTES_MAX
    for page in pages[:-1]:  # a cut page is full: one more promotion would pass the bound
        assert page.ByteSize() + largest_bytes > promotion_api.PAGE_BYTES_MAX

"""Enrol, link, earn, burn, reverse, quote and balances over the real gRPC channel."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from coalition.partners.sync import sync_partners
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, member_service_pb2, partner_service_pb2, points_service_pb2
from tests.conftest import COFFEE, rate
from tests.end_to_end.support import PartnerClient, by_id, expect_failure, row_counts, timestamp

pytestmark = pytest.mark.end_to_end

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EARN = common_pb2.TRANSACTION_KIND_EARN
BURN = common_pb2.TRANSACTION_KIND_BURN
REVERSE = common_pb2.TRANSACTION_KIND_REVERSE


def rate_version_ids(client: PartnerClient) -> list[str]:
    request = partner_service_pb2.ListRateVersionsRequest(partner_id=client.partner_id)
    versions = client.call("ListRateVersions", request).rate_versions
    return [version.rate_version_id for version in versions]


def link(
    client: PartnerClient, member_id: str, customer_id: str, request_id: str
) -> member_service_pb2.LinkPartnerAccountResponse:
    request = member_service_pb2.LinkPartnerAccountRequest(
        request_id=request_id, member_id=member_id, partner_customer_id=customer_id
    )
    return client.call("LinkPartnerAccount", request)


def quote(
    client: PartnerClient, member_id: str | None = None, **operation: Any
) -> points_service_pb2.QuoteResponse:
    request = points_service_pb2.QuoteRequest(**operation)
    if member_id is not None:
        request.member.CopyFrom(by_id(member_id))
    return client.call("Quote", request)


def at(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def test_enrolling_a_customer_twice_returns_the_same_member(
    engine: Engine, coffee: PartnerClient
) -> None:
    first = coffee.enroll("C-1", request_id="enrol-1")
    assert (first.created, first.replayed) == (True, False)
    assert first.member.member_id.startswith("mem_")
    again = coffee.enroll("C-1", request_id="enrol-2")
    assert (again.member, again.created, again.replayed) == (first.member, False, False)
    replay = coffee.enroll("C-1", request_id="enrol-2")
    assert (replay.member, replay.created, replay.replayed) == (first.member, False, True)
    assert row_counts(engine)["members"] == 1


def test_link_then_resolve_and_earn_by_customer_id(
    coffee: PartnerClient, air: PartnerClient
) -> None:
    member_id = coffee.enroll("C-1").member.member_id
    linked = link(air, member_id, "A-9", "link-1")
    assert (linked.member_id, linked.partner_customer_id, linked.replayed) == (
        member_id,
        "A-9",
        False,
    )
    assert link(air, member_id, "A-9", "link-1").replayed
    resolved = air.call(
        "ResolveMember", member_service_pb2.ResolveMemberRequest(partner_customer_id="A-9")
    )
    assert resolved.member_id == member_id

    by_customer = points_service_pb2.EarnRequest(request_id="earn-1", spend=air.money(1_000))
    by_customer.member.partner_customer_id = "A-9"
    assert air.call("Earn", by_customer).transaction.member_id == member_id
    assert coffee.balance(member_id) == 10  # 10 EUR at 1 point per euro, on the shared member

    other_member_id = coffee.new_member()
    failure = expect_failure(
        lambda: link(air, other_member_id, "A-9", "link-2"),
        grpc.StatusCode.ALREADY_EXISTS,
        "PARTNER_CUSTOMER_ALREADY_LINKED",
    )
    assert failure.metadata == {"partner_customer_id": "A-9"}
    expect_failure(
        lambda: link(air, "mem_unknown", "A-10", "link-3"),
        grpc.StatusCode.NOT_FOUND,
        "MEMBER_NOT_FOUND",
    )


def test_earn_by_spend_rounds_points_down(coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    earned = coffee.earn(member_id, 1_999, request_id="receipt-1")  # 19.99 CNY at 0.2: 3.998
    assert (earned.points, earned.balance_points, earned.replayed) == (3, 3, False)
    transaction = earned.transaction
    assert transaction.kind == EARN
    assert (transaction.partner_id, transaction.member_id) == ("test-coffee", member_id)
    assert (transaction.points_delta, transaction.balance_points_after) == (3, 3)
    assert transaction.request_id == "receipt-1"
    assert transaction.amount == common_pb2.Money(amount_minor=1_999, currency="CNY")
    assert transaction.rate_version_id == rate_version_ids(coffee)[-1]
    assert coffee.balance(member_id) == 3


def test_earn_by_native_points_converts_and_rounds_down(air: PartnerClient) -> None:
    member_id = air.new_member()
    earned = air.earn(member_id, native_points=1_001)  # 1001 miles at 0.5: 500.5
    assert (earned.points, earned.balance_points) == (500, 500)
    assert earned.transaction.native_points == 1_001
    assert not earned.transaction.HasField("amount")


@pytest.mark.parametrize(
    ("occurred_at", "version_index", "points"),
    [
        (datetime(2025, 1, 1), 0, 1),  # the first version's first instant: 0.1 point per CNY
        (datetime(2025, 12, 31, 23, 59, 59, 999_999), 0, 1),
        (datetime(2026, 1, 1), 1, 3),  # the second version: 0.2 point per CNY
        (datetime(2026, 6, 30, 12), 1, 3),
    ],
    ids=["first-version-start", "first-version-end", "second-version-start", "second-version"],
)
def test_rate_version_is_chosen_by_occurred_at(
    coffee: PartnerClient, occurred_at: datetime, version_index: int, points: int
) -> None:
    member_id = coffee.new_member()
    earned = coffee.earn(member_id, 1_999, occurred_at=at(occurred_at))
    assert earned.points == points
    assert earned.transaction.rate_version_id == rate_version_ids(coffee)[version_index]
    assert earned.transaction.occurred_at == timestamp(at(occurred_at))


def test_burn_by_points_and_by_value_rounding_up(coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    assert coffee.earn(member_id, 2_500_000).balance_points == 5_000  # 25000 CNY at 0.2

    burned = coffee.burn(member_id, 30)
    assert (burned.points, burned.balance_points) == (30, 4_970)
    assert (burned.transaction.kind, burned.transaction.points_delta) == (BURN, -30)

    burned = coffee.burn(member_id, value_minor=1_001)  # 10.01 CNY at 5 fen a point: 200.2
    assert (burned.points, burned.balance_points) == (201, 4_769)
    assert burned.transaction.amount == common_pb2.Money(amount_minor=1_001, currency="CNY")
    assert coffee.burn(member_id, value_minor=1_000).points == 200
    assert coffee.balance(member_id) == 4_569


def test_insufficient_points_writes_nothing(engine: Engine, coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    coffee.earn(member_id, 1_999)  # 3 points
    listed = coffee.transactions()
    counts = row_counts(engine)

    failure = expect_failure(
        lambda: coffee.burn(member_id, 4), FAILED_PRECONDITION, "INSUFFICIENT_POINTS"
    )
    assert failure.metadata == {
        "member_id": member_id,
        "balance_points": "3",
        "points_requested": "4",
    }
    expect_failure(  # 16 fen needs 3.2, so 4 points
        lambda: coffee.burn(member_id, value_minor=16), FAILED_PRECONDITION, "INSUFFICIENT_POINTS"
    )
    assert coffee.balance(member_id) == 3
    assert coffee.transactions() == listed
    assert row_counts(engine) == counts
    assert coffee.burn(member_id, 3).balance_points == 0


def test_reverse_partially_then_fully(engine: Engine, coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    earn_id = coffee.earn(member_id, 50_000).transaction.transaction_id  # 100 points

    reversed_part = coffee.reverse(earn_id, 30)
    assert (reversed_part.points, reversed_part.balance_points) == (30, 70)
    reversal = reversed_part.transaction
    assert (reversal.kind, reversal.parent_transaction_id) == (REVERSE, earn_id)
    assert (reversal.points_delta, reversal.reason) == (-30, "refund")

    counts = row_counts(engine)
    failure = expect_failure(
        lambda: coffee.reverse(earn_id, 71), FAILED_PRECONDITION, "REVERSAL_EXCEEDS_REMAINING"
    )
    assert failure.metadata == {
        "transaction_id": earn_id,
        "points_left": "70",
        "points_requested": "71",
    }
    assert row_counts(engine) == counts

    reversed_rest = coffee.reverse(earn_id)  # 0: everything not reversed yet
    assert (reversed_rest.points, reversed_rest.balance_points) == (70, 0)
    assert reversed_rest.transaction.parent_transaction_id == earn_id

    counts = row_counts(engine)
    for points in (0, 1):
        expect_failure(
            partial(coffee.reverse, earn_id, points),
            FAILED_PRECONDITION,
            "ALREADY_FULLY_REVERSED",
        )
    expect_failure(
        lambda: coffee.reverse(reversal.transaction_id),
        FAILED_PRECONDITION,
        "TRANSACTION_NOT_REVERSIBLE",
    )
    assert row_counts(engine) == counts
    (parent,) = [t for t in coffee.transactions() if t.transaction_id == earn_id]
    assert parent.points_reversed == 100


def test_reversing_a_burn_gives_the_points_back(coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    coffee.earn(member_id, 50_000)  # 100 points
    burn_id = coffee.burn(member_id, 40).transaction.transaction_id
    reversed_part = coffee.reverse(burn_id, 15)
    assert (reversed_part.transaction.points_delta, reversed_part.balance_points) == (15, 75)
    assert reversed_part.transaction.parent_transaction_id == burn_id
    assert coffee.reverse(burn_id).balance_points == 100
    assert coffee.burn(member_id, 100).balance_points == 0  # the restored lots are spendable


def test_reversing_an_earn_whose_points_were_spent(engine: Engine, coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    earn_id = coffee.earn(member_id, 50_000).transaction.transaction_id  # 100 points
    coffee.burn(member_id, 60)
    counts = row_counts(engine)

    failure = expect_failure(
        lambda: coffee.reverse(earn_id), FAILED_PRECONDITION, "POINTS_ALREADY_SPENT"
    )
    assert failure.metadata == {"transaction_id": earn_id, "points_requested": "100"}
    assert coffee.balance(member_id) == 40
    assert row_counts(engine) == counts

    assert coffee.reverse(earn_id, 40).balance_points == 0  # what is left unspent may go
    expect_failure(lambda: coffee.reverse(earn_id, 1), FAILED_PRECONDITION, "POINTS_ALREADY_SPENT")


def test_quote_previews_a_rate_version_scheduled_for_the_future(
    engine: Engine, coffee: PartnerClient
) -> None:
    """A partner shows customers tomorrow's rate before it is in force; earns still refuse
    an occurred_at in the future."""
    now = datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(microsecond=0)
    scheduled = rate(tomorrow, earn="1", burn="5")
    manifest = replace(COFFEE, rate_versions=(*COFFEE.rate_versions, scheduled))
    sync_partners(UnitOfWork(engine), [manifest], now)
    counts = row_counts(engine)

    today_quote = quote(coffee, earn_spend=coffee.money(1_000))
    preview = quote(coffee, earn_spend=coffee.money(1_000), occurred_at=timestamp(tomorrow))
    assert (today_quote.points, preview.points) == (2, 10)
    assert preview.rate_version_id == rate_version_ids(coffee)[-1] != today_quote.rate_version_id
    assert row_counts(engine) == counts
    member_id = coffee.new_member()
    request = points_service_pb2.EarnRequest(
        request_id="earn-tomorrow",
        member=by_id(member_id),
        spend=coffee.money(1_000),
        occurred_at=timestamp(tomorrow),
    )
    expect_failure(
        lambda: coffee.call("Earn", request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "OCCURRED_AT_IN_FUTURE",
        ("occurred_at",),
    )


def test_quote_writes_nothing_and_matches_what_earn_gives(
    engine: Engine, coffee: PartnerClient, air: PartnerClient
) -> None:
    member_id = coffee.new_member()
    counts = row_counts(engine)
    spend = coffee.money(1_999)

    quoted = quote(coffee, member_id, earn_spend=spend)
    assert (quoted.points, quoted.balance_points) == (3, 0)
    assert quote(air, earn_native_points=1_001).points == 500
    in_2025 = timestamp(datetime(2025, 7, 1, tzinfo=UTC))
    quoted_2025 = quote(coffee, earn_spend=spend, occurred_at=in_2025)
    assert (quoted_2025.points, quoted_2025.rate_version_id) == (1, rate_version_ids(coffee)[0])
    assert row_counts(engine) == counts

    earned = coffee.earn(member_id, 1_999)
    assert (earned.points, earned.transaction.rate_version_id) == (
        quoted.points,
        quoted.rate_version_id,
    )

    counts = row_counts(engine)
    burn_value = quote(coffee, member_id, burn_value=coffee.money(1_001))
    assert (burn_value.points, burn_value.sufficient_balance, burn_value.balance_points) == (
        201,
        False,
        3,
    )
    burn_points = quote(coffee, member_id, burn_points=3)
    assert (burn_points.value, burn_points.sufficient_balance) == (coffee.money(15), True)
    assert row_counts(engine) == counts


def test_balance_as_of_a_past_instant_comes_from_the_journal(coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    responses: list[Any] = [
        coffee.earn(member_id, 50_000),  # +100
        coffee.earn(member_id, 25_000),  # +50
        coffee.burn(member_id, 30),
    ]
    create_times = [r.transaction.create_time.ToDatetime(tzinfo=UTC) for r in responses]

    assert coffee.balance(member_id, create_times[0] - timedelta(microseconds=1)) == 0
    assert [coffee.balance(member_id, moment) for moment in create_times] == [100, 150, 120]
    assert coffee.balance(member_id) == 120

    request = points_service_pb2.GetBalanceRequest(
        member=by_id(member_id), as_of=timestamp(create_times[1])
    )
    answer = coffee.call("GetBalance", request)
    assert (answer.member_id, answer.balance_points, answer.as_of) == (
        member_id,
        150,
        timestamp(create_times[1]),
    )
    expect_failure(
        lambda: coffee.balance(member_id, datetime.now(UTC) + timedelta(hours=1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "AS_OF_IN_FUTURE",
        ("as_of",),
    )

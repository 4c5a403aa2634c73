"""A consent scope covers its data in every RPC that returns it, not only in the profile
(docs/identity.md, "Privacy between partners"), over real gRPC on both databases."""

from __future__ import annotations

import grpc
import pytest

from coalition.programme.config import Programme
from coalition.v1 import (
    common_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    points_service_pb2,
)
from coalition.v1 import member_service_pb2 as messages
from tests.identity.support import CALL_TIMEOUT_SECONDS, Caller, expect_failure, new_id
from tests.programme.conftest import LADDER

pytestmark = pytest.mark.end_to_end

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
REVOKED = messages.WITHHOLDING_REASON_REVOKED


def by_id(member_id: str) -> common_pb2.MemberReference:
    return common_pb2.MemberReference(member_id=member_id)


def events_until(
    channel: grpc.Channel, caller: Caller, transaction_id: str
) -> list[event_service_pb2.Event]:
    """The caller's stream from the start, up to its own transaction `transaction_id`."""
    stream = event_service_pb2_grpc.EventServiceStub(channel).Subscribe(
        event_service_pb2.SubscribeRequest(),
        metadata=caller.metadata,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    seen: list[event_service_pb2.Event] = []
    try:
        for response in stream:
            seen.append(response.event)
            if response.event.transaction_id == transaction_id:
                return seen
    finally:
        stream.cancel()
    raise AssertionError(f"the stream ended before {transaction_id}: {seen}")


def refused_for_scope(call: object, member_id: str) -> None:
    failure = expect_failure(call, FAILED_PRECONDITION, "SCOPE_NOT_GRANTED")  # type: ignore[arg-type]
    assert failure.metadata == {
        "member_id": member_id,
        "partner_id": "test-coffee",
        "scope": "profile.balance",
    }


def test_a_revoked_balance_is_withheld_by_every_rpc_that_returns_it(
    coffee: Caller, channel: grpc.Channel
) -> None:
    member_id = coffee.enroll("C-1").member.member_id
    earned = coffee.earn(member_id, 50_000, "CNY")  # 100 points
    assert (earned.balance_points, earned.transaction.balance_withheld) == (100, False)
    coffee.consent(member_id, balance=False)

    later = coffee.earn(member_id, 50_000, "CNY")
    assert (later.balance_points, later.transaction.balance_points_after) == (0, 0)
    assert later.transaction.balance_withheld
    refused_for_scope(lambda: coffee.balance(member_id), member_id)
    refused_for_scope(lambda: coffee.burn(member_id, 1), member_id)
    for request in (
        points_service_pb2.AuthorizeBurnRequest(
            request_id=new_id(), member=by_id(member_id), points=1
        ),
        points_service_pb2.QuoteRequest(burn_points=1, member=by_id(member_id)),
    ):
        method = type(request).__name__.removesuffix("Request")
        refused_for_scope(lambda: coffee.call(method, request), member_id)  # noqa: B023
    reversed_ = coffee.call(
        "Reverse",
        points_service_pb2.ReverseRequest(
            request_id=new_id(), transaction_id=later.transaction.transaction_id, points=1
        ),
    )
    assert (reversed_.balance_points, reversed_.transaction.balance_withheld) == (0, True)
    listed = coffee.call(
        "ListTransactions", points_service_pb2.ListTransactionsRequest(member=by_id(member_id))
    ).transactions
    assert [(t.balance_withheld, t.balance_points_after) for t in listed] == [(True, 0)] * 3
    streamed = events_until(channel, coffee, reversed_.transaction.transaction_id)
    assert [(e.balance_withheld, e.balance_points_after) for e in streamed] == [(True, 0)] * 3
    profile = coffee.profile(member_id)
    assert profile.balance_points == 0
    assert {w.scope: w.reason for w in profile.withheld_scopes}["profile.balance"] == REVOKED

    coffee.consent(member_id, balance=True)  # granted again: shown again, everywhere
    assert coffee.balance(member_id).balance_points == 199
    streamed = events_until(channel, coffee, reversed_.transaction.transaction_id)
    assert [e.balance_points_after for e in streamed] == [100, 200, 199]


# Tiers that 1,000 points reach (silver): an earn changes the member's tier. The hub fixture
# serves the `programme` fixture (tests/conftest.py), here this one.
@pytest.mark.parametrize("programme", [Programme(LADDER, ())], ids=["tiers"])
def test_tier_changes_reach_only_partners_the_member_shares_its_tier_with(
    coffee: Caller, air: Caller, channel: grpc.Channel
) -> None:
    member_id = coffee.enroll("C-1").member.member_id
    # Air is not linked: it may earn for the member (one identity), and learns nothing of it.
    promoted = air.earn(member_id, 100_000, "EUR")  # 1,000 points: silver
    assert promoted.transaction.balance_withheld
    last_of_air = air.earn(member_id, 100, "EUR").transaction.transaction_id
    last_of_coffee = coffee.earn(member_id, 500, "CNY").transaction.transaction_id

    def tier_events(caller: Caller, last: str) -> list[tuple[str, str]]:
        return [
            (e.tier_id_before, e.tier_id_after)
            for e in events_until(channel, caller, last)
            if e.kind == event_service_pb2.EVENT_KIND_TIER_CHANGED
        ]

    assert tier_events(air, last_of_air) == []
    assert tier_events(coffee, last_of_coffee) == []  # linked, but profile.tier not granted
    coffee.consent(member_id, tier=True)
    assert tier_events(coffee, last_of_coffee) == [("member", "silver")]
    assert tier_events(air, last_of_air) == []

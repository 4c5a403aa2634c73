"""Request ids (AIP-155): replays answer the first result, reuse with another payload fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from coalition.v1 import member_service_pb2
from tests.citus import REQUEST_IDS_PER_MEMBER, skip_on_citus
from tests.end_to_end.support import PartnerClient, expect_failure, new_id, row_counts
from tests.integration.ledger_checks import remembered_refusals

pytestmark = pytest.mark.end_to_end

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS


@pytest.fixture
def member_id(coffee: PartnerClient) -> str:
    """A coffee member holding 100 points."""
    member_id = coffee.new_member()
    coffee.earn(member_id, 50_000)
    return member_id


def earn_with(amount_minor: int) -> Callable[[PartnerClient, str, str], Any]:
    return lambda client, member_id, request_id: client.earn(
        member_id, amount_minor, request_id=request_id
    )


def burn_with(points: int) -> Callable[[PartnerClient, str, str], Any]:
    return lambda client, member_id, request_id: client.burn(
        member_id, points, request_id=request_id
    )


def reverse_with(points: int) -> Callable[[PartnerClient, str, str], Any]:
    """Reverses `points` of the member's first transaction (its 100-point earn)."""

    def reverse(client: PartnerClient, member_id: str, request_id: str) -> Any:
        first_earn = client.transactions(member_id)[-1]
        return client.reverse(first_earn.transaction_id, points, request_id=request_id)

    return reverse


def enroll_with(customer_id: str) -> Callable[[PartnerClient, str, str], Any]:
    return lambda client, _member_id, request_id: client.enroll(customer_id, request_id)


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(earn_with(1_999), id="earn"),
        pytest.param(burn_with(30), id="burn"),
        pytest.param(reverse_with(20), id="reverse"),
        pytest.param(enroll_with("C-7"), id="enroll"),
    ],
)
def test_exact_replay_answers_the_first_result_and_writes_nothing(
    engine: Engine, coffee: PartnerClient, member_id: str, operation: Callable[..., Any]
) -> None:
    first = operation(coffee, member_id, "request-1")
    assert not first.replayed
    counts = row_counts(engine)
    listed = coffee.transactions()
    balance_points = coffee.balance(member_id)

    replay = operation(coffee, member_id, "request-1")
    assert replay.replayed
    replay.replayed = False
    assert replay == first
    assert row_counts(engine) == counts
    assert coffee.transactions() == listed
    assert coffee.balance(member_id) == balance_points


@pytest.mark.parametrize(
    ("first", "second", "differing_fields"),
    [
        (earn_with(1_999), earn_with(2_999), "spend.amount_minor"),
        (burn_with(30), burn_with(31), "points"),
        (reverse_with(20), reverse_with(21), "points"),
        (enroll_with("C-7"), enroll_with("C-8"), "partner_customer_id"),
        (earn_with(500), burn_with(1), "operation,points,spend.amount_minor,spend.currency"),
    ],
    ids=["earn-amount", "burn-points", "reverse-points", "enroll-customer", "earn-then-burn"],
)
def test_request_id_reused_with_another_payload_is_refused(
    engine: Engine,
    coffee: PartnerClient,
    member_id: str,
    first: Callable[..., Any],
    second: Callable[..., Any],
    differing_fields: str,
) -> None:
    first(coffee, member_id, "request-1")
    counts = row_counts(engine)
    failure = expect_failure(
        lambda: second(coffee, member_id, "request-1"), ALREADY_EXISTS, "REQUEST_ID_REUSED"
    )
    assert failure.metadata == {"request_id": "request-1", "differing_fields": differing_fields}
    assert row_counts(engine) == counts


def test_earn_for_another_member_with_the_same_request_id_is_refused(
    engine: Engine, coffee: PartnerClient, member_id: str
) -> None:
    skip_on_citus(engine, REQUEST_IDS_PER_MEMBER)
    coffee.earn(member_id, 1_999, request_id="request-1")
    other_member_id = coffee.new_member()
    failure = expect_failure(
        lambda: coffee.earn(other_member_id, 1_999, request_id="request-1"),
        ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert failure.metadata["differing_fields"] == "member.member_id"
    assert coffee.balance(other_member_id) == 0


def test_request_ids_of_different_partners_are_independent(
    coffee: PartnerClient, air: PartnerClient, member_id: str
) -> None:
    by_coffee = coffee.earn(member_id, 1_999, request_id="order-1")
    by_air = air.earn(member_id, 1_999, request_id="order-1")  # 19.99 EUR: 19 points
    assert (by_coffee.replayed, by_air.replayed) == (False, False)
    assert by_coffee.transaction.transaction_id != by_air.transaction.transaction_id
    assert (by_coffee.points, by_air.points) == (3, 19)
    assert coffee.balance(member_id) == 100 + 3 + 19

    assert coffee.earn(member_id, 1_999, request_id="order-1").transaction == by_coffee.transaction
    assert air.earn(member_id, 1_999, request_id="order-1").transaction == by_air.transaction
    # Air's "order-1" with coffee's payload is air's own reuse, not a replay of coffee's (air
    # links the member first: a burn needs the member's balance, which only a link shares).
    air.call(
        "LinkPartnerAccount",
        member_service_pb2.LinkPartnerAccountRequest(
            request_id=new_id(), member_id=member_id, partner_customer_id=f"air-{new_id()}"
        ),
    )
    expect_failure(
        lambda: air.burn(member_id, 1, request_id="order-1"), ALREADY_EXISTS, "REQUEST_ID_REUSED"
    )


def test_a_refused_request_keeps_its_refusal_as_its_final_answer(
    engine: Engine, coffee: PartnerClient, member_id: str
) -> None:
    counts = row_counts(engine)
    first = expect_failure(
        lambda: coffee.burn(member_id, 1_000, request_id="request-1"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_POINTS",
    )
    assert row_counts(engine) == counts
    assert remembered_refusals(engine) == {("test-coffee", "request-1"): "INSUFFICIENT_POINTS"}
    coffee.earn(member_id, 500_000)  # now the burn could be paid: the answer stays
    again = expect_failure(
        lambda: coffee.burn(member_id, 1_000, request_id="request-1"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_POINTS",
    )
    assert again == first
    expect_failure(
        lambda: coffee.burn(member_id, 40, request_id="request-1"),
        ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert coffee.burn(member_id, 1_000, request_id="request-2").replayed is False


def test_a_request_the_servicer_refuses_as_malformed_claims_nothing(
    engine: Engine, coffee: PartnerClient, member_id: str
) -> None:
    expect_failure(
        lambda: coffee.burn(member_id, -5, request_id="request-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("points",),
    )
    assert remembered_refusals(engine) == {}
    retried = coffee.burn(member_id, 40, request_id="request-1")
    assert (retried.replayed, retried.balance_points) == (False, 60)

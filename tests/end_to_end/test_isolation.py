"""A partner acts and reads only as itself: other partners' data looks absent."""

from __future__ import annotations

from functools import partial

import grpc
import pytest
from sqlalchemy import Engine

from coalition.v1 import member_service_pb2, partner_service_pb2, points_service_pb2
from tests.conftest import api_key
from tests.end_to_end.support import Client, PartnerClient, expect_failure, row_counts

pytestmark = pytest.mark.end_to_end

NOT_FOUND = grpc.StatusCode.NOT_FOUND


def resolve(client: PartnerClient, customer_id: str) -> str:
    request = member_service_pb2.ResolveMemberRequest(partner_customer_id=customer_id)
    return str(client.call("ResolveMember", request).member_id)


def test_partner_cannot_reverse_another_partners_transaction(
    engine: Engine, coffee: PartnerClient, air: PartnerClient
) -> None:
    member_id = coffee.new_member()
    earned = coffee.earn(member_id, 50_000)  # 500 CNY at 0.2
    assert earned.balance_points == 100
    counts = row_counts(engine)

    for points in (0, 10):
        failure = expect_failure(
            partial(air.reverse, earned.transaction.transaction_id, points),
            NOT_FOUND,
            "TRANSACTION_NOT_FOUND",
        )
        assert failure.metadata == {"transaction_id": earned.transaction.transaction_id}

    assert coffee.balance(member_id) == 100
    assert row_counts(engine) == counts
    (listed,) = coffee.transactions(member_id)
    assert listed.points_reversed == 0


def test_transactions_list_only_the_callers_own(
    coffee: PartnerClient, air: PartnerClient, cinema: PartnerClient
) -> None:
    member_id = coffee.new_member()
    coffee_ids = {coffee.earn(member_id, 10_000).transaction.transaction_id for _ in range(3)}
    air_ids = {air.earn(member_id, 2_000).transaction.transaction_id for _ in range(2)}

    assert {t.transaction_id for t in coffee.transactions()} == coffee_ids
    assert {t.transaction_id for t in coffee.transactions(member_id)} == coffee_ids
    assert {t.transaction_id for t in air.transactions(member_id)} == air_ids
    assert {t.partner_id for t in air.transactions()} == {"test-air"}
    assert cinema.transactions() == []
    assert cinema.transactions(member_id) == []
    # The balance is the coalition total, for the partners the member is linked to only.
    assert coffee.balance(member_id) == 3 * 20 + 2 * 20
    expect_failure(
        partial(cinema.balance, member_id), grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_NOT_LINKED"
    )


def test_customer_ids_are_scoped_to_the_partner(coffee: PartnerClient, air: PartnerClient) -> None:
    coffee_member_id = coffee.new_member()
    coffee.call(
        "LinkPartnerAccount",
        member_service_pb2.LinkPartnerAccountRequest(
            request_id="link-1", member_id=coffee_member_id, partner_customer_id="C-42"
        ),
    )
    assert resolve(coffee, "C-42") == coffee_member_id
    failure = expect_failure(lambda: resolve(air, "C-42"), NOT_FOUND, "MEMBER_NOT_FOUND")
    assert failure.metadata["partner_customer_id"] == "C-42"

    enrolment = air.enroll("C-42")
    assert enrolment.created
    assert enrolment.member.member_id != coffee_member_id
    assert resolve(air, "C-42") == enrolment.member.member_id
    assert resolve(coffee, "C-42") == coffee_member_id

    by_customer = points_service_pb2.EarnRequest(request_id="earn-1")
    by_customer.member.partner_customer_id = "C-42"
    by_customer.spend.amount_minor, by_customer.spend.currency = 1_000, "EUR"
    earned = air.call("Earn", by_customer)
    assert earned.transaction.member_id == enrolment.member.member_id
    assert coffee.balance(coffee_member_id) == 0


def read_partner(client: Client, method: str, partner_id: str) -> list[str]:
    """The partner ids in the answer of GetPartner or ListRateVersions for `partner_id`."""
    if method == "GetPartner":
        request = partner_service_pb2.GetPartnerRequest(partner_id=partner_id)
        return [client.call(method, request).partner.partner_id]
    request = partner_service_pb2.ListRateVersionsRequest(partner_id=partner_id)
    return [version.partner_id for version in client.call(method, request).rate_versions]


@pytest.mark.parametrize(
    ("method", "coffee_answer"),
    [("GetPartner", ["test-coffee"]), ("ListRateVersions", ["test-coffee", "test-coffee"])],
)
def test_partner_reads_only_its_own_partner_record(
    channel: grpc.Channel,
    engine: Engine,
    coffee: PartnerClient,
    method: str,
    coffee_answer: list[str],
) -> None:
    assert read_partner(coffee, method, "test-coffee") == coffee_answer
    for partner_id in ("test-air", "no-such-partner"):
        failure = expect_failure(
            partial(read_partner, coffee, method, partner_id),
            NOT_FOUND,
            "PARTNER_NOT_FOUND",
        )
        assert failure.metadata == {"partner_id": partner_id}

    admin = Client(channel, api_key(engine, "ops", "admin"))
    assert read_partner(admin, method, "test-air") == ["test-air"]
    expect_failure(
        lambda: read_partner(admin, method, "no-such-partner"), NOT_FOUND, "PARTNER_NOT_FOUND"
    )

"""Many calls at once, as retrying POS terminals make them: the database keeps the rules."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import Engine

from tests.end_to_end.support import PartnerClient, failure_of, row_counts

pytestmark = pytest.mark.end_to_end

CALLERS = 8


def test_concurrent_retries_of_one_request_apply_it_once(
    engine: Engine, coffee: PartnerClient
) -> None:
    member_id = coffee.new_member()
    counts = row_counts(engine)
    with ThreadPoolExecutor(CALLERS) as pool:
        responses = list(
            pool.map(
                lambda _: coffee.earn(member_id, 1_999, request_id="request-1"), range(CALLERS)
            )
        )
    assert [response.replayed for response in responses].count(False) == 1
    assert len({response.transaction.transaction_id for response in responses}) == 1
    assert coffee.balance(member_id) == 3
    assert row_counts(engine)["journal_transactions"] == counts["journal_transactions"] + 1


def test_concurrent_burns_never_overdraw(coffee: PartnerClient) -> None:
    member_id = coffee.new_member()
    coffee.earn(member_id, 50_000)  # 100 points: room for 5 of the 10 burns of 20

    def burn_20(_: int) -> str:
        try:
            return f"balance {coffee.burn(member_id, 20).balance_points}"
        except grpc.RpcError as error:
            return failure_of(error).reason

    with ThreadPoolExecutor(CALLERS) as pool:
        outcomes = sorted(pool.map(burn_20, range(10)))
    balances_after = [f"balance {points}" for points in (0, 20, 40, 60, 80)]
    assert outcomes == ["INSUFFICIENT_POINTS"] * 5 + balances_after
    assert coffee.balance(member_id) == 0

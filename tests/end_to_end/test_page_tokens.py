"""Page tokens of every list: a forged or oversized token is INVALID_ARGUMENT, never INTERNAL.

Found by an adversarial client: the URL-safe base64 of "[" * 50000 made the JSON decoder
recurse until RecursionError (INTERNAL) in each of these RPCs.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from coalition.v1 import (
    partner_service_pb2,
    partner_service_pb2_grpc,
    points_service_pb2,
    points_service_pb2_grpc,
    reconciliation_service_pb2,
    reconciliation_service_pb2_grpc,
    settlement_service_pb2,
    settlement_service_pb2_grpc,
)
from tests.conftest import api_key
from tests.end_to_end.support import CALL_TIMEOUT_SECONDS, expect_failure

pytestmark = pytest.mark.end_to_end

DEEP_JSON = base64.urlsafe_b64encode(b"[" * 50_000).decode()
FORGED_TOKENS = {
    "deep-json": DEEP_JSON,
    "deep-json-within-the-bound": base64.urlsafe_b64encode(b"[" * 150).decode(),
    "one-beyond-the-bound": "A" * 257,  # the hub makes none longer than 256
    "not-base64": "%%%",
    "not-utf8": base64.urlsafe_b64encode(b"p1.\xff\xfe.1").decode(),
}


def list_call(channel: grpc.Channel, engine: Engine, rpc: str) -> Callable[[str], Any]:
    """The RPC with the given page token, called by a role that may call it."""
    if rpc == "ListTransactions":
        points = points_service_pb2_grpc.PointsServiceStub(channel)
        key = api_key(engine, "test-coffee")
        return lambda token: points.ListTransactions(
            points_service_pb2.ListTransactionsRequest(page_token=token),
            metadata=key,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    if rpc == "ListSettlements":
        settlement = settlement_service_pb2_grpc.SettlementServiceStub(channel)
        key = api_key(engine, "group-finance", "finance")
        return lambda token: settlement.ListSettlements(
            settlement_service_pb2.ListSettlementsRequest(page_token=token),
            metadata=key,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    if rpc == "ListReconciliationExceptions":
        reconciliation = reconciliation_service_pb2_grpc.ReconciliationServiceStub(channel)
        key = api_key(engine, "test-coffee")
        return lambda token: reconciliation.ListReconciliationExceptions(
            reconciliation_service_pb2.ListReconciliationExceptionsRequest(
                run_id="run-1", page_token=token
            ),
            metadata=key,
            timeout=CALL_TIMEOUT_SECONDS,
        )
    assert rpc == "ListPartners"
    partners = partner_service_pb2_grpc.PartnerServiceStub(channel)
    key = api_key(engine, "ops", "admin")
    return lambda token: partners.ListPartners(
        partner_service_pb2.ListPartnersRequest(page_token=token),
        metadata=key,
        timeout=CALL_TIMEOUT_SECONDS,
    )


@pytest.mark.parametrize(
    "rpc", ["ListTransactions", "ListSettlements", "ListReconciliationExceptions", "ListPartners"]
)
def test_a_forged_page_token_is_invalid_in_every_list(
    channel: grpc.Channel, engine: Engine, rpc: str
) -> None:
    call = list_call(channel, engine, rpc)
    for name, token in FORGED_TOKENS.items():
        try:
            expect_failure(
                lambda: call(token),  # noqa: B023 (called at once)
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_FIELD",
                ("page_token",),
            )
        except AssertionError as error:
            raise AssertionError(f"token {name}: {error}") from error

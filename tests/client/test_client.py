"""coalition.client over real gRPC: against the hub, and against a deliberately flaky
PointsService of the test's own for the retries (the hub cannot be made to fail on cue)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from sqlalchemy import Engine

from coalition.api.server import Hub
from coalition.client import NO_RETRY, FieldViolation, HubClient, HubError, RetryPolicy
from coalition.v1 import (
    common_pb2,
    member_service_pb2,
    points_service_pb2,
    points_service_pb2_grpc,
)
from tests.conftest import api_key

pytestmark = pytest.mark.end_to_end

FAST_RETRY = RetryPolicy(attempts_max=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)


def key_of(engine: Engine, partner_id: str) -> str:
    ((_, authorization),) = api_key(engine, partner_id)
    return authorization.removeprefix("Bearer ")


@pytest.fixture
def coffee(channel: grpc.Channel, engine: Engine) -> HubClient:
    return HubClient(channel, key_of(engine, "test-coffee"), retry=FAST_RETRY)


def enrolled(client: HubClient, customer_id: str) -> common_pb2.MemberReference:
    request = member_service_pb2.EnrollMemberRequest(partner_customer_id=customer_id)
    member_id = client.enroll_member(request).member.member_id
    return common_pb2.MemberReference(member_id=member_id)


def test_calls_generate_request_ids_and_answer_typed_responses(coffee: HubClient) -> None:
    member = enrolled(coffee, "C-1")
    spend = common_pb2.Money(amount_minor=10_000, currency="CNY")
    earned = coffee.earn(points_service_pb2.EarnRequest(member=member, spend=spend))
    again = coffee.earn(points_service_pb2.EarnRequest(member=member, spend=spend))
    assert isinstance(earned, points_service_pb2.EarnResponse)
    assert (earned.points, again.balance_points) == (20, 40)  # two requests: two ids
    assert earned.transaction.request_id != again.transaction.request_id
    balance = coffee.get_balance(points_service_pb2.GetBalanceRequest(member=member))
    assert balance.balance_points == 40


def test_a_given_request_id_is_sent_as_it_is(coffee: HubClient) -> None:
    member = enrolled(coffee, "C-2")
    request = points_service_pb2.EarnRequest(
        request_id="earn-once",
        member=member,
        spend=common_pb2.Money(amount_minor=500, currency="CNY"),
    )
    first, replay = coffee.earn(request), coffee.earn(request)
    assert (first.replayed, replay.replayed) == (False, True)
    assert replay.transaction.request_id == "earn-once"


def test_batch_items_without_request_ids_get_one_each(coffee: HubClient) -> None:
    member = enrolled(coffee, "C-3")
    spend = common_pb2.Money(amount_minor=1_000, currency="CNY")
    items = [points_service_pb2.EarnRequest(member=member, spend=spend) for _ in range(3)]
    response = coffee.batch_earn(
        points_service_pb2.BatchEarnRequest(
            items=items, mode=points_service_pb2.BATCH_EARN_MODE_ALL_OR_NOTHING
        )
    )
    request_ids = {result.earn.transaction.request_id for result in response.results}
    assert response.applied_count == 3 and len(request_ids) == 3 and "" not in request_ids


def test_a_refusal_is_raised_with_its_code_reason_and_metadata(coffee: HubClient) -> None:
    member = enrolled(coffee, "C-4")
    with pytest.raises(HubError) as caught:
        coffee.burn(points_service_pb2.BurnRequest(member=member, points=5))
    error = caught.value
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_POINTS",
    )
    assert error.metadata["member_id"] == member.member_id
    assert error.metadata["points_requested"] == "5"
    assert not error.retryable and error.field_violations == ()


def test_bad_input_is_raised_with_its_field_violations(coffee: HubClient) -> None:
    member = enrolled(coffee, "C-5")
    request = points_service_pb2.BurnRequest(member=member, points=-1)
    with pytest.raises(HubError) as caught:
        coffee.burn(request)
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert error.field_violations == (
        FieldViolation("points", "must be positive", "INVALID_FIELD"),
    )


class FlakyPoints(points_service_pb2_grpc.PointsServiceServicer):
    """Fails the first `failures` Earn calls with `code` (or by outliving the deadline), then
    answers; records the request_id of every attempt."""

    def __init__(self, failures: int, code: grpc.StatusCode) -> None:
        self.failures = failures
        self.code = code
        self.request_ids: list[str] = []
        self.lock = threading.Lock()

    def Earn(
        self, request: points_service_pb2.EarnRequest, context: grpc.ServicerContext
    ) -> points_service_pb2.EarnResponse:
        with self.lock:
            self.request_ids.append(request.request_id)
            attempt = len(self.request_ids)
        if attempt <= self.failures:
            if self.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                time.sleep(context.time_remaining() + 0.05)  # the client gives up first
                return points_service_pb2.EarnResponse()
            context.abort(self.code, "try again")
        return points_service_pb2.EarnResponse(points=7)


@pytest.fixture
def flaky(request: pytest.FixtureRequest) -> Iterator[tuple[FlakyPoints, grpc.Channel]]:
    failures, code = request.param
    servicer = FlakyPoints(failures, code)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    points_service_pb2_grpc.add_PointsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield servicer, channel
    finally:
        server.stop(grace=None)


def earn_request() -> points_service_pb2.EarnRequest:
    return points_service_pb2.EarnRequest(
        member=common_pb2.MemberReference(member_id="mem_1"),
        spend=common_pb2.Money(amount_minor=100, currency="CNY"),
    )


@pytest.mark.parametrize(
    "flaky",
    [(2, grpc.StatusCode.UNAVAILABLE), (2, grpc.StatusCode.DEADLINE_EXCEEDED)],
    indirect=True,
    ids=["unavailable", "deadline-exceeded"],
)
def test_unavailable_and_deadline_exceeded_are_retried_with_the_same_request_id(
    flaky: tuple[FlakyPoints, grpc.Channel],
) -> None:
    servicer, channel = flaky
    pauses: list[float] = []
    client = HubClient(channel, "key", timeout_seconds=0.3, retry=FAST_RETRY, sleep=pauses.append)
    assert client.earn(earn_request()).points == 7
    assert len(servicer.request_ids) == 3 and len(set(servicer.request_ids)) == 1
    assert servicer.request_ids[0] != ""
    assert len(pauses) == 2 and all(0 <= pause <= 0.05 for pause in pauses)


@pytest.mark.parametrize("flaky", [(10, grpc.StatusCode.UNAVAILABLE)], indirect=True)
def test_retries_are_bounded(flaky: tuple[FlakyPoints, grpc.Channel]) -> None:
    servicer, channel = flaky
    client = HubClient(channel, "key", retry=FAST_RETRY, sleep=lambda _: None)
    with pytest.raises(HubError) as caught:
        client.earn(earn_request())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.retryable
    assert len(servicer.request_ids) == FAST_RETRY.attempts_max


@pytest.mark.parametrize(
    "flaky",
    [
        (1, grpc.StatusCode.FAILED_PRECONDITION),
        (1, grpc.StatusCode.ALREADY_EXISTS),
        (1, grpc.StatusCode.INTERNAL),
        (1, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    indirect=True,
)
def test_other_codes_are_never_retried(flaky: tuple[FlakyPoints, grpc.Channel]) -> None:
    servicer, channel = flaky
    client = HubClient(channel, "key", retry=FAST_RETRY, sleep=lambda _: None)
    with pytest.raises(HubError) as caught:
        client.earn(earn_request())
    assert caught.value.code == servicer.code and not caught.value.retryable
    assert len(servicer.request_ids) == 1


@pytest.mark.parametrize("flaky", [(1, grpc.StatusCode.UNAVAILABLE)], indirect=True)
def test_no_retry_sends_once(flaky: tuple[FlakyPoints, grpc.Channel]) -> None:
    servicer, channel = flaky
    with pytest.raises(HubError):
        HubClient(channel, "key", retry=NO_RETRY).earn(earn_request())
    assert len(servicer.request_ids) == 1


def test_connect_opens_and_closes_a_channel_of_its_own(hub: Hub, engine: Engine) -> None:
    with HubClient.connect(f"127.0.0.1:{hub.port}", key_of(engine, "test-air")) as air:
        member = enrolled(air, "A-1")
        balance = air.get_balance(points_service_pb2.GetBalanceRequest(member=member))
    assert balance.balance_points == 0

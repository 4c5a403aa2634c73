"""Holds, balances and the event stream over real gRPC on loopback."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import Engine

from coalition.api.server import Hub
from coalition.v1 import (
    common_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    points_service_pb2,
    points_service_pb2_grpc,
)
from tests.conftest import api_key
from tests.end_to_end.support import expect_failure, row_counts, timestamp
from tests.programme.conftest import PLAIN, earn, enroll, new_id

pytestmark = pytest.mark.end_to_end

TIMEOUT_SECONDS = 15.0
Metadata = tuple[tuple[str, str], ...]


def by_id(member_id: str) -> common_pb2.MemberReference:
    return common_pb2.MemberReference(member_id=member_id)


def points_stub(channel: grpc.Channel) -> points_service_pb2_grpc.PointsServiceStub:
    return points_service_pb2_grpc.PointsServiceStub(channel)


def authorize_request(member_id: str, points: int, **fields: object) -> object:
    return points_service_pb2.AuthorizeBurnRequest(
        request_id=new_id(), member=by_id(member_id), points=points, **fields
    )


def test_hold_capture_and_balance_over_grpc(channel: grpc.Channel, engine: Engine) -> None:
    metadata = api_key(engine, "test-air")
    stub = points_stub(channel)
    member_id = enroll(engine, "test-air")  # holds and balances need the member's link
    earn(engine, member_id, 10_000)
    held = stub.AuthorizeBurn(
        authorize_request(member_id, 60, ttl=Duration(seconds=120)),
        metadata=metadata,
        timeout=TIMEOUT_SECONDS,
    )
    assert held.hold.status == points_service_pb2.HOLD_STATUS_OPEN
    assert held.transaction.kind == common_pb2.TRANSACTION_KIND_HOLD
    assert (held.points, held.balance_points) == (60, 40)
    balance = stub.GetBalance(
        points_service_pb2.GetBalanceRequest(member=by_id(member_id)),
        metadata=metadata,
        timeout=TIMEOUT_SECONDS,
    )
    assert (balance.balance_points, balance.held_points) == (40, 60)
    captured = stub.CaptureBurn(
        points_service_pb2.CaptureBurnRequest(
            request_id=new_id(), hold_id=held.hold.hold_id, points=50
        ),
        metadata=metadata,
        timeout=TIMEOUT_SECONDS,
    )
    assert (captured.points, captured.points_released, captured.balance_points) == (50, 10, 50)
    assert captured.hold.status == points_service_pb2.HOLD_STATUS_CAPTURED
    assert captured.transaction.kind == common_pb2.TRANSACTION_KIND_CAPTURE
    expect_failure(
        lambda: stub.VoidBurn(
            points_service_pb2.VoidBurnRequest(request_id=new_id(), hold_id=held.hold.hold_id),
            metadata=metadata,
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_NOT_OPEN",
    )
    listed = stub.ListTransactions(
        points_service_pb2.ListTransactionsRequest(member=by_id(member_id)),
        metadata=metadata,
        timeout=TIMEOUT_SECONDS,
    )
    assert [t.kind for t in listed.transactions] == [
        common_pb2.TRANSACTION_KIND_CAPTURE,
        common_pb2.TRANSACTION_KIND_HOLD,
        common_pb2.TRANSACTION_KIND_EARN,
    ]


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"points": 0}, ("points",)),
        ({"points": 5, "ttl": Duration(seconds=8 * 24 * 3600)}, ("ttl",)),
        ({"points": 5, "ttl": Duration(seconds=-1)}, ("ttl",)),
        ({}, ("basis",)),
        ({"points": 5, "request_id": "with space"}, ("request_id",)),
    ],
)
def test_bad_hold_requests_name_their_fields_and_write_nothing(
    channel: grpc.Channel, engine: Engine, request_fields: dict[str, object], fields: tuple[str]
) -> None:
    metadata = api_key(engine, "test-air")
    member_id = enroll(engine)
    earn(engine, member_id, 10_000)
    fields_given = dict(request_fields)  # parameters are shared by both databases' runs
    request = points_service_pb2.AuthorizeBurnRequest(
        request_id=str(fields_given.pop("request_id", new_id())),
        member=by_id(member_id),
        **fields_given,
    )
    rows_before = row_counts(engine)
    expect_failure(
        lambda: points_stub(channel).AuthorizeBurn(
            request, metadata=metadata, timeout=TIMEOUT_SECONDS
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        fields,
    )
    expect_failure(
        lambda: points_stub(channel).CaptureBurn(
            points_service_pb2.CaptureBurnRequest(request_id=new_id(), hold_id="abc"),
            metadata=metadata,
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("hold_id",),
    )
    assert row_counts(engine) == rows_before


def test_balance_as_of_in_the_future_is_refused(channel: grpc.Channel, engine: Engine) -> None:
    member_id = enroll(engine, "test-air")  # the caller's own member: only as_of is wrong
    expect_failure(
        lambda: points_stub(channel).GetBalance(
            points_service_pb2.GetBalanceRequest(
                member=by_id(member_id), as_of=timestamp(datetime(2100, 1, 1, tzinfo=UTC))
            ),
            metadata=api_key(engine, "test-air"),
            timeout=TIMEOUT_SECONDS,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "AS_OF_IN_FUTURE",
        ("as_of",),
    )


def collect(stream: object, count: int) -> list[event_service_pb2.Event]:
    received = []
    for response in stream:  # type: ignore[attr-defined]
        received.append(response.event)
        if len(received) == count:
            stream.cancel()  # type: ignore[attr-defined]
            break
    return received


def subscribe(channel: grpc.Channel, metadata: Metadata, cursor: str = "") -> object:
    return event_service_pb2_grpc.EventServiceStub(channel).Subscribe(
        event_service_pb2.SubscribeRequest(cursor=cursor), metadata=metadata, timeout=30
    )


def test_stream_delivers_own_events_live_and_resumes_without_gaps(
    channel: grpc.Channel, engine: Engine
) -> None:
    air, cinema = api_key(engine, "test-air"), api_key(engine, "test-cinema")
    member_id = enroll(engine, "test-air")
    earn(engine, member_id, 1_000)
    earn(engine, member_id, 500, "test-cinema")  # never shown to test-air
    stream = subscribe(channel, air)

    def more_events() -> None:
        time.sleep(0.5)  # after the stream caught up: these arrive live
        earn(engine, member_id, 2_000)
        earn(engine, member_id, 3_000)

    writer = threading.Thread(target=more_events)
    writer.start()
    first = collect(stream, 2)
    writer.join()
    assert [(e.kind, e.points_delta) for e in first] == [
        (event_service_pb2.EVENT_KIND_EARNED, 10),
        (event_service_pb2.EVENT_KIND_EARNED, 20),
    ]
    # The stream dropped after two; resuming from the last cursor gives exactly the rest.
    rest = collect(subscribe(channel, air, first[-1].cursor), 1)
    assert [(e.kind, e.points_delta) for e in rest] == [(event_service_pb2.EVENT_KIND_EARNED, 30)]
    assert {e.member_id for e in first + rest} == {member_id}
    cinema_events = collect(subscribe(channel, cinema), 1)
    assert [(e.kind, e.points_delta) for e in cinema_events] == [
        (event_service_pb2.EVENT_KIND_EARNED, 5)
    ]


def test_stream_refuses_bad_cursors_and_other_roles(channel: grpc.Channel, engine: Engine) -> None:
    air = api_key(engine, "test-air")
    # 2**63 has 19 digits like every int64, but no database column holds it.
    for cursor in ("not-a-cursor", f"{2**63}-1", f"1-{2**63}", f"{10**19 - 1}-1"):
        expect_failure(
            lambda cursor=cursor: list(subscribe(channel, air, cursor)),  # type: ignore[call-overload]
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ("cursor",),
        )
    expect_failure(
        lambda: list(subscribe(channel, api_key(engine, "ops", "admin"))),  # type: ignore[call-overload]
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_ALLOWED",
    )
    expect_failure(
        lambda: list(subscribe(channel, (("authorization", "Bearer nope"),))),  # type: ignore[call-overload]
        grpc.StatusCode.UNAUTHENTICATED,
        "API_KEY_INVALID",
    )


def test_stream_ends_when_the_hub_stops(engine: Engine) -> None:
    hub = Hub(engine, "127.0.0.1:0", programme=PLAIN).start()
    with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        stream = subscribe(channel, api_key(engine, "test-air"))
        outcome: list[object] = []
        reader = threading.Thread(target=lambda: outcome.append(list(stream)))  # type: ignore[call-overload]
        reader.start()
        time.sleep(0.5)
        started = time.monotonic()
        hub.stop(grace_seconds=5)
        reader.join(timeout=10)
        assert not reader.is_alive()
        assert time.monotonic() - started < 5, "streams end within a poll, not at the grace"
    assert outcome == [[]]

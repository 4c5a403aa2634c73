"""Faults under load: a hub process killed with SIGKILL, client deadlines that expire."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, text

from coalition.v1 import common_pb2, points_service_pb2, points_service_pb2_grpc
from tests.citus import JOINS_ON_TRANSACTION_ID, skip_on_citus
from tests.conftest import api_key
from tests.integration.ledger_checks import assert_ledger_sound
from tests.process.commands import Server, running_server
from tests.reliability.load import CURRENCY, Worker, check_outcomes, run_workers
from tests.reliability.support import scaled
from tests.reliability.test_bank import enroll_members

pytestmark = pytest.mark.reliability

WORKERS = scaled(6, 24)
OPERATIONS_PER_WORKER_MAX = 100_000  # the load runs until LOAD_SECONDS are over
KILL_AFTER_SECONDS = 0.5
LOAD_SECONDS = scaled(2, 30)
DEADLINE_REQUESTS = scaled(60, 600)


@pytest.fixture
def two_hubs(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running_server(["--db", database_url], tmp_path / f"hub-{index}.log")
            )
            for index in range(2)
        ]


def test_sigkill_of_a_hub_mid_load_loses_and_duplicates_nothing(
    two_hubs: list[Server], engine: Engine
) -> None:
    victim, survivor = two_hubs
    with ExitStack() as stack:
        channels = [
            stack.enter_context(grpc.insecure_channel(server.address)) for server in two_hubs
        ]
        member_ids = enroll_members(channels[1], engine, 4)
        partners = sorted(CURRENCY)
        workers = [
            Worker(
                channels,
                partners[index % len(partners)],
                api_key(engine, partners[index % len(partners)]),
                member_ids,
                seed=100 + index,
            )
            for index in range(WORKERS)
        ]

        def kill_mid_load() -> None:
            time.sleep(KILL_AFTER_SECONDS)
            os.killpg(victim.process.pid, signal.SIGKILL)  # the session running_server made
            time.sleep(LOAD_SECONDS - KILL_AFTER_SECONDS)
            stop.set()

        stop = threading.Event()
        killer = threading.Thread(target=kill_mid_load, daemon=True)
        killer.start()
        seen = run_workers(workers, OPERATIONS_PER_WORKER_MAX, stop)
        killer.join()
    assert victim.process.wait(timeout=15) == -signal.SIGKILL
    assert survivor.process.poll() is None, survivor.log()
    assert seen.codes.get("UNAVAILABLE", 0) > 0, f"the kill was not felt: {dict(seen.codes)}"
    check_outcomes(engine, seen)
    assert_ledger_sound(engine)


def test_an_expired_deadline_never_leaves_a_half_applied_request(
    engine: Engine, hub: object, channel: grpc.Channel
) -> None:
    """Earns and burns with deadlines from 1 ms: each is wholly applied or not at all, and a
    retry with the same request_id either replays it or applies it now, once."""
    skip_on_citus(engine, JOINS_ON_TRANSACTION_ID)
    stub = points_service_pb2_grpc.PointsServiceStub(channel)
    metadata = api_key(engine, "test-coffee")
    (member_id,) = enroll_members(channel, engine, 1)
    member = common_pb2.MemberReference(member_id=member_id)
    requests = []
    for index in range(DEADLINE_REQUESTS):
        request_id = f"deadline-{index}"
        if index % 3 == 2:
            requests.append(
                (
                    "Burn",
                    points_service_pb2.BurnRequest(request_id=request_id, member=member, points=1),
                )
            )
        else:
            spend = common_pb2.Money(amount_minor=1000 + index, currency="CNY")
            requests.append(
                (
                    "Earn",
                    points_service_pb2.EarnRequest(
                        request_id=request_id, member=member, spend=spend
                    ),
                )
            )
    expired = 0
    for index, (method, request) in enumerate(requests):
        try:
            getattr(stub, method)(request, metadata=metadata, timeout=0.001 * (1 + index % 20))
        except grpc.RpcError as error:
            assert error.code() in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.FAILED_PRECONDITION,  # a burn before enough was earned
            ), error
            expired += error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert expired > 0, "no deadline expired: the test tested nothing"
    time.sleep(0.5)  # let calls the clients gave up on finish on the hub
    assert_ledger_sound(engine)  # every transaction whole: postings, balance caches, lots
    with engine.connect() as connection:
        half_applied = connection.execute(
            text(
                "SELECT j.request_id FROM journal_transactions j LEFT JOIN idempotency_keys k"
                " ON k.partner_id = j.partner_id AND k.request_id = j.request_id"
                " WHERE k.request_id IS NULL OR k.result_id IS NULL"
            )
        ).all()
    assert not half_applied, f"journal rows without their idempotency result: {half_applied}"
    with engine.connect() as connection:
        applied_before = set(
            connection.execute(text("SELECT request_id FROM journal_transactions")).scalars()
        )
    for method, request in requests:
        try:
            response = getattr(stub, method)(request, metadata=metadata, timeout=15)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
            assert request.request_id not in applied_before, "an applied request was refused"
            continue
        # Applied before: replayed. Not yet: applied now, or replayed if a call the client
        # gave up on committed meanwhile (the hub may still be running it).
        assert response.replayed or request.request_id not in applied_before
    assert_ledger_sound(engine)  # includes: each request_id applied at most once
    with engine.connect() as connection:
        journal_rows = connection.execute(
            text("SELECT COUNT(*) FROM journal_transactions WHERE request_id LIKE 'deadline-%'")
        ).scalar_one()
    assert len(applied_before) <= journal_rows <= len(requests)
    assert_ledger_sound(engine)

"""The bank test: many partner clients on two hub processes, with retries; nothing lost,
nothing duplicated, no negative balance, and the journal replays to every balance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine

from coalition.v1 import member_service_pb2, member_service_pb2_grpc
from tests.conftest import api_key
from tests.integration.ledger_checks import assert_ledger_sound
from tests.process.commands import Server, running_server
from tests.reliability.load import (
    CURRENCY,
    Worker,
    check_outcomes,
    run_workers,
)
from tests.reliability.support import scaled

pytestmark = pytest.mark.reliability

WORKERS = scaled(6, 24)
OPERATIONS_PER_WORKER = scaled(40, 400)
MEMBERS = scaled(4, 20)  # few members: contention on the same balances is the point


@pytest.fixture
def two_hubs(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    """Two `coalition serve` processes on the test's database (partners already synced)."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running_server(["--db", database_url], tmp_path / f"hub-{index}.log")
            )
            for index in range(2)
        ]


def enroll_members(channel: grpc.Channel, engine: Engine, count: int) -> list[str]:
    """Members enrolled at test-coffee and linked at every other partner of the load: burns
    and balances are only for members linked to the caller (docs/identity.md)."""
    stub = member_service_pb2_grpc.MemberServiceStub(channel)
    metadata = {partner_id: api_key(engine, partner_id) for partner_id in CURRENCY}
    member_ids = [
        stub.EnrollMember(
            member_service_pb2.EnrollMemberRequest(
                request_id=f"setup-member-{index}", partner_customer_id=f"bank-{index}"
            ),
            metadata=metadata["test-coffee"],
            timeout=15,
        ).member.member_id
        for index in range(count)
    ]
    for partner_id in sorted(set(CURRENCY) - {"test-coffee"}):
        for index, member_id in enumerate(member_ids):
            stub.LinkPartnerAccount(
                member_service_pb2.LinkPartnerAccountRequest(
                    request_id=f"setup-link-{index}",
                    member_id=member_id,
                    partner_customer_id=f"bank-{index}",
                ),
                metadata=metadata[partner_id],
                timeout=15,
            )
    return member_ids


def test_bank_two_hubs_random_operations_and_retries(
    two_hubs: list[Server], engine: Engine
) -> None:
    with ExitStack() as stack:
        channels = [
            stack.enter_context(grpc.insecure_channel(server.address)) for server in two_hubs
        ]
        member_ids = enroll_members(channels[0], engine, MEMBERS)
        partners = sorted(CURRENCY)
        workers = [
            Worker(
                channels,
                partners[index % len(partners)],
                api_key(engine, partners[index % len(partners)]),
                member_ids,
                seed=index,
            )
            for index in range(WORKERS)
        ]
        seen = run_workers(workers, OPERATIONS_PER_WORKER, threading.Event())
    model = check_outcomes(engine, seen)
    assert_ledger_sound(engine)
    assert seen.applied, "the load applied nothing: the test tested nothing"
    assert seen.replays > 0 and set(model) <= set(member_ids)

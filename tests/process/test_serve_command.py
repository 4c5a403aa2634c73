"""`coalition serve`: the real server process, its health, real calls, and SIGTERM.

In-flight calls during shutdown and outdated-but-not-empty databases are out of scope here.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from coalition.store.schema import journal_transactions, partners
from coalition.v1 import common_pb2, member_service_pb2, points_service_pb2
from coalition.v1.member_service_pb2_grpc import MemberServiceStub
from coalition.v1.points_service_pb2_grpc import PointsServiceStub
from tests.citus import JOINS_ON_TRANSACTION_ID, skip_on_citus_database
from tests.end_to_end.support import failure_of
from tests.process.commands import (
    PARTNERS_DIRECTORY,
    POLL_INTERVAL_SECONDS,
    SERVING_TIMEOUT_SECONDS,
    Server,
    child_pids,
    database_engine,
    explain,
    health_status,
    pids_listening_on,
    pids_with_connections_on,
    run_coalition,
    running_server,
    stop,
    wait_until_gone,
)
from tests.process.ledger_health import ledger_violations

pytestmark = pytest.mark.process

PARTNER_ID = "larkspur-coffee"
CURRENCY = "CNY"
CALL_TIMEOUT_SECONDS = 10.0
Metadata = tuple[tuple[str, str], ...]
CALLS_OVER_FRESH_CHANNELS = 20
WORKERS = 2
# A channel of its own connection: by default gRPC shares one connection between channels to
# the same target, and SO_REUSEPORT balances connections, not calls.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def issue_partner_key(database_url: str) -> Metadata:
    result = run_coalition("keys", "issue", PARTNER_ID, "--role", "partner", "--db", database_url)
    assert result.returncode == 0, explain(result)
    return (("authorization", f"Bearer {result.stdout.strip()}"),)


def enrol(channel: grpc.Channel, metadata: Metadata, customer_id: str) -> str:
    response = MemberServiceStub(channel).EnrollMember(
        member_service_pb2.EnrollMemberRequest(
            request_id=str(uuid.uuid4()), partner_customer_id=customer_id, display_name="Mei Lin"
        ),
        metadata=metadata,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert response.created
    return str(response.member.member_id)


def earn_request(member_id: str, amount_minor: int) -> points_service_pb2.EarnRequest:
    return points_service_pb2.EarnRequest(
        request_id=str(uuid.uuid4()),
        member=common_pb2.MemberReference(member_id=member_id),
        spend=common_pb2.Money(amount_minor=amount_minor, currency=CURRENCY),
    )


def earn(
    channel: grpc.Channel, metadata: Metadata, request: points_service_pb2.EarnRequest
) -> points_service_pb2.EarnResponse:
    return PointsServiceStub(channel).Earn(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)


def count_earns(database_url: str) -> int:
    with database_engine(database_url) as engine, engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).where(journal_transactions.c.kind == "earn")
            ).scalar_one()
        )


def wait_for_workers(server: Server, workers: int) -> set[int]:
    """The worker processes (children of serve) that listen on the port, once all do."""
    deadline = time.monotonic() + SERVING_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        listening = pids_listening_on(server.port, child_pids(server.process.pid))
        if len(listening) == workers:
            return listening
        time.sleep(POLL_INTERVAL_SECONDS)
    raise AssertionError(f"{workers} workers never all listened:\n{server.log()}")


@pytest.mark.parametrize("url_from", ["option", "environment"])
def test_serve_answers_an_authenticated_earn_then_stops_cleanly_on_sigterm(
    database_url: str, tmp_path: Path, url_from: str
) -> None:
    skip_on_citus_database(database_url, JOINS_ON_TRANSACTION_ID)  # ledger_health.py
    arguments = ["--partners", "partners"]
    if url_from == "option":
        arguments += ["--db", database_url]
    environment_url = database_url if url_from == "environment" else None

    with running_server(arguments, tmp_path / "serve.log", environment_url) as server:
        metadata = issue_partner_key(database_url)  # the partners were synced by serve
        with grpc.insecure_channel(server.address) as channel:
            member_id = enrol(channel, metadata, "C0001")
            request = earn_request(member_id, 4_800)
            earned = earn(channel, metadata, request)
            replayed = earn(channel, metadata, request)
            with pytest.raises(grpc.RpcError) as refused:
                earn(channel, (), earn_request(member_id, 100))

        assert earned.points > 0
        assert earned.balance_points == earned.points
        assert not earned.replayed
        assert replayed.replayed
        assert replayed.transaction.transaction_id == earned.transaction.transaction_id
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        exit_code = stop(server)

        assert exit_code == 0, server.log()
        assert "shutting down" in server.log()
        assert health_status(server.address) is None  # nobody listens any more
    assert count_earns(database_url) == 1
    assert ledger_violations(database_url) == []


def test_serve_with_two_workers_on_sqlite_serves_from_both_and_sigterm_stops_all(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'hub.db'}"  # empty: serve migrates it first
    arguments = ["--db", database_url, "--workers", str(WORKERS), "--partners", "partners"]

    with running_server(arguments, tmp_path / "serve.log") as server:
        workers = wait_for_workers(server, WORKERS)
        metadata = issue_partner_key(database_url)
        with grpc.insecure_channel(server.address) as channel:
            member_id = enrol(channel, metadata, "C0001")
        with ExitStack() as channels:
            responses = []
            for index in range(CALLS_OVER_FRESH_CHANNELS):
                channel = channels.enter_context(
                    grpc.insecure_channel(server.address, options=OWN_CONNECTION)
                )
                responses.append(earn(channel, metadata, earn_request(member_id, 1_000 + index)))
            # Every channel still holds its connection: see which workers accepted them.
            answering = pids_with_connections_on(server.port, workers)

        assert answering == workers, f"only {answering} of {workers} answered"
        assert all(not response.replayed for response in responses)
        assert responses[-1].balance_points == sum(response.points for response in responses)
        descendants = child_pids(server.process.pid)
        assert workers <= descendants

        exit_code = stop(server)

        assert exit_code == 0, server.log()
        assert wait_until_gone(descendants) == set(), f"left running:\n{server.log()}"
    assert count_earns(database_url) == CALLS_OVER_FRESH_CHANNELS
    assert ledger_violations(database_url) == []


def test_serve_syncs_partners_into_the_database_from_the_environment(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'hub.db'}"

    with running_server(
        ["--partners", "partners"], tmp_path / "serve.log", environment_database_url=database_url
    ) as server:
        with database_engine(database_url) as engine, engine.connect() as connection:
            partner_count = connection.execute(
                select(func.count()).select_from(partners)
            ).scalar_one()
        assert stop(server, signal.SIGINT) == 0, server.log()
    assert partner_count == len(list(PARTNERS_DIRECTORY.glob("*.toml")))


def occupied_port() -> socket.socket:
    """A port held by a plain listening socket (no SO_REUSEPORT), so the hub cannot bind it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def test_serve_exits_non_zero_when_it_cannot_listen(tmp_path: Path) -> None:
    with occupied_port() as holder:
        result = run_coalition(
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'hub.db'}",
            "--listen",
            f"127.0.0.1:{holder.getsockname()[1]}",
        )

    assert result.returncode != 0, explain(result)
    assert "error: " in result.stderr


def test_serve_with_workers_exits_non_zero_when_its_workers_cannot_listen(tmp_path: Path) -> None:
    with occupied_port() as holder:
        result = run_coalition(
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'hub.db'}",
            "--listen",
            f"127.0.0.1:{holder.getsockname()[1]}",
            "--workers",
            str(WORKERS),
        )

    assert "Failed to bind" in result.stderr, explain(result)  # the workers did fail
    assert result.returncode != 0, explain(result)


def test_serve_on_postgresql_without_an_identity_secret_warns_and_refuses_only_identifiers(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a SQLite hub generates its own secret next to the database file")
    monkeypatch.delenv("COALITION_IDENTITY_SECRET", raising=False)
    monkeypatch.delenv("COALITION_IDENTITY_SECRET_FILE", raising=False)
    arguments = ["--partners", "partners", "--db", database_url]
    with running_server(arguments, tmp_path / "serve.log") as server:
        metadata = issue_partner_key(database_url)
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                MemberServiceStub(channel).EnrollMember(
                    member_service_pb2.EnrollMemberRequest(
                        request_id=str(uuid.uuid4()),
                        partner_customer_id="C0002",
                        display_name="Mei Lin",
                        email="mei@example.com",
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            assert enrol(channel, metadata, "C0003")  # no identifier: no secret needed
        log = server.log()
    failure = failure_of(refused.value)
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDENTITY_SECRET_NOT_CONFIGURED",
    )
    assert "no identity secret" in log
    assert "mei@example.com" not in log

"""Durability: restarting the hub and the database between operations loses nothing, and the
migrations take a database from empty, and from the previous schema, to the newest."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from coalition.partners.sync import sync_partners
from coalition.store import migrate
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, points_service_pb2, points_service_pb2_grpc
from tests.conftest import TEST_PARTNERS, api_key
from tests.integration.ledger_checks import assert_ledger_sound
from tests.process.commands import running_server, table_contents, throwaway_postgres_database
from tests.reliability import postgres
from tests.reliability.support import scaled
from tests.reliability.test_bank import enroll_members

pytestmark = pytest.mark.reliability

RESTART_CYCLES = scaled(2, 20)
CALL_TIMEOUT_SECONDS = 15.0


@dataclass
class Done:
    method: str
    request: object
    transaction_id: str


class Ledger:
    """A partner's requests and the model balance they must add up to."""

    def __init__(self, engine: Engine) -> None:
        self.metadata = api_key(engine, "test-coffee")
        self.done: list[Done] = []
        self.balance_points = 0

    def operate(self, channel: grpc.Channel, member_id: str, cycle: int) -> None:
        stub = points_service_pb2_grpc.PointsServiceStub(channel)
        member = common_pb2.MemberReference(member_id=member_id)
        earn = points_service_pb2.EarnRequest(
            request_id=uuid.uuid4().hex,
            member=member,
            spend=common_pb2.Money(amount_minor=1_000_000 + cycle, currency="CNY"),
        )
        burn = points_service_pb2.BurnRequest(request_id=uuid.uuid4().hex, member=member, points=50)
        for method, request in (("Earn", earn), ("Burn", burn)):
            response = getattr(stub, method)(
                request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS
            )
            assert not response.replayed
            self.balance_points += response.transaction.points_delta
            assert response.balance_points == self.balance_points
            self.done.append(Done(method, request, response.transaction.transaction_id))

    def check(self, channel: grpc.Channel, member_id: str) -> None:
        """Everything acknowledged before the restarts is still there, exactly once."""
        stub = points_service_pb2_grpc.PointsServiceStub(channel)
        for done in self.done:
            response = getattr(stub, done.method)(
                done.request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS
            )
            assert response.replayed and response.transaction.transaction_id == done.transaction_id
        balance = stub.GetBalance(
            points_service_pb2.GetBalanceRequest(
                member=common_pb2.MemberReference(member_id=member_id)
            ),
            metadata=self.metadata,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        assert balance.balance_points == self.balance_points


def test_hub_killed_and_restarted_between_operations_loses_nothing(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    ledger = Ledger(engine)
    member_id = ""
    for cycle in range(RESTART_CYCLES):
        with (
            running_server(["--db", database_url], tmp_path / f"hub-{cycle}.log") as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            if not member_id:
                (member_id,) = enroll_members(channel, engine, 1)
            ledger.check(channel, member_id)
            ledger.operate(channel, member_id, cycle)
            os.killpg(server.process.pid, signal.SIGKILL)  # no graceful shutdown at all
    with (
        running_server(["--db", database_url], tmp_path / "hub-last.log") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        ledger.check(channel, member_id)
    assert_ledger_sound(engine)


@pytest.mark.skipif(not postgres.available(), reason="needs PostgreSQL 15 binaries")
def test_database_and_hub_restarted_between_operations_lose_nothing(tmp_path: Path) -> None:
    with postgres.private_postgres() as cluster:
        engine = create_database_engine(cluster.url)
        try:
            migrate.upgrade(engine)
            sync_partners(UnitOfWork(engine), list(TEST_PARTNERS), datetime.now(UTC))
            ledger = Ledger(engine)
            member_id = ""
            for cycle in range(RESTART_CYCLES):
                with (
                    running_server(["--db", cluster.url], tmp_path / f"hub-{cycle}.log") as server,
                    grpc.insecure_channel(server.address) as channel,
                ):
                    if not member_id:
                        (member_id,) = enroll_members(channel, engine, 1)
                    ledger.check(channel, member_id)
                    ledger.operate(channel, member_id, cycle)
                engine.dispose()
                # An immediate stop is a crash: recovery replays the WAL on the next start.
                cluster.stop("immediate" if cycle % 2 else "fast")
                cluster.start()
            with (
                running_server(["--db", cluster.url], tmp_path / "hub-last.log") as server,
                grpc.insecure_channel(server.address) as channel,
            ):
                ledger.check(channel, member_id)
            assert_ledger_sound(engine)
        finally:
            engine.dispose()


# Migrations.


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty database (never the session's shared one, which must not be
    downgraded under the other tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with throwaway_postgres_database() as url:
        yield url


def previous_revision(engine: Engine) -> str:
    """The schema before the newest migration (before every parallel branch, if several)."""
    script = ScriptDirectory.from_config(migrate.alembic_config(engine))
    newest = script.get_revision(max(script.get_heads()))
    assert newest is not None and isinstance(newest.down_revision, str)
    return newest.down_revision


def migrate_to(engine: Engine, revision: str, downgrade: bool = False) -> None:
    config = migrate.alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if downgrade else command.upgrade)(config, revision)


def test_migrations_from_an_empty_database_and_from_the_previous_schema(
    empty_database_url: str, tmp_path: Path
) -> None:
    engine = create_database_engine(empty_database_url)
    try:
        migrate.upgrade(engine)  # from empty
        assert migrate.is_up_to_date(engine)
        sync_partners(UnitOfWork(engine), list(TEST_PARTNERS), datetime.now(UTC))
        ledger = Ledger(engine)
        with (
            running_server(["--db", empty_database_url], tmp_path / "hub-1.log") as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            (member_id,) = enroll_members(channel, engine, 1)
            ledger.operate(channel, member_id, 0)
        before = table_contents(empty_database_url)
        previous = previous_revision(engine)
        migrate_to(engine, previous, downgrade=True)
        engine.dispose()
        previous_tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert not migrate.is_up_to_date(engine)
        migrate.upgrade(engine)  # from the previous schema, with its data in place
        assert migrate.is_up_to_date(engine)
        after = table_contents(empty_database_url)
        for table in sorted(previous_tables):
            assert after[table] == before[table], f"{table} changed across the migration"
        with (
            running_server(["--db", empty_database_url], tmp_path / "hub-2.log") as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            ledger.check(channel, member_id)
            ledger.operate(channel, member_id, 1)
        assert_ledger_sound(engine)
    finally:
        engine.dispose()

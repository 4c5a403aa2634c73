"""On Citus, every earn, burn, reverse and hold is a single-shard transaction: Citus's own log
of the commands it sends the workers (`citus.log_remote_commands`) shows one worker written,
one plain COMMIT and no PREPARE TRANSACTION (two-phase commit). Skipped unless the test
database is a Citus coordinator (COALITION_TEST_DATABASE_URL, docs/scaling.md)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from coalition import operations
from coalition.identity.members import MemberReference
from coalition.operations import AuthorizeCommand, CaptureCommand, VoidCommand
from coalition.operations.points import BurnCommand, ReverseCommand
from coalition.store import citus
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound
from tests.integration.test_ledger import earn, enroll, now

pytestmark = pytest.mark.citus


@dataclass
class RemoteCommands:
    """What the coordinator sent the workers, as (server, command), while recording."""

    recording: bool = False
    commands: list[tuple[str, str]] = field(default_factory=list)

    def during(self, operation: Callable[[], Any]) -> list[tuple[str, str]]:
        self.commands.clear()
        self.recording = True
        try:
            operation()
        finally:
            self.recording = False
        return list(self.commands)

    def listen_on(self, dbapi_connection: Any, _record: Any = None) -> None:
        """A `connect` listener: turn Citus's log of remote commands on for the connection,
        and keep what it logs while recording."""

        def notice(diagnostic: Any) -> None:
            message = diagnostic.message_primary or ""
            if self.recording and message.startswith("issuing "):
                server = (diagnostic.message_detail or "").split(" connectionId")[0]
                self.commands.append((server, message.removeprefix("issuing ")))

        dbapi_connection.add_notice_handler(notice)
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET citus.log_remote_commands = on")
            cursor.execute("SET client_min_messages = log")
        dbapi_connection.commit()


@pytest.fixture
def citus_engine(engine: Engine, database_url: str) -> Iterator[Engine]:
    if not database_url.startswith("postgresql"):
        pytest.skip("Citus is PostgreSQL")
    with engine.connect() as connection:
        if not citus.is_citus(connection):
            pytest.skip("the test database is not a Citus coordinator")
    yield engine


@pytest.fixture
def remote(citus_engine: Engine) -> RemoteCommands:
    """Record Citus's log of remote commands on every new connection of the engine."""
    recorder = RemoteCommands()

    event.listen(citus_engine, "connect", recorder.listen_on)

    citus_engine.dispose()  # connections opened from now on record
    return recorder


def _writes(commands: list[tuple[str, str]]) -> set[str]:
    """The workers that received a data-modifying command."""
    verbs = ("INSERT", "UPDATE", "DELETE", "WITH")
    return {
        server
        for server, command in commands
        if any(part.lstrip().upper().startswith(verbs) for part in command.split(";"))
        and "assign_distributed_transaction_id" not in command
    }


def assert_single_shard(commands: list[tuple[str, str]]) -> None:
    assert commands, "the operation went through the workers"
    prepared = [command for _, command in commands if "PREPARE TRANSACTION" in command]
    assert not prepared, f"two-phase commit: {prepared}"
    assert len(_writes(commands)) == 1, f"written on several workers: {commands}"


def test_earn_burn_reverse_and_holds_are_single_shard_transactions(
    citus_engine: Engine, remote: RemoteCommands
) -> None:
    member_id = enroll(citus_engine)
    member = MemberReference(member_id=member_id)
    earned: list[operations.LedgerResult] = []

    assert_single_shard(
        remote.during(lambda: earned.append(earn(citus_engine, member_id, 9_000_000)))
    )
    assert earned[0].transaction.points_delta > 0

    burn = BurnCommand(uuid.uuid4().hex, member, points=1_000)
    assert_single_shard(
        remote.during(lambda: operations.burn(UnitOfWork(citus_engine), "test-coffee", burn, now()))
    )
    reverse = ReverseCommand(uuid.uuid4().hex, earned[0].transaction.transaction_id, points=50)
    assert_single_shard(
        remote.during(
            lambda: operations.reverse(UnitOfWork(citus_engine), "test-coffee", reverse, now())
        )
    )
    holds: list[operations.HoldResult] = []
    for _ in range(2):
        authorize = AuthorizeCommand(uuid.uuid4().hex, member, timedelta(minutes=5), points=100)
        assert_single_shard(
            remote.during(
                lambda command=authorize: holds.append(
                    operations.authorize_burn(
                        UnitOfWork(citus_engine), "test-coffee", command, now()
                    )
                )
            )
        )
    capture = CaptureCommand(uuid.uuid4().hex, holds[0].hold.hold_id, points=60)
    assert_single_shard(
        remote.during(
            lambda: operations.capture_burn(UnitOfWork(citus_engine), "test-coffee", capture, now())
        )
    )
    void = VoidCommand(uuid.uuid4().hex, holds[1].hold.hold_id)
    assert_single_shard(
        remote.during(
            lambda: operations.void_burn(UnitOfWork(citus_engine), "test-coffee", void, now())
        )
    )
    # A retry replays from the member's shard: its claim finds the first one, nothing is posted.
    replay = remote.during(
        lambda: operations.burn(UnitOfWork(citus_engine), "test-coffee", burn, now())
    )
    assert_single_shard(replay)
    assert not [c for _, c in replay if c.startswith("INSERT INTO public.journal_transactions")]
    assert_ledger_sound(citus_engine)


def test_the_layout_is_applied_and_reapplying_it_changes_nothing(citus_engine: Engine) -> None:
    with citus_engine.begin() as connection:
        assert citus.distribute(connection) == []
        kinds = dict(
            connection.execute(
                text("SELECT logicalrelid::regclass::text, partmethod FROM pg_dist_partition")
            ).all()
        )
        colocated = connection.execute(
            text(
                "SELECT count(DISTINCT colocationid) FROM pg_dist_partition"
                " WHERE logicalrelid::regclass::text = ANY(:tables)"
            ),
            {"tables": list(citus.MEMBER_TABLES)},
        ).scalar_one()
    assert {table: kinds[table] for table in citus.REFERENCE_TABLES} == dict.fromkeys(
        citus.REFERENCE_TABLES, "n"
    )
    assert {table: kinds[table] for table in citus.DISTRIBUTED_TABLES} == dict.fromkeys(
        citus.DISTRIBUTED_TABLES, "h"
    )
    assert colocated == 1, "every member table is co-located with members"

"""On Citus, the hub's group commit gathers concurrent earns and burns of members on one shard
only (operations/group_commit.py, `Committer._split`): groups of several calls form, and none
commits in two phases. A real hub over gRPC on loopback; Citus's own log of the commands the
coordinator sends the workers (`citus.log_remote_commands`) is recorded on every connection
the hub opens. Skipped unless the test database is a Citus coordinator (docs/scaling.md)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import Engine, event, text

from coalition.api.server import Hub
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.settings import identity_secret_from
from tests.citus.test_single_shard import RemoteCommands, citus_engine  # noqa: F401
from tests.end_to_end.support import PartnerClient, failure_of
from tests.integration.ledger_checks import assert_ledger_sound

pytestmark = pytest.mark.citus

MEMBERS = 12
CALLERS = 16
CALLS_PER_MEMBER = 12  # earns and burns alternating
SHARD_OF = "get_shard_id_for_distribution_column('members', member_id)"


@pytest.fixture
def remote_everywhere() -> Iterator[RemoteCommands]:
    """Record Citus's log of remote commands on every connection any engine opens from now
    on (the hub's committer opens its own engine)."""
    recorder = RemoteCommands()

    event.listen(Engine, "connect", recorder.listen_on)
    try:
        yield recorder
    finally:
        event.remove(Engine, "connect", recorder.listen_on)


@pytest.fixture
def hub(citus_engine: Engine, remote_everywhere: RemoteCommands) -> Iterator[Hub]:  # noqa: F811
    """The hub, started once every connection records (its committer's engine included)."""
    hub = Hub(
        citus_engine,
        "127.0.0.1:0",
        programme=DEFAULT_PROGRAMME,
        identity_secret=identity_secret_from(os.environ),
    )
    hub.start()
    yield hub
    hub.stop(grace_seconds=0)


@pytest.fixture
def coffee(channel: grpc.Channel, citus_engine: Engine) -> PartnerClient:  # noqa: F811
    return PartnerClient(channel, citus_engine, "test-coffee")


def _transactions_of(engine: Engine, member_ids: list[str]) -> dict[int, set[int]]:
    """Each committing transaction (its coordinator xid) of the members' events, with the
    shards of the members it wrote."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT commit_xid, {SHARD_OF} FROM events WHERE member_id = ANY(:members)"),
            {"members": member_ids},
        ).all()
    shards_of: dict[int, set[int]] = defaultdict(set)
    for commit_xid, shard_id in rows:
        shards_of[int(commit_xid)].add(int(shard_id))
    return shards_of


def _events_per_transaction(engine: Engine, member_ids: list[str]) -> dict[int, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT commit_xid, count(*) FROM events WHERE member_id = ANY(:members)"
                " GROUP BY commit_xid"
            ),
            {"members": member_ids},
        ).all()
    return {int(commit_xid): int(count) for commit_xid, count in rows}


def test_concurrent_earns_and_burns_group_by_shard_and_never_commit_in_two_phases(
    citus_engine: Engine,  # noqa: F811
    remote_everywhere: RemoteCommands,
    coffee: PartnerClient,
) -> None:
    member_ids = [coffee.new_member() for _ in range(MEMBERS)]
    for member_id in member_ids:
        coffee.earn(member_id, 500_000)  # 1000 points: every burn below is covered
    with citus_engine.connect() as connection:
        shards = connection.execute(
            text(f"SELECT DISTINCT {SHARD_OF} FROM members WHERE member_id = ANY(:members)"),
            {"members": member_ids},
        ).all()
    assert len(shards) > 1, "the members live on several shards"
    before = _events_per_transaction(citus_engine, member_ids)
    calls = [(member_id, n) for n in range(CALLS_PER_MEMBER) for member_id in member_ids]

    def call(member_and_n: tuple[str, int]) -> str:
        member_id, n = member_and_n
        try:
            if n % 2:
                coffee.burn(member_id, 10)
                return "burned"
            coffee.earn(member_id, 5_000)
            return "earned"
        except grpc.RpcError as error:
            return failure_of(error).reason

    outcomes: list[str] = []
    with ThreadPoolExecutor(CALLERS) as pool:
        commands = remote_everywhere.during(lambda: outcomes.extend(pool.map(call, calls)))
    assert sorted(outcomes) == sorted(["earned", "burned"] * (len(calls) // 2))

    assert commands, "the calls went through the workers"
    prepared = [command for _, command in commands if "PREPARE TRANSACTION" in command]
    assert not prepared, f"two-phase commits: {prepared[:3]}"
    after = _events_per_transaction(citus_engine, member_ids)
    new_transactions = {xid: count for xid, count in after.items() if xid not in before}
    assert sum(new_transactions.values()) == len(calls), "one event per earn and burn"
    assert max(new_transactions.values()) > 1, "groups of several calls formed"
    shards_of = _transactions_of(citus_engine, member_ids)
    assert all(len(shards_of[xid]) == 1 for xid in new_transactions), "one shard per group"
    assert_ledger_sound(citus_engine)

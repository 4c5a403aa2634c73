"""On Citus, a merge of members on different shards moves the duplicate's rows to the
survivor's shard: its lots, links, identifiers and request ids (idempotency keys, which live
with their member), so that a retry naming the duplicate replays instead of applying twice.
Skipped unless the test database is a Citus coordinator (docs/scaling.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from coalition.identity import merge
from coalition.store import citus
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound
from tests.integration.test_ledger import earn, enroll, new_id, now

pytestmark = pytest.mark.citus

SHARD_OF = "SELECT get_shard_id_for_distribution_column('members', CAST(:member_id AS text))"
ROWS_OF = {
    "idempotency_keys": "SELECT COUNT(*) FROM idempotency_keys WHERE member_id = :member_id",
    "lots": "SELECT COUNT(*) FROM lots WHERE member_id = :member_id",
    "partner_links": "SELECT COUNT(*) FROM partner_links WHERE member_id = :member_id",
}


@pytest.fixture
def citus_engine(engine: Engine, database_url: str) -> Iterator[Engine]:
    if not database_url.startswith("postgresql"):
        pytest.skip("Citus is PostgreSQL")
    with engine.connect() as connection:
        if not citus.is_citus(connection):
            pytest.skip("the test database is not a Citus coordinator")
    yield engine


def _shard(engine: Engine, member_id: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(SHARD_OF), {"member_id": member_id}).scalar_one())


def _rows(engine: Engine, member_id: str) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.execute(text(query), {"member_id": member_id}).scalar_one())
            for table, query in ROWS_OF.items()
        }


def test_a_merge_across_shards_moves_the_duplicates_rows_and_request_ids(
    citus_engine: Engine,
) -> None:
    survivor = enroll(citus_engine)
    duplicate = enroll(citus_engine)
    while _shard(citus_engine, duplicate) == _shard(citus_engine, survivor):
        duplicate = enroll(citus_engine)
    request_id = new_id()
    first = earn(citus_engine, duplicate, 9_000, request_id=request_id)
    earn(citus_engine, survivor, 4_000)
    before = _rows(citus_engine, duplicate)
    assert before["idempotency_keys"] == 1 and before["lots"] == 1
    survivor_before = _rows(citus_engine, survivor)

    result = merge.merge_members(
        UnitOfWork(citus_engine), "ops", new_id(), survivor, duplicate, now()
    )

    assert result.points_moved == first.balance_points
    assert _rows(citus_engine, duplicate) == dict.fromkeys(ROWS_OF, 0)
    assert _rows(citus_engine, survivor) == {
        table: survivor_before[table] + before[table] for table in ROWS_OF
    }
    # The retry names the duplicate: its claim is found on the survivor's shard and replayed.
    retry = earn(citus_engine, duplicate, 9_000, request_id=request_id)
    assert retry.replayed
    assert retry.transaction.transaction_id == first.transaction.transaction_id
    assert_ledger_sound(citus_engine)

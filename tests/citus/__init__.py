"""Tests of the Citus layout, and what other tests use to know they run on Citus."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine

from coalition.store import citus

REQUEST_IDS_PER_MEMBER = (
    "on Citus request ids are unique per member, not per partner (docs/scaling.md, "
    "'Guarantees that change on Citus'): reuse for another member is not refused"
)
JOINS_ON_TRANSACTION_ID = (
    "the test's own check joins journal rows and postings or keys on transaction or request "
    "id alone, which Citus refuses (not co-located); the integrity proof checks the same "
    "on Citus (tests/citus)"
)


def skip_on_citus(engine: Engine, reason: str) -> None:
    """Skip the test when its database is a Citus coordinator, saying why."""
    with engine.connect() as connection:
        if citus.is_citus(connection):
            pytest.skip(reason)


def skip_on_citus_database(database_url: str, reason: str) -> None:
    """Skip the test when the database at `database_url` is a Citus coordinator."""
    if not database_url.startswith("postgresql"):
        return
    engine = create_engine(database_url)
    try:
        skip_on_citus(engine, reason)
    finally:
        engine.dispose()

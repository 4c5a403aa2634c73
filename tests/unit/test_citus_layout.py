"""Every table of the schema has a place in the Citus layout (store/citus.py): a table added
without one would be left a plain coordinator table, which Citus refuses to join with the
distributed ones."""

from __future__ import annotations

import pytest

from coalition.store import citus
from coalition.store.schema import metadata

pytestmark = pytest.mark.unit


def test_every_table_is_placed_once_in_the_citus_layout() -> None:
    placed = [*citus.REFERENCE_TABLES, *citus.DISTRIBUTED_TABLES, *citus.COORDINATOR_TABLES]
    assert len(placed) == len(set(placed)), "a table is placed twice"
    assert set(placed) == {table.name for table in metadata.sorted_tables}


def test_member_tables_carry_their_distribution_column() -> None:
    tables = metadata.tables
    for name, column in citus.DISTRIBUTED_TABLES.items():
        assert column in tables[name].c, f"{name} has no {column}"

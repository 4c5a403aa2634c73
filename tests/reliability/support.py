"""Reliability helpers: the suite's size knob and a row-count snapshot of every table.

COALITION_RELIABILITY_SOAK=1 turns the quick CI run into the documented longer soak: more
hypothesis examples per RPC, more clients and operations in the bank and fault tests.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine, text

from coalition.store.schema import metadata

SOAK = os.environ.get("COALITION_RELIABILITY_SOAK", "") not in ("", "0")


def scaled(quick: int, soak: int) -> int:
    return soak if SOAK else quick


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows of every table of the schema, counted by the database in one round trip."""
    tables = [table.name for table in metadata.sorted_tables]
    query = "SELECT " + ", ".join(f'(SELECT COUNT(*) FROM "{name}")' for name in tables)
    with engine.connect() as connection:
        counts = connection.execute(text(query)).one()
    return dict(zip(tables, (int(count) for count in counts), strict=True))

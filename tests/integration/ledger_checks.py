"""Ledger invariants, checked with set-based SQL straight against the tables."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import Connection, Engine, TextClause, text

from coalition.store.schema import metadata

INVARIANTS = {
    "a request id that kept a refusal applied nothing": """
        SELECT j.transaction_id FROM journal_transactions j
        JOIN idempotency_keys k ON k.member_id = j.member_id AND k.partner_id = j.partner_id
         AND k.request_id = j.request_id
        WHERE k.refusal IS NOT NULL
    """,
    "postings of a transaction sum to zero": """
        SELECT transaction_id FROM postings GROUP BY member_id, transaction_id
        HAVING SUM(points) <> 0
    """,
    "every transaction has postings": """
        SELECT j.transaction_id FROM journal_transactions j
        WHERE NOT EXISTS (SELECT 1 FROM postings p
                          WHERE p.member_id = j.member_id AND p.transaction_id = j.transaction_id)
    """,
    "member balance caches equal their postings": """
        SELECT a.account_id FROM member_accounts a
        LEFT JOIN (SELECT account_id, SUM(points) AS points FROM postings GROUP BY account_id) s
          ON s.account_id = a.account_id
        WHERE a.kind = 'member' AND a.balance_points <> COALESCE(s.points, 0)
    """,
    "lot remainders equal member balances": """
        SELECT a.account_id FROM member_accounts a
        LEFT JOIN (SELECT member_id, SUM(remaining_points) AS points FROM lots GROUP BY member_id) l
          ON l.member_id = a.member_id
        WHERE a.kind = 'member' AND a.balance_points <> COALESCE(l.points, 0)
    """,
    "journal member deltas equal member postings": """
        SELECT j.transaction_id FROM journal_transactions j
        JOIN postings p ON p.member_id = j.member_id AND p.transaction_id = j.transaction_id
         AND p.account_id = 'member:' || j.member_id
        GROUP BY j.member_id, j.transaction_id, j.points_delta
        HAVING SUM(p.points) <> j.points_delta
    """,
    "no balance was ever negative": """
        SELECT transaction_id FROM journal_transactions WHERE balance_points_after < 0
    """,
    "reversals never exceed their parent": """
        SELECT parent.transaction_id FROM journal_transactions parent
        JOIN (SELECT parent_transaction_id, SUM(points_delta) AS points
              FROM journal_transactions WHERE parent_transaction_id IS NOT NULL
              GROUP BY parent_transaction_id) children
          ON children.parent_transaction_id = parent.transaction_id
        WHERE ABS(children.points) > ABS(parent.points_delta)
    """,
    "each request id applied at most once": """
        SELECT partner_id, request_id FROM journal_transactions
        GROUP BY partner_id, request_id HAVING COUNT(*) > 1
    """,
}


def lock_waiters_query(connection: Connection) -> TextClause:
    """Sessions of this database waiting on a lock; on Citus those of every node (a request's
    lock waits are on the worker of its member's shard)."""
    activity = "pg_stat_activity"
    if connection.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")).first():
        activity = "citus_stat_activity"
    return text(
        f"SELECT COUNT(*) FROM {activity}"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )


def ledger_violations(engine: Engine) -> dict[str, list[object]]:
    """Each invariant's offending rows; empty lists when the ledger is sound."""
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(text(query))]
            for name, query in INVARIANTS.items()
        }


def assert_ledger_sound(engine: Engine) -> None:
    broken = {name: rows for name, rows in ledger_violations(engine).items() if rows}
    assert not broken, f"ledger invariants broken: {broken}"


def row_counts(engine: Engine, table_names: Iterable[str] | None = None) -> dict[str, int]:
    """Rows of every table of the schema (or of `table_names`), in one round trip.

    `idempotency_keys` counts applied requests only: a refusal writes nothing but its
    remembered answer under its request id (ledger/idempotency.py), which
    `remembered_refusals` shows.
    """
    names = list(table_names or (table.name for table in metadata.sorted_tables))
    counted = {
        name: "idempotency_keys WHERE refusal IS NULL" if name == "idempotency_keys" else name
        for name in names
    }
    query = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {counted[name]})" for name in names)
    with engine.connect() as connection:
        counts = connection.execute(text(query)).one()
    return dict(zip(names, (int(count) for count in counts), strict=True))


def remembered_refusals(engine: Engine) -> dict[tuple[str, str], str]:
    """(partner_id, request_id) -> reason of every refusal remembered under its request id."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT partner_id, request_id, refusal FROM idempotency_keys "
                "WHERE refusal IS NOT NULL"
            )
        ).all()
    return {(row[0], row[1]): json.loads(row[2])["reason"] for row in rows}

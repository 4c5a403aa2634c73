"""Ledger invariants, checked with set-based SQL after a run (as tests/integration checks)."""

from __future__ import annotations

from sqlalchemy import Engine, text

INVARIANTS = {
    "postings of a transaction sum to zero": """
        SELECT transaction_id FROM postings GROUP BY transaction_id HAVING SUM(points) <> 0
    """,
    "every transaction has postings": """
        SELECT j.transaction_id FROM journal_transactions j
        WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.transaction_id = j.transaction_id)
    """,
    "member balance caches equal their postings": """
        SELECT a.account_id FROM accounts a
        LEFT JOIN (SELECT account_id, SUM(points) AS points FROM postings GROUP BY account_id) s
          ON s.account_id = a.account_id
        WHERE a.kind = 'member' AND a.balance_points <> COALESCE(s.points, 0)
    """,
    "lot remainders equal member balances": """
        SELECT a.account_id FROM accounts a
        LEFT JOIN (SELECT member_id, SUM(remaining_points) AS points FROM lots GROUP BY member_id) l
          ON l.member_id = a.member_id
        WHERE a.kind = 'member' AND a.balance_points <> COALESCE(l.points, 0)
    """,
    "no balance was ever negative": """
        SELECT transaction_id FROM journal_transactions WHERE balance_points_after < 0
    """,
    "reversals never exceed their parent": """
        SELECT parent.transaction_id FROM journal_transactions parent
        JOIN journal_transactions child ON child.parent_transaction_id = parent.transaction_id
        GROUP BY parent.transaction_id, parent.points_delta
        HAVING ABS(SUM(child.points_delta)) > ABS(parent.points_delta)
    """,
    "each request id applied at most once": """
        SELECT partner_id, request_id FROM journal_transactions
        GROUP BY partner_id, request_id HAVING COUNT(*) > 1
    """,
    "every applied request id records its transaction": """
        SELECT j.transaction_id FROM journal_transactions j
        JOIN idempotency_keys k ON k.partner_id = j.partner_id AND k.request_id = j.request_id
        WHERE k.result_id IS NULL OR k.result_id <> CAST(j.transaction_id AS TEXT)
    """,
}
VIOLATIONS_SHOWN_MAX = 10


def ledger_violations(engine: Engine) -> dict[str, int]:
    """The number of offending rows of each invariant (all zero when the ledger is sound)."""
    with engine.connect() as connection:
        return {
            name: len(connection.execute(text(query)).fetchmany(VIOLATIONS_SHOWN_MAX))
            for name, query in INVARIANTS.items()
        }

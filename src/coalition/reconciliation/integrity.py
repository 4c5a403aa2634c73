"""The ledger integrity proof: every invariant of the ledger, one set-based query each.

Each check is an inner query yielding one row per subject (a transaction, an account) with
`broken` = 1 when the invariant fails for it; the proof counts subjects and broken ones in the
database, and fetches a few broken subjects only to name them. Transaction-scoped checks
cover the window (commit time, `create_time`); state checks (balance caches, lots) always
cover the whole ledger, since the current state is what they prove.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import TextClause, bindparam, text

from coalition.domain.hub_partner import HUB_PARTNER_ID
from coalition.reconciliation import statements
from coalition.reconciliation.checks import CheckResult
from coalition.store.schema import UtcDateTime
from coalition.store.unit_of_work import UnitOfWork

WINDOW_START_DEFAULT = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW_END_DEFAULT = datetime(9999, 12, 31, tzinfo=UTC)
SAMPLE_SUBJECTS_MAX = 5
# Kinds whose request ids are claimed in idempotency_keys with the kind as the operation name
# and the transaction id as the result (operations/points.py), when a partner asked for them:
# hub-initiated transactions (domain/hub_partner.py) have no key, their `hub/` request id is
# unique under the hub's pseudo-partner by the journal's own constraint.
KEYED_KINDS = ("earn", "burn", "reverse")


@dataclass(frozen=True)
class LedgerCheck:
    name: str
    description: str
    subjects_query: str  # yields (subject, broken), :window_start/:window_end bound


_IN_WINDOW = "j.create_time >= :window_start AND j.create_time < :window_end"

LEDGER_CHECKS = (
    LedgerCheck(
        "postings_sum_to_zero",
        "every transaction has postings and they sum to zero",
        f"""
        SELECT CAST(j.transaction_id AS VARCHAR(20)) AS subject,
               CASE WHEN COUNT(p.posting_id) = 0 OR SUM(p.points) <> 0 THEN 1 ELSE 0 END
                 AS broken
        FROM journal_transactions j
        LEFT JOIN postings p
          ON p.member_id = j.member_id AND p.transaction_id = j.transaction_id
        WHERE {_IN_WINDOW}
        GROUP BY j.member_id, j.transaction_id
        """,
    ),
    LedgerCheck(
        "member_deltas_match_postings",
        "each transaction's points_delta equals its postings on the member's account",
        f"""
        SELECT CAST(j.transaction_id AS VARCHAR(20)) AS subject,
               CASE WHEN COALESCE(SUM(p.points), 0) <> j.points_delta THEN 1 ELSE 0 END
                 AS broken
        FROM journal_transactions j
        LEFT JOIN postings p
          ON p.member_id = j.member_id AND p.transaction_id = j.transaction_id
          AND p.account_id = 'member:' || j.member_id
        WHERE {_IN_WINDOW}
        GROUP BY j.member_id, j.transaction_id, j.points_delta
        """,
    ),
    LedgerCheck(
        "balance_caches_match_postings",
        "every member balance cache equals the sum of its postings (whole ledger)",
        """
        SELECT a.account_id AS subject,
               CASE WHEN a.balance_points IS NULL OR a.balance_points <> COALESCE(s.points, 0)
                    THEN 1 ELSE 0 END AS broken
        FROM member_accounts a
        LEFT JOIN (SELECT account_id, SUM(points) AS points FROM postings GROUP BY account_id) s
          ON s.account_id = a.account_id
        WHERE a.kind = 'member'
        """,
    ),
    LedgerCheck(
        "postings_name_accounts",
        "every posting names an account of its member or a partner or coalition account",
        f"""
        SELECT CAST(p.posting_id AS VARCHAR(20)) AS subject,
               CASE WHEN m.account_id IS NULL AND a.account_id IS NULL THEN 1 ELSE 0 END
                 AS broken
        FROM journal_transactions j
        JOIN postings p ON p.member_id = j.member_id AND p.transaction_id = j.transaction_id
        LEFT JOIN (SELECT account_id FROM member_accounts) m ON m.account_id = p.account_id
        LEFT JOIN accounts a ON a.account_id = p.account_id
        WHERE {_IN_WINDOW}
        """,
    ),
    LedgerCheck(
        "lot_remainders_match_balances",
        "every member's unspent lot points equal its balance by postings (whole ledger)",
        """
        SELECT a.account_id AS subject,
               CASE WHEN COALESCE(l.points, 0) <> COALESCE(s.points, 0) THEN 1 ELSE 0 END
                 AS broken
        FROM member_accounts a
        LEFT JOIN (SELECT member_id, SUM(remaining_points) AS points FROM lots
                   GROUP BY member_id) l ON l.member_id = a.member_id
        LEFT JOIN (SELECT account_id, SUM(points) AS points FROM postings GROUP BY account_id) s
          ON s.account_id = a.account_id
        WHERE a.kind = 'member'
        """,
    ),
    LedgerCheck(
        "balances_never_negative",
        "replayed in order, each member's balance after every transaction is the one before "
        "plus its delta, and never negative",
        f"""
        SELECT CAST(h.transaction_id AS VARCHAR(20)) AS subject,
               CASE WHEN h.balance_points_after < 0
                      OR h.balance_points_after <> h.balance_points_before + h.points_delta
                    THEN 1 ELSE 0 END AS broken
        FROM (SELECT j.transaction_id, j.create_time, j.points_delta, j.balance_points_after,
                     COALESCE(LAG(j.balance_points_after) OVER (
                       PARTITION BY j.member_id ORDER BY j.transaction_id), 0)
                       AS balance_points_before
              FROM journal_transactions j) h
        WHERE {_IN_WINDOW.replace("j.", "h.")}
        """,
    ),
    LedgerCheck(
        "idempotency_keys_map_to_one_transaction",
        "each applied request id's key, kept with its member, names exactly its own transaction",
        f"""
        SELECT CAST(j.transaction_id AS VARCHAR(20)) AS subject,
               CASE WHEN k.result_id IS NULL
                      OR k.operation <> j.kind
                      OR k.result_id <> CAST(j.transaction_id AS VARCHAR(20))
                    THEN 1 ELSE 0 END AS broken
        FROM journal_transactions j
        LEFT JOIN idempotency_keys k
          ON k.member_id = j.member_id AND k.partner_id = j.partner_id
          AND k.request_id = j.request_id
        WHERE j.kind IN ({", ".join(repr(kind) for kind in KEYED_KINDS)})
          AND j.partner_id <> '{HUB_PARTNER_ID}' AND {_IN_WINDOW}
        """,
    ),
)


@dataclass(frozen=True)
class IntegrityReport:
    window_start: datetime
    window_end: datetime
    results: tuple[CheckResult, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if result.status == "failed")

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if result.status == "skipped")


def prove(
    uow: UnitOfWork,
    window_start: datetime | None,
    window_end: datetime | None,
    on_result: Callable[[CheckResult], None],
    before_check: Callable[[], None] = lambda: None,
) -> IntegrityReport:
    """Run every check in one read-only snapshot; `on_result` hears each as it finishes."""
    start = window_start or WINDOW_START_DEFAULT
    end = window_end or WINDOW_END_DEFAULT
    results: list[CheckResult] = []
    with uow:
        if uow.dialect_name == "postgresql":
            # One snapshot for all checks: each is judged against the same ledger state.
            uow.connection.execute(
                text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            )
        for check in LEDGER_CHECKS:
            before_check()
            result = run_check(uow, check, start, end)
            results.append(result)
            on_result(result)
        for result in statements.statement_checks(uow, start, end):
            results.append(result)
            on_result(result)
    return IntegrityReport(start, end, tuple(results))


def run_check(uow: UnitOfWork, check: LedgerCheck, start: datetime, end: datetime) -> CheckResult:
    counts = _bound(f"SELECT COUNT(*), COALESCE(SUM(t.broken), 0) FROM ({check.subjects_query}) t")
    checked, broken = uow.connection.execute(
        counts, {"window_start": start, "window_end": end}
    ).one()
    samples: tuple[str, ...] = ()
    if broken:
        sample = _bound(
            f"SELECT t.subject FROM ({check.subjects_query}) t WHERE t.broken = 1 "
            f"ORDER BY t.subject LIMIT {SAMPLE_SUBJECTS_MAX}"
        )
        samples = tuple(
            str(subject)
            for subject in uow.connection.execute(
                sample, {"window_start": start, "window_end": end}
            ).scalars()
        )
    return CheckResult(
        name=check.name,
        description=check.description,
        status="failed" if broken else "passed",
        checked=int(checked),
        failed=int(broken),
        samples=samples,
    )


def _bound(sql: str) -> TextClause:
    """The query with its window parameters typed, so SQLite compares its own UTC text."""
    if ":window_start" not in sql:
        return text(sql)
    return text(sql).bindparams(
        bindparam("window_start", type_=UtcDateTime), bindparam("window_end", type_=UtcDateTime)
    )

"""Ledger invariants, checked with plain SQL on a database a command left behind.

Independent of coalition's own integrity code on purpose: the tests should not trust the
code they check.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select

from coalition.ledger.accounts import MEMBER
from coalition.store.schema import journal_transactions, lots, member_accounts, members, postings
from tests.process.commands import database_engine

VIOLATIONS_SHOWN_MAX = 20


@dataclass(frozen=True)
class LedgerSize:
    members: int
    transactions: int
    postings: int
    points_outstanding: int


def ledger_size(database_url: str) -> LedgerSize:
    with database_engine(database_url) as engine, engine.connect() as connection:
        return LedgerSize(
            members=_count(connection, members),
            transactions=_count(connection, journal_transactions),
            postings=_count(connection, postings),
            points_outstanding=int(
                connection.execute(
                    select(func.coalesce(func.sum(member_accounts.c.balance_points), 0)).where(
                        member_accounts.c.kind == MEMBER
                    )
                ).scalar_one()
            ),
        )


def ledger_violations(database_url: str) -> list[str]:
    """Every broken invariant, described; empty when the ledger is healthy."""
    with database_engine(database_url) as engine, engine.connect() as connection:
        checks = (
            _unbalanced_transactions,
            _transactions_without_double_entry,
            _member_postings_differing_from_delta,
            _balance_caches_differing_from_postings,
            _lots_differing_from_balances,
            _negative_balances,
        )
        violations = [violation for check in checks for violation in check(connection)]
    return violations[:VIOLATIONS_SHOWN_MAX]


def _count(connection: Connection, table: object) -> int:
    return int(connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _unbalanced_transactions(connection: Connection) -> list[str]:
    total = func.sum(postings.c.points)
    rows = connection.execute(
        select(postings.c.transaction_id, total)
        .group_by(postings.c.transaction_id)
        .having(total != 0)
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    return [f"transaction {tid}: postings sum to {points}, not 0" for tid, points in rows]


def _transactions_without_double_entry(connection: Connection) -> list[str]:
    posting_count = func.count(postings.c.posting_id)
    rows = connection.execute(
        select(journal_transactions.c.transaction_id, posting_count)
        .outerjoin(postings, postings.c.transaction_id == journal_transactions.c.transaction_id)
        .group_by(journal_transactions.c.transaction_id)
        .having(posting_count < 2)
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    return [f"transaction {tid}: {count} posting(s), not a double entry" for tid, count in rows]


def _member_postings_differing_from_delta(connection: Connection) -> list[str]:
    member_points = (
        select(postings.c.transaction_id, func.sum(postings.c.points).label("points"))
        .join(member_accounts, member_accounts.c.account_id == postings.c.account_id)
        .where(member_accounts.c.kind == MEMBER)
        .group_by(postings.c.transaction_id)
        .subquery()
    )
    member_total = func.coalesce(member_points.c.points, 0)
    rows = connection.execute(
        select(
            journal_transactions.c.transaction_id, journal_transactions.c.points_delta, member_total
        )
        .outerjoin(
            member_points, member_points.c.transaction_id == journal_transactions.c.transaction_id
        )
        .where(journal_transactions.c.points_delta != member_total)
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    return [
        f"transaction {tid}: points_delta {delta} but the member's postings sum to {points}"
        for tid, delta, points in rows
    ]


def _balance_caches_differing_from_postings(connection: Connection) -> list[str]:
    posted = (
        select(postings.c.account_id, func.sum(postings.c.points).label("points"))
        .group_by(postings.c.account_id)
        .subquery()
    )
    posted_total = func.coalesce(posted.c.points, 0)
    rows = connection.execute(
        select(member_accounts.c.account_id, member_accounts.c.balance_points, posted_total)
        .outerjoin(posted, posted.c.account_id == member_accounts.c.account_id)
        .where(
            member_accounts.c.kind == MEMBER,
            or_(
                member_accounts.c.balance_points.is_(None),
                member_accounts.c.balance_points != posted_total,
            ),
        )
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    return [
        f"account {account}: balance cache {cached} but postings sum to {points}"
        for account, cached, points in rows
    ]


def _lots_differing_from_balances(connection: Connection) -> list[str]:
    remaining = (
        select(lots.c.member_id, func.sum(lots.c.remaining_points).label("points"))
        .group_by(lots.c.member_id)
        .subquery()
    )
    remaining_total = func.coalesce(remaining.c.points, 0)
    rows = connection.execute(
        select(member_accounts.c.member_id, member_accounts.c.balance_points, remaining_total)
        .outerjoin(remaining, remaining.c.member_id == member_accounts.c.member_id)
        .where(
            member_accounts.c.kind == MEMBER, member_accounts.c.balance_points != remaining_total
        )
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    orphans = connection.execute(
        select(remaining.c.member_id, remaining.c.points)
        .outerjoin(
            member_accounts,
            and_(
                member_accounts.c.member_id == remaining.c.member_id,
                member_accounts.c.kind == MEMBER,
            ),
        )
        .where(member_accounts.c.account_id.is_(None), remaining.c.points != 0)
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    return [
        f"member {member}: balance {balance} but its lots hold {points} remaining points"
        for member, balance, points in rows
    ] + [
        f"member {member}: lots hold {points} points but it has no account"
        for member, points in orphans
    ]


def _negative_balances(connection: Connection) -> list[str]:
    transactions = connection.execute(
        select(journal_transactions.c.transaction_id, journal_transactions.c.balance_points_after)
        .where(journal_transactions.c.balance_points_after < 0)
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    caches = connection.execute(
        select(member_accounts.c.account_id, member_accounts.c.balance_points)
        .where(member_accounts.c.balance_points < 0)
        .limit(VIOLATIONS_SHOWN_MAX)
    ).all()
    return [
        f"transaction {tid}: balance_points_after {after} < 0" for tid, after in transactions
    ] + [f"account {account}: balance cache {balance} < 0" for account, balance in caches]

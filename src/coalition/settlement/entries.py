"""The set-based SQL of settlement: claim a partner's unsettled entries, total them, stream them.

Nothing here loads a statement's entries into memory: claiming is one INSERT ... SELECT,
totals are one GROUP BY, and the entries come back through a server-side cursor in Merkle
order (ascending transaction id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    String,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.orm import aliased

from coalition.settlement.format import (
    EXPIRED,
    ISSUED,
    ISSUED_REVERSED,
    OTHER,
    POINT_CATEGORIES,
    REDEEMED,
    REDEEMED_REVERSED,
    REDEEMING_KINDS,
    Entry,
)
from coalition.store.schema import accounts, journal_transactions, postings, settlement_entries
from coalition.store.unit_of_work import UnitOfWork

# Rows fetched per round trip while streaming; bounds the memory of a statement of any size.
STREAM_BATCH_ROWS = 5_000
CLAIM_WORK_MEMORY_MIB = 128

_parent = aliased(journal_transactions, name="parent")


def claim_unsettled(
    uow: UnitOfWork, partner_id: str, statement_id: str, period_end_time: datetime
) -> None:
    """Record every transaction that posts to the partner's accounts, committed before the
    period's end and in none of its statements yet, as an entry of `statement_id`.

    The primary key (partner_id, transaction_id) makes a second claim of an entry fail
    instead of counting it twice, whatever happens to the locks upstream.
    """
    entry = settlement_entries.c
    partner_accounts = select(accounts.c.account_id).where(accounts.c.partner_id == partner_id)
    already_settled: ColumnElement[bool] = exists().where(
        entry.partner_id == partner_id, entry.transaction_id == postings.c.transaction_id
    )
    if uow.is_citus:
        # Citus cannot correlate the member-distributed postings with the coordinator's
        # entries: the partner's settled ids are read once and sent to every shard as an
        # intermediate result (docs/scaling.md states the cost).
        already_settled = postings.c.transaction_id.in_(
            select(entry.transaction_id).where(entry.partner_id == partner_id)
        )
    unsettled = (
        select(
            literal(partner_id, String),
            postings.c.transaction_id,
            literal(statement_id, String),
            func.sum(postings.c.points),
        )
        .where(postings.c.account_id.in_(partner_accounts.scalar_subquery()))
        .where(postings.c.create_time < period_end_time)
        .where(~already_settled)
        .group_by(postings.c.transaction_id)
    )
    if uow.dialect_name == "postgresql":
        # Enough for the per-transaction GROUP BY of a million entries to stay in memory
        # instead of spilling to disk; bounded, and only for this transaction.
        uow.connection.execute(text(f"SET LOCAL work_mem = '{CLAIM_WORK_MEMORY_MIB}MB'"))
    uow.connection.execute(
        insert(settlement_entries).from_select(
            ["partner_id", "transaction_id", "statement_id", "points"], unsettled
        )
    )


def _category(parent: FromClause) -> ColumnElement[str]:
    """`format.category_of` in SQL."""
    kind, parent_kind = journal_transactions.c.kind, parent.c.kind
    return case(
        (kind == "earn", ISSUED),
        (kind.in_(REDEEMING_KINDS), REDEEMED),
        (and_(kind == "reverse", parent_kind == "earn"), ISSUED_REVERSED),
        (and_(kind == "reverse", parent_kind.in_(REDEEMING_KINDS)), REDEEMED_REVERSED),
        (kind == "expire", EXPIRED),
        else_=OTHER,
    )


@dataclass(frozen=True)
class _Entries:
    """Entries chosen by `chosen` with their journal rows and parents: `source` joins them,
    `entry` and `parent` name their columns, `where` is left for the outer statement."""

    source: FromClause
    entry: FromClause
    parent: FromClause
    where: ColumnElement[bool]


def _entries(uow: UnitOfWork, chosen: ColumnElement[bool]) -> _Entries:
    journal = journal_transactions.c
    if not uow.is_citus:
        source = settlement_entries.join(
            journal_transactions, journal.transaction_id == settlement_entries.c.transaction_id
        ).outerjoin(_parent, _parent.c.transaction_id == journal.parent_transaction_id)
        return _Entries(source, settlement_entries, _parent, chosen)
    # On Citus the entries (on the coordinator) and the parents (another member's after a
    # merge) cannot join the member-distributed journal directly: each is read first into an
    # intermediate result that every shard joins (docs/scaling.md states the cost).
    entry = select(settlement_entries).where(chosen).cte("entry").prefix_with("MATERIALIZED")
    parent_ids = (
        select(journal.parent_transaction_id)
        .select_from(
            journal_transactions.join(entry, entry.c.transaction_id == journal.transaction_id)
        )
        .where(journal.parent_transaction_id.is_not(None))
    )
    parent = (
        select(_parent.c.transaction_id, _parent.c.kind)
        .where(_parent.c.transaction_id.in_(parent_ids))
        .cte("parent")
        .prefix_with("MATERIALIZED")
    )
    source = journal_transactions.join(
        entry, entry.c.transaction_id == journal.transaction_id
    ).outerjoin(parent, parent.c.transaction_id == journal.parent_transaction_id)
    return _Entries(source, entry, parent, true())


def count(uow: UnitOfWork, statement_id: str) -> int:
    """How many entries the statement claimed (an index-only count)."""
    statement = select(func.count()).where(settlement_entries.c.statement_id == statement_id)
    return int(uow.connection.execute(statement).scalar_one())


def stream(uow: UnitOfWork, partner_id: str, statement_id: str) -> Iterator[Entry]:
    """The statement's entries in Merkle order, through a server-side cursor."""
    transaction = journal_transactions.c
    # Another partner's request ids are not this partner's business.
    own_request_id = case((transaction.partner_id == partner_id, transaction.request_id))
    chosen = _entries(uow, settlement_entries.c.statement_id == statement_id)
    statement = (
        select(
            transaction.transaction_id,
            transaction.kind,
            transaction.parent_transaction_id,
            chosen.parent.c.kind,
            transaction.occurred_at,
            transaction.create_time,
            transaction.member_id,
            own_request_id,
            transaction.rate_version_id,
            chosen.entry.c.points,
        )
        .select_from(chosen.source)
        .where(chosen.where)
        .order_by(chosen.entry.c.transaction_id)
    )
    # On the statement, not the connection: Connection.execution_options changes the
    # connection in place, and later INSERTs must not run through a server-side cursor.
    streamed = statement.execution_options(stream_results=True, yield_per=STREAM_BATCH_ROWS)
    for row in uow.connection.execute(streamed):
        yield Entry(
            transaction_id=int(row[0]),
            kind=row[1],
            parent_transaction_id=None if row[2] is None else int(row[2]),
            parent_kind=row[3],
            occurred_at=row[4],
            create_time=row[5],
            member_id=row[6],
            request_id=row[7],
            rate_version_id=row[8],
            partner_points=int(row[9]),
        )


def ledger_points(uow: UnitOfWork, statement_ids: Select[Any]) -> Select[Any]:
    """Per statement among `statement_ids`: one column per point category (`POINT_CATEGORIES`)
    holding the points its entries' transactions post to the partner's accounts *now*.

    Recomputed from postings, not from the `settlement_entries.points` snapshot the statement
    was built from, so that comparing them with the signed totals reveals a ledger changed
    after settlement. The categories come from `_category`, the SQL twin of `category_of`.
    """
    chosen = _entries(uow, settlement_entries.c.statement_id.in_(statement_ids.scalar_subquery()))
    entry, journal = chosen.entry.c, journal_transactions.c
    per_entry = (
        select(
            entry.statement_id,
            _category(chosen.parent).label("category"),
            func.sum(postings.c.points).label("points"),
        )
        .select_from(
            chosen.source.join(
                postings,
                and_(
                    postings.c.member_id == journal.member_id,
                    postings.c.transaction_id == journal.transaction_id,
                ),
            ).join(
                accounts,
                and_(
                    accounts.c.account_id == postings.c.account_id,
                    accounts.c.partner_id == entry.partner_id,
                ),
            )
        )
        .where(chosen.where)
        .group_by(entry.statement_id, entry.transaction_id, journal.kind, chosen.parent.c.kind)
        .subquery()
    )
    # An entry's points are |its signed partner points|, as `Tally.add_entry` counts them.
    by_category = [
        func.sum(
            case((per_entry.c.category == category, func.abs(per_entry.c.points)), else_=0)
        ).label(category)
        for category in POINT_CATEGORIES
    ]
    return select(per_entry.c.statement_id, *by_category).group_by(per_entry.c.statement_id)

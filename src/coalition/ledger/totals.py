"""Per-partner totals, derived from the journal in one set-based query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import aliased

from coalition.store.schema import journal_transactions
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class PartnerTotals:
    partner_id: str
    transactions: int
    points_issued: int
    points_redeemed: int
    points_issued_reversed: int
    points_redeemed_reversed: int


def partner_totals(uow: UnitOfWork) -> list[PartnerTotals]:
    entry = journal_transactions
    # The parents first, then joined: on Citus a child and its parent may sit on different
    # members' shards (a reversal after a merge), which a direct self-join cannot reach.
    parents = aliased(journal_transactions)
    parent = (
        select(parents.c.transaction_id, parents.c.kind)
        .where(
            parents.c.transaction_id.in_(
                select(entry.c.parent_transaction_id).where(
                    entry.c.parent_transaction_id.is_not(None)
                )
            )
        )
        .cte("parent")
        .prefix_with("MATERIALIZED")
    )
    kind = func.coalesce(parent.c.kind + "_reversed", entry.c.kind)

    def points_of(label: str) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((kind == label, func.abs(entry.c.points_delta)))), 0)

    statement = (
        select(
            entry.c.partner_id,
            func.count(),
            points_of("earn"),
            points_of("burn"),
            points_of("earn_reversed"),
            points_of("burn_reversed"),
        )
        .outerjoin(parent, parent.c.transaction_id == entry.c.parent_transaction_id)
        .group_by(entry.c.partner_id)
        .order_by(entry.c.partner_id)
    )
    with uow:
        return [
            PartnerTotals(*(row[0], *map(int, row[1:])))
            for row in uow.connection.execute(statement)
        ]

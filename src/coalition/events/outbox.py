"""Writing events, always in the same database transaction as the change they report.

Each event goes to one partner. A ledger transaction's event goes to the partner the
transaction belongs to (for an expiry: the partner that issued the lot). A tier change goes to
every partner linked to the member, and to the partner whose earn caused it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, insert, literal, literal_column, select

from coalition.store.schema import events, partner_links
from coalition.store.unit_of_work import UnitOfWork


def commit_xid(uow: UnitOfWork) -> ColumnElement[int]:
    """The writing transaction's id on PostgreSQL (see events table); 0 on SQLite."""
    if uow.dialect_name == "postgresql":
        return literal_column("pg_current_xact_id()::text::bigint")
    return literal(0)


def record_tier_change_events(
    uow: UnitOfWork,
    *,
    tier_change_id: int,
    member_id: str,
    also_partner_ids: Iterable[str],
    now: datetime,
) -> None:
    linked = uow.connection.execute(
        select(partner_links.c.partner_id).where(partner_links.c.member_id == member_id).distinct()
    ).scalars()
    recipients = sorted(set(linked) | set(also_partner_ids))
    for partner_id in recipients:
        uow.connection.execute(
            insert(events).values(
                partner_id=partner_id,
                commit_xid=commit_xid(uow),
                kind="tier_changed",
                member_id=member_id,
                tier_change_id=tier_change_id,
                create_time=now,
            )
        )

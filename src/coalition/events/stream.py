"""Reading a partner's events after a cursor, never skipping one that commits late.

The cursor is the pair (commit_xid, event_id) of the last event delivered, shown to partners
as the opaque text `<commit_xid>-<event_id>`. Event ids come from a sequence, so on PostgreSQL
a transaction can commit after another that took a larger id; a reader ordering by id alone
would move past the smaller id and never see it. Instead each read first computes a gate: the
oldest transaction id still running in this database (from pg_stat_activity, freshly read),
or the next unassigned id when none runs. It then returns, in (commit_xid, event_id) order,
only events written by transactions older than the gate: all of those have finished, and
every transaction that could still add an event at or below the cursor is at or past the gate,
so resuming from any cursor delivers each event exactly once. Every way the gate can be wrong
makes it lower (stale statistics, a transaction starting meanwhile), which only delays events.

The gate is per database, not per cluster, so a long transaction elsewhere on the server does
not hold streams back; a long transaction of the hub's own database does, for its duration
(keep `idle_in_transaction_session_timeout` set). It needs every hub process to connect as one
role (pg_stat_activity shows another role's transaction ids only to pg_read_all_stats).

SQLite runs one writer at a time, so commit order is id order there and commit_xid is 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, text, tuple_

from coalition.store.schema import events, tier_changes
from coalition.store.unit_of_work import UnitOfWork

CURSOR_PATTERN = re.compile(r"(\d{1,19})-(\d{1,19})")
CURSOR_PART_MAX = 2**63 - 1  # both parts are BIGINT columns; 19 digits reach beyond them
EVENTS_PER_READ_MAX = 500


@dataclass(frozen=True, order=True)
class Cursor:
    commit_xid: int
    event_id: int

    def text(self) -> str:
        return f"{self.commit_xid}-{self.event_id}"


START = Cursor(-1, 0)  # before every event


def parse_cursor(text: str) -> Cursor | None:
    """The cursor of `text` ('' is the start), or None when it is not a cursor."""
    if not text:
        return START
    match = CURSOR_PATTERN.fullmatch(text)
    if match is None:
        return None
    commit_xid, event_id = int(match.group(1)), int(match.group(2))
    if commit_xid > CURSOR_PART_MAX or event_id > CURSOR_PART_MAX:
        return None
    return Cursor(commit_xid, event_id)


@dataclass(frozen=True)
class Event:
    cursor: Cursor
    kind: str
    member_id: str
    create_time: datetime
    transaction_id: int | None
    points_delta: int | None
    balance_points_after: int | None
    tier_id_before: str | None
    tier_id_after: str | None


def read_events(uow: UnitOfWork, partner_id: str, after: Cursor, limit: int) -> list[Event]:
    """Up to `limit` of the partner's events after `after`, oldest first; only this
    partner's rows are ever read."""
    assert 0 < limit <= EVENTS_PER_READ_MAX
    statement = (
        select(events, tier_changes.c.tier_id_before, tier_changes.c.tier_id_after)
        # On the member too: a tier change and its events are the member's (co-located on Citus).
        .outerjoin(
            tier_changes,
            (tier_changes.c.member_id == events.c.member_id)
            & (tier_changes.c.tier_change_id == events.c.tier_change_id),
        )
        .where(
            events.c.partner_id == partner_id,
            tuple_(events.c.commit_xid, events.c.event_id)
            > tuple_(after.commit_xid, after.event_id),
        )
        .order_by(events.c.commit_xid, events.c.event_id)
        .limit(limit)
    )
    if uow.dialect_name == "postgresql":
        # The gate is read in statements before this one: whatever finished before it is
        # visible to this statement's snapshot (READ COMMITTED takes one per statement).
        statement = statement.where(events.c.commit_xid < _oldest_running_xid(uow))
    return [_event(row) for row in uow.connection.execute(statement)]


# pg_stat_activity shows 32-bit xids; commit_xid is the 64-bit xid8. A running xid is less
# than 2^31 behind the next xid, which places it in its epoch exactly.
_OLDEST_RUNNING_XID = text(
    """
    WITH next AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xid8)
    SELECT COALESCE(
        MIN(next.xid8 - ((next.xid8 % 4294967296 - a.backend_xid::text::bigint
                          + 4294967296) % 4294967296)),
        MAX(next.xid8))
    FROM next
    LEFT JOIN pg_stat_activity a
      ON a.datname = current_database() AND a.backend_xid IS NOT NULL
    """
)


def _oldest_running_xid(uow: UnitOfWork) -> int:
    # Backend statistics are cached per transaction: read them fresh.
    uow.connection.execute(text("SELECT pg_stat_clear_snapshot()"))
    return int(uow.connection.execute(_OLDEST_RUNNING_XID).scalar_one())


def _event(row: Row[Any]) -> Event:
    return Event(
        cursor=Cursor(row.commit_xid, row.event_id),
        kind=row.kind,
        member_id=row.member_id,
        create_time=row.create_time,
        transaction_id=row.transaction_id,
        points_delta=row.points_delta,
        balance_points_after=row.balance_points_after,
        tier_id_before=row.tier_id_before,
        tier_id_after=row.tier_id_after,
    )

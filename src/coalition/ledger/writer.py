"""The one ledger writer: N fully computed journal entries in a constant number of statements.

Every path that moves points (earn, burn, reverse, holds, expiry, merges, referral rewards,
batch earn) hands its entries here. For a list of entries of any kinds the writer issues one
statement per table, whatever N is:

1. move the balance cache of every member account the entries post to (guarded: a balance
   never goes below zero, even if a caller forgot the member lock);
2. insert the journal rows;
3. insert their postings, each carrying the transaction's `member_id`;
4. insert the lots the entries issue, the bonuses they record and the partners' events;
5. add the qualifying points of tiers, per member and month.

The statements are built once per dialect at import, never per request, and run on the
driver's own cursor: on PostgreSQL as arrays (`unnest`), which psycopg prepares after a few
uses; on SQLite as `executemany` (an embedded database has no round trips to save).

The caller holds the row locks of every member account it posts to (taken in account-id
order) and has checked the domain rules under them; the guard here is the last line, and a
debit it refuses raises INSUFFICIENT_POINTS for the whole list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from coalition.domain.errors import FailedPrecondition
from coalition.domain.tiers import calendar_month
from coalition.ledger.accounts import member_account_id
from coalition.store import driver
from coalition.store.driver import sqlite_value
from coalition.store.unit_of_work import UnitOfWork

MEMBER_ACCOUNT_PREFIX = member_account_id("")

EVENT_KIND_OF_TRANSACTION = {
    "earn": "earned",
    "burn": "burned",
    "reverse": "reversed",
    "expire": "expired",
    "hold": "held",
    "capture": "captured",
    "void": "voided",
    "merge": "merged",
}


@dataclass(frozen=True)
class Posting:
    account_id: str
    points: int


@dataclass(frozen=True)
class NewLot:
    """The lot an entry issues to its member: `points` of `issuer_partner_id`."""

    issuer_partner_id: str
    points: int
    expires_at: datetime | None  # None: never expires


@dataclass(frozen=True)
class Bonus:
    """An extra an earn's points include, and who funds it (None: the coalition)."""

    rule_id: str
    points: int
    funding_partner_id: str | None


@dataclass(frozen=True)
class JournalEntry:
    """A business operation to record: who, what, the balanced postings, and what else the
    same operation writes for its member (a lot, bonuses, qualifying points of tiers)."""

    kind: str  # one of schema.TRANSACTION_KINDS
    partner_id: str
    member_id: str
    request_id: str
    occurred_at: datetime
    postings: tuple[Posting, ...]
    rate_version_id: str | None = None
    parent_transaction_id: int | None = None
    amount_minor: int | None = None
    currency: str | None = None
    native_points: int | None = None
    partner_reference: str | None = None
    reason: str | None = None
    lot: NewLot | None = None
    bonuses: tuple[Bonus, ...] = ()
    # Points that count towards tiers in the month of `qualifying_month_of` (an earn: +, a
    # reversed earn: -); 0 counts nothing.
    qualifying_points: int = 0
    qualifying_month_of: datetime | None = None

    @property
    def member_points_delta(self) -> int:
        member_account = member_account_id(self.member_id)
        return sum(p.points for p in self.postings if p.account_id == member_account)

    def check(self) -> None:
        """The invariants of one entry, asserted before anything is written."""
        assert self.postings, "a transaction has postings"
        assert sum(p.points for p in self.postings) == 0, "postings must sum to zero"
        assert all(p.points != 0 for p in self.postings), "no empty postings"
        # A capture of all that a hold held moves only member_hold:<id> (ledger/holds.py).
        assert self.member_points_delta != 0 or self.kind == "capture", "the balance moves"
        assert self.lot is None or self.lot.points > 0, "a lot issues points"
        assert all(bonus.points > 0 for bonus in self.bonuses), "a bonus adds points"
        assert not self.qualifying_points or self.qualifying_month_of is not None


@dataclass(frozen=True)
class TransactionRecord:
    """A committed journal transaction, as callers see it."""

    transaction_id: int
    kind: str
    partner_id: str
    member_id: str
    points_delta: int
    balance_points_after: int
    occurred_at: datetime
    create_time: datetime
    request_id: str
    rate_version_id: str | None
    parent_transaction_id: int | None
    amount_minor: int | None
    currency: str | None
    native_points: int | None
    partner_reference: str | None
    reason: str | None
    points_reversed: int


def write(
    uow: UnitOfWork, entries: Sequence[JournalEntry], now: datetime
) -> list[TransactionRecord]:
    """Write `entries`, in order, and return their records (in the same order)."""
    assert entries, "something to write"
    for entry in entries:
        entry.check()
    statements = _STATEMENTS[uow.dialect_name]
    with driver.driver_errors(uow):
        return _write(statements, driver.cursor_of(uow), entries, now)


def _write(
    statements: _Statements, cursor: Any, entries: Sequence[JournalEntry], now: datetime
) -> list[TransactionRecord]:
    balances_after = _move_balances(statements, cursor, entries)
    rows = _journal_rows(entries, balances_after, now)
    transaction_ids = statements.insert_journal(cursor, rows)
    records = [
        TransactionRecord(transaction_id=transaction_id, points_reversed=0, **row)
        for transaction_id, row in zip(transaction_ids, rows, strict=True)
    ]
    statements.insert_postings(cursor, _posting_rows(entries, records), now)
    lot_rows = [
        (e.member_id, e.lot.issuer_partner_id, r.transaction_id, e.lot.points, e.lot.expires_at)
        for e, r in zip(entries, records, strict=True)
        if e.lot is not None
    ]
    if lot_rows:
        statements.insert_lots(cursor, lot_rows, now)
    bonus_rows = [
        (r.transaction_id, e.member_id, b.rule_id, b.points, b.funding_partner_id)
        for e, r in zip(entries, records, strict=True)
        for b in e.bonuses
    ]
    if bonus_rows:
        statements.insert_bonuses(cursor, bonus_rows)
    statements.insert_events(cursor, [_event_row(record) for record in records], now)
    qualifying_rows = _qualifying_rows(entries)
    if qualifying_rows:
        statements.add_qualifying_points(cursor, qualifying_rows)
    return records


def _move_balances(
    statements: _Statements, cursor: Any, entries: Sequence[JournalEntry]
) -> list[int]:
    """Move every member account the entries post to; return each entry's member balance
    right after it (entries of one member in one list see each other, in order)."""
    deltas: dict[str, int] = defaultdict(int)
    for entry in entries:
        deltas[member_account_id(entry.member_id)] += 0  # read back even when it nets to 0
        for posting in entry.postings:
            if posting.account_id.startswith(MEMBER_ACCOUNT_PREFIX):
                deltas[posting.account_id] += posting.points
    moved = statements.move_balances(cursor, sorted(deltas.items()))
    refused = sorted(set(deltas) - set(moved))
    if refused:
        member_id = refused[0].removeprefix(MEMBER_ACCOUNT_PREFIX)
        raise FailedPrecondition(
            "INSUFFICIENT_POINTS",
            f"member {member_id} has too few points for a debit of {-deltas[refused[0]]}",
            {"member_id": member_id, "points_requested": -deltas[refused[0]]},
        )
    # Walk back from the final balances to each entry's own balance after it.
    balance_before = {account: moved[account] - delta for account, delta in deltas.items()}
    assert all(balance >= 0 for balance in balance_before.values()), "negative balance cache"
    running = dict(balance_before)
    balances_after: list[int] = []
    for entry in entries:
        for posting in entry.postings:
            if posting.account_id in running:
                running[posting.account_id] += posting.points
                assert running[posting.account_id] >= 0, "a balance never goes negative"
        balances_after.append(running[member_account_id(entry.member_id)])
    return balances_after


def _journal_rows(
    entries: Sequence[JournalEntry], balances_after: list[int], now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "kind": entry.kind,
            "partner_id": entry.partner_id,
            "member_id": entry.member_id,
            "points_delta": entry.member_points_delta,
            "balance_points_after": balance_points_after,
            "occurred_at": entry.occurred_at,
            "create_time": now,
            "request_id": entry.request_id,
            "rate_version_id": entry.rate_version_id,
            "parent_transaction_id": entry.parent_transaction_id,
            "amount_minor": entry.amount_minor,
            "currency": entry.currency,
            "native_points": entry.native_points,
            "partner_reference": entry.partner_reference,
            "reason": entry.reason,
        }
        for entry, balance_points_after in zip(entries, balances_after, strict=True)
    ]


def _posting_rows(
    entries: Sequence[JournalEntry], records: Sequence[TransactionRecord]
) -> list[tuple[int, str, str, int]]:
    return [
        (record.transaction_id, entry.member_id, posting.account_id, posting.points)
        for entry, record in zip(entries, records, strict=True)
        for posting in entry.postings
    ]


def _event_row(record: TransactionRecord) -> tuple[str, str, str, int, int, int]:
    # The event goes to the partner the transaction belongs to (events/outbox.py).
    return (
        record.partner_id,
        EVENT_KIND_OF_TRANSACTION[record.kind],
        record.member_id,
        record.transaction_id,
        record.points_delta,
        record.balance_points_after,
    )


def _qualifying_rows(entries: Sequence[JournalEntry]) -> list[tuple[str, int, int]]:
    """Qualifying points per (member, month), summed: one upsert per row of the table."""
    points: dict[tuple[str, int], int] = defaultdict(int)
    for entry in entries:
        if entry.qualifying_points:
            assert entry.qualifying_month_of is not None
            month = calendar_month(entry.qualifying_month_of)
            points[(entry.member_id, month)] += entry.qualifying_points
    return [(member_id, month, delta) for (member_id, month), delta in sorted(points.items())]


# --- the statements of each dialect ---------------------------------------------------------

JOURNAL_COLUMNS = (
    "kind, partner_id, member_id, points_delta, balance_points_after, occurred_at, "
    "create_time, request_id, rate_version_id, parent_transaction_id, amount_minor, currency, "
    "native_points, partner_reference, reason"
)


class _Statements(Protocol):
    def move_balances(self, cursor: Any, deltas: list[tuple[str, int]]) -> dict[str, int]: ...

    def insert_journal(self, cursor: Any, rows: list[dict[str, Any]]) -> list[int]: ...

    def insert_postings(
        self, cursor: Any, rows: list[tuple[int, str, str, int]], now: datetime
    ) -> None: ...

    def insert_lots(
        self, cursor: Any, rows: list[tuple[str, str, int, int, datetime | None]], now: datetime
    ) -> None: ...

    def insert_bonuses(
        self, cursor: Any, rows: list[tuple[int, str, str, int, str | None]]
    ) -> None: ...

    def insert_events(
        self, cursor: Any, rows: list[tuple[str, str, str, int, int, int]], now: datetime
    ) -> None: ...

    def add_qualifying_points(self, cursor: Any, rows: list[tuple[str, int, int]]) -> None: ...


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column: the arrays an `unnest` takes."""
    return [[row[index] for row in rows] for index in range(width)]


class _PostgresStatements:
    MOVE_BALANCES = (
        "UPDATE accounts AS a SET balance_points = a.balance_points + m.delta"
        " FROM unnest(%s::text[], %s::bigint[]) AS m(account_id, delta)"
        " WHERE a.account_id = m.account_id AND a.balance_points + m.delta >= 0"
        " RETURNING a.account_id, a.balance_points"
    )
    INSERT_JOURNAL = (
        f"INSERT INTO journal_transactions ({JOURNAL_COLUMNS})"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],"
        " %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], %s::bigint[],"
        " %s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[])"
        " RETURNING transaction_id, partner_id, request_id"
    )
    INSERT_POSTINGS = (
        "INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)"
        " SELECT t, m, a, p, %s FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[])"
        " AS x(t, m, a, p)"
    )
    INSERT_LOTS = (
        "INSERT INTO lots (member_id, partner_id, transaction_id, points, remaining_points,"
        " expires_at, create_time)"
        " SELECT m, i, t, p, p, e, %s"
        " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::timestamptz[])"
        " AS x(m, i, t, p, e)"
    )
    INSERT_BONUSES = (
        "INSERT INTO earn_bonuses (transaction_id, member_id, rule_id, points, funding_partner_id)"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[], %s::text[])"
    )
    INSERT_EVENTS = (
        "INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id,"
        " points_delta, balance_points_after, create_time)"
        " SELECT p, pg_current_xact_id()::text::bigint, k, m, t, d, b, %s"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[],"
        " %s::bigint[]) WITH ORDINALITY AS x(p, k, m, t, d, b, n) ORDER BY n"
    )
    ADD_QUALIFYING_POINTS = (
        "INSERT INTO tier_qualifying_months (member_id, calendar_month, points)"
        " SELECT * FROM unnest(%s::text[], %s::integer[], %s::bigint[])"
        " ON CONFLICT (member_id, calendar_month)"
        " DO UPDATE SET points = tier_qualifying_months.points + excluded.points"
    )

    def move_balances(self, cursor: Any, deltas: list[tuple[str, int]]) -> dict[str, int]:
        cursor.execute(self.MOVE_BALANCES, _columns(deltas, 2))
        return dict(cursor.fetchall())

    def insert_journal(self, cursor: Any, rows: list[dict[str, Any]]) -> list[int]:
        columns = [[row[name] for row in rows] for name in JOURNAL_COLUMNS.split(", ")]
        cursor.execute(self.INSERT_JOURNAL, columns)
        # (partner, request id) is unique: it maps each returned id to its row.
        ids = {(partner_id, request_id): t for t, partner_id, request_id in cursor.fetchall()}
        return [ids[(row["partner_id"], row["request_id"])] for row in rows]

    def insert_postings(
        self, cursor: Any, rows: list[tuple[int, str, str, int]], now: datetime
    ) -> None:
        cursor.execute(self.INSERT_POSTINGS, [now, *_columns(rows, 4)])

    def insert_lots(
        self, cursor: Any, rows: list[tuple[str, str, int, int, datetime | None]], now: datetime
    ) -> None:
        cursor.execute(self.INSERT_LOTS, [now, *_columns(rows, 5)])

    def insert_bonuses(
        self, cursor: Any, rows: list[tuple[int, str, str, int, str | None]]
    ) -> None:
        cursor.execute(self.INSERT_BONUSES, _columns(rows, 5))

    def insert_events(
        self, cursor: Any, rows: list[tuple[str, str, str, int, int, int]], now: datetime
    ) -> None:
        cursor.execute(self.INSERT_EVENTS, [now, *_columns(rows, 6)])

    def add_qualifying_points(self, cursor: Any, rows: list[tuple[str, int, int]]) -> None:
        cursor.execute(self.ADD_QUALIFYING_POINTS, _columns(rows, 3))


class _SqliteStatements:
    MOVE_BALANCE = (
        "UPDATE accounts SET balance_points = balance_points + ?"
        " WHERE account_id = ? AND balance_points + ? >= 0 RETURNING balance_points"
    )
    INSERT_JOURNAL = (
        f"INSERT INTO journal_transactions ({JOURNAL_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING transaction_id"
    )
    INSERT_POSTINGS = (
        "INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    INSERT_LOTS = (
        "INSERT INTO lots (member_id, partner_id, transaction_id, points, remaining_points,"
        " expires_at, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    INSERT_BONUSES = (
        "INSERT INTO earn_bonuses (transaction_id, member_id, rule_id, points, funding_partner_id)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    # Writers commit one at a time on SQLite: every event's commit_xid is 0 (events table).
    INSERT_EVENTS = (
        "INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id,"
        " points_delta, balance_points_after, create_time) VALUES (?, 0, ?, ?, ?, ?, ?, ?)"
    )
    ADD_QUALIFYING_POINTS = (
        "INSERT INTO tier_qualifying_months (member_id, calendar_month, points) VALUES (?, ?, ?)"
        " ON CONFLICT (member_id, calendar_month)"
        " DO UPDATE SET points = tier_qualifying_months.points + excluded.points"
    )

    def move_balances(self, cursor: Any, deltas: list[tuple[str, int]]) -> dict[str, int]:
        moved: dict[str, int] = {}
        for account_id, delta in deltas:
            row = cursor.execute(self.MOVE_BALANCE, (delta, account_id, delta)).fetchone()
            if row is not None:
                moved[account_id] = row[0]
        return moved

    def insert_journal(self, cursor: Any, rows: list[dict[str, Any]]) -> list[int]:
        transaction_ids: list[int] = []
        for row in rows:
            values = [row[name] for name in JOURNAL_COLUMNS.split(", ")]
            values[5], values[6] = sqlite_value(values[5]), sqlite_value(values[6])
            transaction_ids.append(cursor.execute(self.INSERT_JOURNAL, values).fetchone()[0])
        return transaction_ids

    def insert_postings(
        self, cursor: Any, rows: list[tuple[int, str, str, int]], now: datetime
    ) -> None:
        cursor.executemany(self.INSERT_POSTINGS, [(*row, sqlite_value(now)) for row in rows])

    def insert_lots(
        self, cursor: Any, rows: list[tuple[str, str, int, int, datetime | None]], now: datetime
    ) -> None:
        cursor.executemany(
            self.INSERT_LOTS,
            [(m, i, t, p, p, sqlite_value(e), sqlite_value(now)) for m, i, t, p, e in rows],
        )

    def insert_bonuses(
        self, cursor: Any, rows: list[tuple[int, str, str, int, str | None]]
    ) -> None:
        cursor.executemany(self.INSERT_BONUSES, rows)

    def insert_events(
        self, cursor: Any, rows: list[tuple[str, str, str, int, int, int]], now: datetime
    ) -> None:
        cursor.executemany(self.INSERT_EVENTS, [(*row, sqlite_value(now)) for row in rows])

    def add_qualifying_points(self, cursor: Any, rows: list[tuple[str, int, int]]) -> None:
        cursor.executemany(self.ADD_QUALIFYING_POINTS, rows)


_STATEMENTS: dict[str, _Statements] = {
    "postgresql": _PostgresStatements(),
    "sqlite": _SqliteStatements(),
}

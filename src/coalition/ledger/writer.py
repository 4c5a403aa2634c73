"""The one ledger writer: N fully computed journal entries in a constant number of statements.

Every path that moves points (earn, burn, reverse, holds, expiry, merges, referral rewards,
batch earn) hands its entries here. For a list of entries of any kinds the writer issues one
statement per table, whatever N is:

1. move the balance cache of every member account the entries post to (guarded: a balance
   never goes below zero, even if a caller forgot the member lock);
2. insert the journal rows;
3. insert their postings, each carrying the transaction's `member_id`;
4. insert the lots the entries issue, and move the lots they spend or give back to (each
   move recorded in lot_consumptions; the lots' remainders guarded, never below zero);
5. insert the bonuses they record and the partners' events;
6. add the qualifying points of tiers, per member and month, and record the claims' results.

The statements are built once per dialect at import, never per request, and run on the
driver's own cursor: on PostgreSQL as arrays (`unnest`), which psycopg prepares after a few
uses; on SQLite as `executemany` (an embedded database has no round trips to save).

The caller holds the row locks of every member account it posts to (taken in account-id
order) and has checked the domain rules under them; the guards here are the last line, and
nothing is written when one refuses: a debit raises INSUFFICIENT_POINTS for the whole list, a
member merged into another raises `MembersMerged` (read after the caller's locks, with the
balances: a merge that committed while the caller waited for a lock closed that member's
account, and points posted to it would be stranded).
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from coalition.domain.errors import FailedPrecondition
from coalition.domain.tiers import calendar_month
from coalition.ledger.accounts import member_account_id
from coalition.store import driver
from coalition.store.arrays import TextArray, array_types_of
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
class LotMove:
    """Points an entry takes from a lot (> 0) or gives back to it (< 0), on behalf of the
    burn or hold `burn_transaction_id` (None: the entry itself) (ledger/lots.py plans them)."""

    lot_id: int
    points: int
    burn_transaction_id: int | None = None


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
    lot_moves: tuple[LotMove, ...] = ()
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
        assert all(move.points != 0 for move in self.lot_moves), "no empty lot moves"
        assert all(bonus.points > 0 for bonus in self.bonuses), "a bonus adds points"
        assert not self.qualifying_points or self.qualifying_month_of is not None


class MembersMerged(Exception):
    """Entries post to members merged into others; nothing was written. The caller refuses
    the requests of those members (`member_merged`) and writes the others."""

    def __init__(self, survivors: Mapping[str, str]) -> None:
        super().__init__(f"members merged meanwhile: {dict(survivors)}")
        self.survivors = dict(survivors)  # merged member id -> survivor member id


def member_merged(member_id: str, survivor_member_id: str) -> FailedPrecondition:
    """MEMBER_MERGED: the request named a member merged since; a retry resolves the survivor
    (so the refusal is never kept as the request's final answer)."""
    return FailedPrecondition(
        "MEMBER_MERGED",
        f"member {member_id} was merged into member {survivor_member_id}; retry with it",
        {"member_id": member_id, "survivor_member_id": survivor_member_id},
        retry_resolves=True,
    )


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
    uow: UnitOfWork,
    entries: Sequence[JournalEntry],
    now: datetime,
    results: Sequence[tuple[str, str] | None] = (),
) -> list[TransactionRecord]:
    """Write `entries`, in order, and return their records (in the same order).

    `results`, when given, names for each entry the claim (partner, request id) whose result
    is the entry's transaction (None: no claim), recorded in the same statements."""
    assert entries, "something to write"
    assert not results or len(results) == len(entries), "one claim or None per entry"
    for entry in entries:
        entry.check()
    statements = _STATEMENTS["citus" if driver.is_citus(uow) else uow.dialect_name]
    connection = uow.connection.connection.driver_connection
    deltas = _member_deltas(entries)
    with driver.driver_errors(uow):
        balances, transaction_ids, survivors = statements.prepare(
            connection, sorted(deltas), len(entries)
        )
        if survivors:
            raise MembersMerged(survivors)
        rows = _journal_rows(entries, _balances_after(entries, balances, deltas), now)
        plan = _Plan(entries, rows, sorted(deltas.items()), results, now)
        transaction_ids = statements.write(connection, plan, transaction_ids)
    return [
        TransactionRecord(transaction_id=transaction_id, points_reversed=0, **row)
        for transaction_id, row in zip(transaction_ids, rows, strict=True)
    ]


def _member_deltas(entries: Sequence[JournalEntry]) -> dict[str, int]:
    """Net points of every member account the entries post to (each entry's own included,
    even when it nets to 0: its balance after is read back)."""
    deltas: dict[str, int] = defaultdict(int)
    for entry in entries:
        deltas[member_account_id(entry.member_id)] += 0
        for posting in entry.postings:
            if posting.account_id.startswith(MEMBER_ACCOUNT_PREFIX):
                deltas[posting.account_id] += posting.points
    return deltas


def _balances_after(
    entries: Sequence[JournalEntry], balances: Mapping[str, int], deltas: Mapping[str, int]
) -> list[int]:
    """Each entry's member balance right after it, walking the entries in order from the
    balances read under the caller's locks; a debit they cannot cover is refused here, before
    anything is written (the guarded update repeats the check at the rows)."""
    assert set(balances) == set(deltas), "every member account posted to has its balance"
    assert all(balance >= 0 for balance in balances.values()), "negative balance cache"
    for account_id, delta in sorted(deltas.items()):
        if balances[account_id] + delta < 0:
            member_id = account_id.removeprefix(MEMBER_ACCOUNT_PREFIX)
            raise FailedPrecondition(
                "INSUFFICIENT_POINTS",
                f"member {member_id} has too few points for a debit of {-delta}",
                {"member_id": member_id, "points_requested": -delta},
            )
    running = dict(balances)
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


@dataclass(frozen=True)
class _Plan:
    """Everything one call writes, as rows; the rows that name a transaction are built once
    its id is known (`rows_of`)."""

    entries: Sequence[JournalEntry]
    journal_rows: list[dict[str, Any]]
    deltas: list[tuple[str, int]]  # by account id
    results: Sequence[tuple[str, str] | None]
    now: datetime

    def rows_of(self, transaction_ids: Sequence[int]) -> _Rows:
        pairs = list(zip(self.entries, transaction_ids, strict=True))
        return _Rows(
            postings=[
                (t, e.member_id, posting.account_id, posting.points)
                for e, t in pairs
                for posting in e.postings
            ],
            lots=[
                (e.member_id, e.lot.issuer_partner_id, t, e.lot.points, e.lot.expires_at)
                for e, t in pairs
                if e.lot is not None
            ],
            lot_moves=[
                (
                    t,
                    e.member_id,
                    t if m.burn_transaction_id is None else m.burn_transaction_id,
                    m.lot_id,
                    m.points,
                )
                for e, t in pairs
                for m in e.lot_moves
            ],
            lot_deltas=_lot_deltas(self.entries),
            bonuses=[
                (t, e.member_id, b.rule_id, b.points, b.funding_partner_id)
                for e, t in pairs
                for b in e.bonuses
            ],
            qualifying=_qualifying_rows(self.entries),
            # A claim lives with the member the entry writes to (ledger/idempotency.py).
            results=[
                (e.member_id, claim[0], claim[1], str(t))
                for e, claim, t in zip(self.entries, self.results, transaction_ids, strict=True)
                if claim is not None
            ],
        )

    def events_of(
        self, transaction_ids: Sequence[int]
    ) -> list[tuple[str, str, str, int, int, int]]:
        """An event per entry, to the partner its transaction belongs to (events/outbox.py);
        PostgreSQL's statement builds them from the journal's own arrays instead."""
        return [
            (
                row["partner_id"],
                EVENT_KIND_OF_TRANSACTION[row["kind"]],
                row["member_id"],
                t,
                row["points_delta"],
                row["balance_points_after"],
            )
            for row, t in zip(self.journal_rows, transaction_ids, strict=True)
        ]


@dataclass(frozen=True)
class _Rows:
    postings: list[tuple[int, str, str, int]]
    lots: list[tuple[str, str, int, int, datetime | None]]
    lot_moves: list[tuple[int, str, int, int, int]]  # transaction, member, burn, lot, points
    lot_deltas: list[tuple[int, str, int]]  # lot, member, points taken in all (< 0: given)
    bonuses: list[tuple[int, str, str, int, str | None]]
    qualifying: list[tuple[str, int, int]]
    results: list[tuple[str, str, str, str]]  # member, partner, request id, transaction id


def _lot_deltas(entries: Sequence[JournalEntry]) -> list[tuple[int, str, int]]:
    """Points taken from each lot moved, summed over the entries: one update per lot."""
    deltas: dict[tuple[int, str], int] = defaultdict(int)
    for entry in entries:
        for move in entry.lot_moves:
            deltas[(move.lot_id, entry.member_id)] += move.points
    return [(lot_id, member_id, points) for (lot_id, member_id), points in sorted(deltas.items())]


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
    "transaction_id, kind, partner_id, member_id, points_delta, balance_points_after, "
    "occurred_at, create_time, request_id, rate_version_id, parent_transaction_id, "
    "amount_minor, currency, native_points, partner_reference, reason"
)
JOURNAL_FIELDS = JOURNAL_COLUMNS.split(", ")[1:]  # the id is the database's


class _Statements(Protocol):
    def prepare(
        self, connection: Any, account_ids: list[str], entry_count: int
    ) -> tuple[dict[str, int], list[int] | None, dict[str, str]]:
        """The balances of the accounts (locked by the caller), where the database can hand
        them out ahead the entries' transaction ids, and the survivor of each of the accounts'
        members that is merged."""
        ...

    def write(self, connection: Any, plan: _Plan, transaction_ids: list[int] | None) -> list[int]:
        """Every row of the plan; the entries' transaction ids."""
        ...


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column: the arrays an `unnest` takes."""
    return [[row[index] for row in rows] for index in range(width)]


# psycopg parses a query again on every call when it has more parameters than this
# (psycopg._queries.MAX_CACHED_STATEMENT_PARAMS); the writer's statement stays within it.
PSYCOPG_CACHED_PARAMETERS_MAX = 50


# The survivor of each of the members (`member_ids`) that is merged (a JSON object).
SURVIVORS = (
    "SELECT coalesce(json_object_agg(member_id, merged_into_member_id), '{}') FROM members"
    " WHERE member_id = ANY(%(member_ids)b) AND merged_into_member_id IS NOT NULL"
)


class _PostgresStatements:
    """Two statements whatever the number of entries: one reads the balances and takes the
    transaction ids, one writes every row (data-modifying CTEs; foreign keys are checked at the
    end of the statement, when the journal rows the other rows name are in). Arrays go in
    binary (`%b`): psycopg dumps them several times faster than as quoted text.

    `recorded` sets the results on keys this transaction's claim inserted (claim_many returns
    only those), so no one else can have set one; it names no `result_id IS NULL` guard: with
    almost no open keys in its statistics the planner then expects one row and joins the
    unnest in a nested loop, quadratic in the group (480 ms of a 1,000-earn batch's 600)."""

    PREPARE = (
        "SELECT (SELECT coalesce(json_object_agg(account_id, balance_points), '{}')"
        " FROM member_accounts WHERE member_id = ANY(%(member_ids)b)"
        " AND account_id = ANY(%(account_ids)b)),"
        " (SELECT array_agg(nextval('journal_transactions_transaction_id_seq'))"
        " FROM generate_series(1, %(entry_count)s)),"
        f" ({SURVIVORS})"
    )
    WRITE = (
        "WITH moved AS ("
        " UPDATE member_accounts AS a SET balance_points = a.balance_points + m.delta"
        " FROM unnest(%(member_ids)b::text[], %(account_ids)b::text[], %(deltas)b::bigint[])"
        " AS m(member_id, account_id, delta)"
        " WHERE a.member_id = m.member_id AND a.account_id = m.account_id"
        " AND a.balance_points + m.delta >= 0 AND a.member_id = ANY(%(member_ids)b::text[])"
        " RETURNING 1),"
        " journal AS ("
        f" INSERT INTO journal_transactions ({JOURNAL_COLUMNS})"
        " SELECT * FROM unnest(%(j0)b::bigint[], %(j1)b::text[], %(j2)b::text[], %(j3)b::text[],"
        " %(j4)b::bigint[], %(j5)b::bigint[], %(j6)b::timestamptz[], %(j7)b::timestamptz[],"
        " %(j8)b::text[], %(j9)b::text[], %(j10)b::bigint[], %(j11)b::bigint[], %(j12)b::text[],"
        " %(j13)b::bigint[], %(j14)b::text[], %(j15)b::text[])"
        " RETURNING 1),"
        " posted AS ("
        " INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)"
        " SELECT t, m, a, p, %(now)s"
        " FROM unnest(%(p0)b::bigint[], %(p1)b::text[], %(p2)b::text[], %(p3)b::bigint[])"
        " AS x(t, m, a, p) RETURNING 1),"
        " issued AS ("
        " INSERT INTO lots (member_id, partner_id, transaction_id, points, remaining_points,"
        " expires_at, create_time)"
        " SELECT m, i, t, p, p, e, %(now)s FROM unnest(%(l0)b::text[], %(l1)b::text[],"
        " %(l2)b::bigint[], %(l3)b::bigint[], %(l4)b::timestamptz[]) AS x(m, i, t, p, e)"
        " RETURNING 1),"
        " consumed AS ("
        " INSERT INTO lot_consumptions (transaction_id, member_id, burn_transaction_id, lot_id,"
        " points) SELECT * FROM unnest(%(c0)b::bigint[], %(c1)b::text[], %(c2)b::bigint[],"
        " %(c3)b::bigint[], %(c4)b::bigint[]) RETURNING 1),"
        " lots_moved AS ("
        " UPDATE lots AS l SET remaining_points = l.remaining_points - d.points"
        " FROM unnest(%(d0)b::bigint[], %(d1)b::text[], %(d2)b::bigint[])"
        " AS d(lot_id, member_id, points)"
        " WHERE l.lot_id = d.lot_id AND l.member_id = d.member_id"
        " AND l.remaining_points - d.points >= 0 RETURNING 1),"
        " bonuses AS ("
        " INSERT INTO earn_bonuses (transaction_id, member_id, rule_id, points,"
        " funding_partner_id) SELECT * FROM unnest(%(b0)b::bigint[], %(b1)b::text[],"
        " %(b2)b::text[], %(b3)b::bigint[], %(b4)b::text[]) RETURNING 1),"
        " evented AS ("
        " INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id,"
        " points_delta, balance_points_after, create_time)"
        " SELECT p, pg_current_xact_id()::text::bigint, k, m, t, d, b, %(now)s"
        " FROM unnest(%(j2)b::text[], %(event_kinds)b::text[], %(j3)b::text[], %(j0)b::bigint[],"
        " %(j4)b::bigint[], %(j5)b::bigint[]) WITH ORDINALITY AS x(p, k, m, t, d, b, n)"
        " ORDER BY n RETURNING 1),"
        " qualified AS ("
        " INSERT INTO tier_qualifying_months (member_id, calendar_month, points)"
        " SELECT * FROM unnest(%(q0)b::text[], %(q1)b::integer[], %(q2)b::bigint[])"
        " ON CONFLICT (member_id, calendar_month)"
        " DO UPDATE SET points = tier_qualifying_months.points + excluded.points RETURNING 1),"
        " recorded AS ("
        " UPDATE idempotency_keys AS k SET result_id = r.result_id"
        " FROM unnest(%(r0)b::text[], %(r1)b::text[], %(r2)b::text[], %(r3)b::text[])"
        " AS r(member_id, partner_id, request_id, result_id)"
        " WHERE k.member_id = r.member_id AND k.partner_id = r.partner_id"
        " AND k.request_id = r.request_id AND k.member_id = ANY(%(r0)b::text[]) RETURNING 1)"
        " SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM recorded),"
        " (SELECT count(*) FROM lots_moved),"
        " (SELECT count(*) FROM journal) + (SELECT count(*) FROM posted)"
        " + (SELECT count(*) FROM issued) + (SELECT count(*) FROM consumed)"
        " + (SELECT count(*) FROM bonuses)"
        " + (SELECT count(*) FROM evented) + (SELECT count(*) FROM qualified)"
    )

    WRITE_ARRAYS = array_types_of(WRITE)

    def prepare(
        self, connection: Any, account_ids: list[str], entry_count: int
    ) -> tuple[dict[str, int], list[int] | None, dict[str, str]]:
        parameters = {
            "member_ids": TextArray(_member_of(account_id) for account_id in account_ids),
            "account_ids": TextArray(account_ids),
            "entry_count": entry_count,
        }
        balances, transaction_ids, survivors = (
            connection.cursor().execute(self.PREPARE, parameters).fetchone()
        )
        balances = {account: int(points) for account, points in balances.items()}
        return balances, transaction_ids, survivors

    def write(self, connection: Any, plan: _Plan, transaction_ids: list[int] | None) -> list[int]:
        assert transaction_ids is not None and len(transaction_ids) == len(plan.entries)
        rows = plan.rows_of(transaction_ids)
        journal = [transaction_ids] + [
            [row[name] for row in plan.journal_rows] for name in JOURNAL_FIELDS
        ]
        parameters: dict[str, Any] = {
            "member_ids": [_member_of(account) for account, _ in plan.deltas],
            "account_ids": [account for account, _ in plan.deltas],
            "deltas": [delta for _, delta in plan.deltas],
            "now": plan.now,
            **_named("j", journal),
            **_named("p", _columns(rows.postings, 4)),
            **_named("l", _columns(rows.lots, 5)),
            **_named("c", _columns(rows.lot_moves, 5)),
            **_named("d", _columns(rows.lot_deltas, 3)),
            **_named("b", _columns(rows.bonuses, 5)),
            # An event per journal row, from the journal's own arrays (fewer parameters keep
            # the statement in psycopg's cache of parsed queries, MAX_CACHED_STATEMENT_PARAMS).
            "event_kinds": [EVENT_KIND_OF_TRANSACTION[row["kind"]] for row in plan.journal_rows],
            **_named("q", _columns(rows.qualifying, 3)),
            **_named("r", _columns(rows.results, 4)),
        }
        assert len(parameters) <= PSYCOPG_CACHED_PARAMETERS_MAX, "parsed once, not per call"
        typed = {
            name: self.WRITE_ARRAYS[name](value) if name in self.WRITE_ARRAYS else value
            for name, value in parameters.items()
        }
        moved, recorded, lots_moved, _ = connection.cursor().execute(self.WRITE, typed).fetchone()
        assert moved == len(plan.deltas), "balances moved under their locks"
        assert lots_moved == len(rows.lot_deltas), "lots moved under their members' locks"
        assert recorded == len(rows.results), "each result is recorded once, on its claim"
        return transaction_ids


class _CitusStatements(_PostgresStatements):
    """PostgreSQL's two statements, with VALUES lists where PostgreSQL inserts from `unnest`.

    Citus runs an INSERT ... SELECT from a function through the coordinator: it copies the rows
    to their shards with COPY, which always commits in two phases (PREPARE TRANSACTION on every
    worker written). An INSERT ... VALUES is routed to its member's shard like the guarded
    UPDATEs (`member_id = ANY(...)` prunes them to the members' shards), so one member's write
    commits on one worker in one phase. The statement text depends on the number of rows of
    each table only: each shape is built once and kept (`_citus_write`).
    """

    # Two statements, not PostgreSQL's one: with one member, Citus routes the whole of that
    # one to the member's worker, whose sequence hands out ids from its own range, while a
    # group of several members takes them on the coordinator; a member's ids would then not
    # follow the order its transactions committed in (the integrity proof replays them so).
    # Every id comes from the coordinator's sequence here.
    BALANCES = (
        "SELECT coalesce(json_object_agg(account_id, balance_points), '{}')"
        " FROM member_accounts WHERE member_id = ANY(%b) AND account_id = ANY(%b)"
    )
    TRANSACTION_IDS = (
        "SELECT array_agg(nextval('journal_transactions_transaction_id_seq'))"
        " FROM generate_series(1, %s)"
    )

    def prepare(
        self, connection: Any, account_ids: list[str], entry_count: int
    ) -> tuple[dict[str, int], list[int] | None, dict[str, str]]:
        member_ids = TextArray(_member_of(account_id) for account_id in account_ids)
        cursor = connection.cursor()
        (balances,) = cursor.execute(self.BALANCES, (member_ids, TextArray(account_ids))).fetchone()
        (survivors,) = cursor.execute(SURVIVORS, {"member_ids": member_ids}).fetchone()
        if survivors:
            return {}, None, survivors  # nothing is written: no ids taken
        (transaction_ids,) = cursor.execute(self.TRANSACTION_IDS, (entry_count,)).fetchone()
        balances = {account: int(points) for account, points in balances.items()}
        return balances, transaction_ids, survivors

    def write(self, connection: Any, plan: _Plan, transaction_ids: list[int] | None) -> list[int]:
        assert transaction_ids is not None and len(transaction_ids) == len(plan.entries)
        rows = plan.rows_of(transaction_ids)
        journal = [
            (t, *(row[name] for name in JOURNAL_FIELDS))
            for t, row in zip(transaction_ids, plan.journal_rows, strict=True)
        ]
        member_ids = [_member_of(account) for account, _ in plan.deltas]
        account_ids = [account for account, _ in plan.deltas]
        tables = (
            journal,
            [(*row, plan.now) for row in rows.postings],
            [(m, i, t, p, p, e, plan.now) for m, i, t, p, e in rows.lots],
            rows.lot_moves,
            rows.bonuses,
            [(*row, plan.now) for row in plan.events_of(transaction_ids)],
            rows.qualifying,
        )
        results = _columns(rows.results, 4)
        lot_deltas = _columns(rows.lot_deltas, 3)
        parameters = [
            member_ids,
            account_ids,
            [delta for _, delta in plan.deltas],
            member_ids,
            *(value for table in tables for row in table for value in row),
            *((*lot_deltas, lot_deltas[1]) if rows.lot_deltas else ()),
            *((*results, results[0]) if rows.results else ()),
        ]
        statement = _citus_write(
            tuple(len(table) for table in tables), bool(rows.lot_deltas), bool(rows.results)
        )
        moved, recorded, lots_moved, _ = (
            connection.cursor().execute(statement, parameters).fetchone()
        )
        assert moved == len(plan.deltas), "balances moved under their locks"
        assert lots_moved == len(rows.lot_deltas), "lots moved under their members' locks"
        assert recorded == len(rows.results), "each result is recorded once, on its claim"
        return transaction_ids


# Each table's CTE on Citus: its name, its INSERT up to VALUES, one row's placeholders, and
# what follows the VALUES.
_CITUS_INSERTS = (
    (
        "journal",
        f"INSERT INTO journal_transactions ({JOURNAL_COLUMNS}) VALUES",
        "(%s::bigint, %s, %s, %s, %s::bigint, %s::bigint, %s::timestamptz, %s::timestamptz,"
        " %s, %s, %s::bigint, %s::bigint, %s, %s::bigint, %s, %s)",
        "",
    ),
    (
        "posted",
        "INSERT INTO postings (transaction_id, member_id, account_id, points, create_time) VALUES",
        "(%s::bigint, %s, %s, %s::bigint, %s::timestamptz)",
        "",
    ),
    (
        "issued",
        "INSERT INTO lots (member_id, partner_id, transaction_id, points, remaining_points,"
        " expires_at, create_time) VALUES",
        "(%s, %s, %s::bigint, %s::bigint, %s::bigint, %s::timestamptz, %s::timestamptz)",
        "",
    ),
    (
        "consumed",
        "INSERT INTO lot_consumptions (transaction_id, member_id, burn_transaction_id, lot_id,"
        " points) VALUES",
        "(%s::bigint, %s, %s::bigint, %s::bigint, %s::bigint)",
        "",
    ),
    (
        "bonuses",
        "INSERT INTO earn_bonuses (transaction_id, member_id, rule_id, points,"
        " funding_partner_id) VALUES",
        "(%s::bigint, %s, %s, %s::bigint, %s)",
        "",
    ),
    (
        "evented",
        "INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id,"
        " points_delta, balance_points_after, create_time) VALUES",
        "(%s, pg_current_xact_id()::text::bigint, %s, %s, %s::bigint, %s::bigint, %s::bigint,"
        " %s::timestamptz)",
        "",
    ),
    (
        "qualified",
        "INSERT INTO tier_qualifying_months (member_id, calendar_month, points) VALUES",
        "(%s, %s::integer, %s::bigint)",
        " ON CONFLICT (member_id, calendar_month)"
        " DO UPDATE SET points = tier_qualifying_months.points + excluded.points",
    ),
)


@functools.lru_cache(maxsize=1024)
def _citus_write(row_counts: tuple[int, ...], moves_lots: bool, records_results: bool) -> str:
    """The Citus WRITE statement for these numbers of rows per table (`_CITUS_INSERTS` order):
    PostgreSQL's moved, lots_moved and recorded CTEs, and one INSERT ... VALUES per table with
    rows (an UPDATE whose `member_id = ANY` names no member would visit every shard: none is
    issued)."""
    moved = (
        "moved AS (UPDATE member_accounts AS a SET balance_points = a.balance_points + m.delta"
        " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS m(member_id, account_id, delta)"
        " WHERE a.member_id = m.member_id AND a.account_id = m.account_id"
        " AND a.balance_points + m.delta >= 0 AND a.member_id = ANY(%s::text[]) RETURNING 1)"
    )
    recorded = (
        "recorded AS (UPDATE idempotency_keys AS k SET result_id = r.result_id"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
        " AS r(member_id, partner_id, request_id, result_id)"
        " WHERE k.member_id = r.member_id AND k.partner_id = r.partner_id"
        " AND k.request_id = r.request_id AND k.member_id = ANY(%s::text[]) RETURNING 1)"
        if records_results
        else "recorded AS (SELECT 1 WHERE false)"
    )
    lots_moved = (
        "lots_moved AS (UPDATE lots AS l SET remaining_points = l.remaining_points - d.points"
        " FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS d(lot_id, member_id, points)"
        " WHERE l.lot_id = d.lot_id AND l.member_id = d.member_id"
        " AND l.remaining_points - d.points >= 0 AND l.member_id = ANY(%s::text[]) RETURNING 1)"
        if moves_lots
        else "lots_moved AS (SELECT 1 WHERE false)"
    )
    inserts = [
        f"{name} AS ({insert} {', '.join([row] * count)}{tail} RETURNING 1)"
        for (name, insert, row, tail), count in zip(_CITUS_INSERTS, row_counts, strict=True)
        if count
    ]
    written = " + ".join(
        f"(SELECT count(*) FROM {name})"
        for (name, *_), count in zip(_CITUS_INSERTS, row_counts, strict=True)
        if count
    )
    return (
        f"WITH {', '.join([moved, *inserts, lots_moved, recorded])}"
        f" SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM recorded),"
        f" (SELECT count(*) FROM lots_moved), {written}"
    )


def _member_of(account_id: str) -> str:
    return account_id.removeprefix(MEMBER_ACCOUNT_PREFIX)


def _named(prefix: str, columns: list[list[Any]]) -> dict[str, list[Any]]:
    return {f"{prefix}{index}": column for index, column in enumerate(columns)}


class _SqliteStatements:
    """The same rows, statement by statement (an embedded database has no round trips to
    save); SQLite hands out a transaction id as its row is inserted."""

    READ_BALANCE = (
        "SELECT balance_points FROM member_accounts WHERE member_id = ? AND account_id = ?"
    )
    SURVIVORS = (
        "SELECT member_id, merged_into_member_id FROM members"
        " WHERE member_id IN (SELECT value FROM json_each(?)) AND merged_into_member_id IS NOT NULL"
    )
    MOVE_BALANCE = (
        "UPDATE member_accounts SET balance_points = balance_points + ?"
        " WHERE member_id = ? AND account_id = ? AND balance_points + ? >= 0"
    )
    INSERT_JOURNAL = (
        f"INSERT INTO journal_transactions ({', '.join(JOURNAL_FIELDS)})"
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
    INSERT_LOT_MOVES = (
        "INSERT INTO lot_consumptions (transaction_id, member_id, burn_transaction_id, lot_id,"
        " points) VALUES (?, ?, ?, ?, ?)"
    )
    MOVE_LOT = (
        "UPDATE lots SET remaining_points = remaining_points - ?"
        " WHERE lot_id = ? AND member_id = ? AND remaining_points - ? >= 0"
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
    RECORD_RESULT = (
        "UPDATE idempotency_keys SET result_id = ? WHERE member_id = ? AND partner_id = ?"
        " AND request_id = ? AND result_id IS NULL AND refusal IS NULL"
    )

    def prepare(
        self, connection: Any, account_ids: list[str], entry_count: int
    ) -> tuple[dict[str, int], list[int] | None, dict[str, str]]:
        cursor = connection.cursor()
        balances = {}
        for account_id in account_ids:
            row = cursor.execute(self.READ_BALANCE, (_member_of(account_id), account_id)).fetchone()
            assert row is not None, f"account {account_id} exists"
            balances[account_id] = row[0]
        member_ids = json.dumps([_member_of(account_id) for account_id in account_ids])
        survivors = dict(cursor.execute(self.SURVIVORS, (member_ids,)).fetchall())
        return balances, None, survivors

    def write(self, connection: Any, plan: _Plan, transaction_ids: list[int] | None) -> list[int]:
        assert transaction_ids is None, "SQLite numbers rows as it inserts them"
        cursor = connection.cursor()
        for account_id, delta in plan.deltas:
            cursor.execute(self.MOVE_BALANCE, (delta, _member_of(account_id), account_id, delta))
            assert cursor.rowcount == 1, "balances move under their locks"
        transaction_ids = [
            cursor.execute(
                self.INSERT_JOURNAL, [sqlite_value(row[name]) for name in JOURNAL_FIELDS]
            ).fetchone()[0]
            for row in plan.journal_rows
        ]
        rows = plan.rows_of(transaction_ids)
        now = sqlite_value(plan.now)
        cursor.executemany(self.INSERT_POSTINGS, [(*row, now) for row in rows.postings])
        cursor.executemany(
            self.INSERT_LOTS,
            [(m, i, t, p, p, sqlite_value(e), now) for m, i, t, p, e in rows.lots],
        )
        cursor.executemany(self.INSERT_LOT_MOVES, rows.lot_moves)
        for lot_id, member_id, points in rows.lot_deltas:
            cursor.execute(self.MOVE_LOT, (points, lot_id, member_id, points))
            assert cursor.rowcount == 1, "lots move under their members' locks"
        cursor.executemany(self.INSERT_BONUSES, rows.bonuses)
        events = plan.events_of(transaction_ids)
        cursor.executemany(self.INSERT_EVENTS, [(*row, now) for row in events])
        cursor.executemany(self.ADD_QUALIFYING_POINTS, rows.qualifying)
        for member_id, partner_id, request_id, result_id in rows.results:
            cursor.execute(self.RECORD_RESULT, (result_id, member_id, partner_id, request_id))
            assert cursor.rowcount == 1, "each result is recorded once, on its claim"
        return transaction_ids


_STATEMENTS: dict[str, _Statements] = {
    "postgresql": _PostgresStatements(),
    "citus": _CitusStatements(),
    "sqlite": _SqliteStatements(),
}

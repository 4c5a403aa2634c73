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

On PostgreSQL these are the common table expressions of one statement, sent as arrays
(`unnest`) in one round trip; on SQLite they are statements of their own, with `executemany`
(an embedded database has no round trips to save); on Citus the balances, the survivors and
the transaction ids are read before the writing statement. The statements are built once per
dialect at import (Citus's once per shape), never per request, and run on the driver's own
cursor, which psycopg prepares after a few uses.

The caller holds the row locks of every member account it posts to (taken in account-id
order) and has checked the domain rules under them; the guards here are the last line, and
nothing is written when one refuses: a debit raises INSUFFICIENT_POINTS for the whole list, a
member merged into another raises `MembersMerged` (read after the caller's locks, with the
balances before the entries: a merge that committed while the caller waited for a lock
closed that member's account, and points posted to it would be stranded).
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg

from coalition.domain.errors import FailedPrecondition
from coalition.domain.tiers import calendar_month
from coalition.ledger.accounts import member_account_id
from coalition.store import driver
from coalition.store.arrays import NumberedStatement, TextArray
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

    @functools.cached_property  # read by check(), the journal row and the answer
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
    statements = _STATEMENTS["citus" if uow.is_citus else uow.dialect_name]
    plan = _Plan(entries, results, now)
    with driver.driver_errors(uow):
        transaction_ids, balances = statements.write(uow, plan)
    return [
        TransactionRecord(
            transaction_id=transaction_id,
            balance_points_after=balance_points_after,
            points_reversed=0,
            **row,
        )
        for transaction_id, balance_points_after, row in zip(
            transaction_ids, plan.balances_after(balances), plan.journal_rows, strict=True
        )
    ]


class _Plan:
    """Everything one call writes, as rows: those that name a transaction once its id is known
    (`rows_of`), the journal's balances after once the balances before are read (`refuse`
    first: whether the entries may be written on them)."""

    def __init__(
        self,
        entries: Sequence[JournalEntry],
        results: Sequence[tuple[str, str] | None],
        now: datetime,
    ) -> None:
        self.entries = entries
        self.results = results or [None] * len(entries)
        self.now = now
        self.journal_rows = _journal_rows(entries, now)
        member_deltas = _member_deltas(entries)
        self.deltas = sorted(member_deltas.items())  # by account id
        self.running_points = _running_points(entries)

    def refuse(self, balances: Mapping[str, int], survivors: Mapping[str, str]) -> None:
        """Raise if the entries cannot be written on these balances, read under the caller's
        locks: MembersMerged first (a retry resolves those), then INSUFFICIENT_POINTS."""
        if survivors:
            raise MembersMerged(survivors)
        for account_id, delta in self.deltas:
            if balances[account_id] + delta < 0:
                member_id = _member_of(account_id)
                raise FailedPrecondition(
                    "INSUFFICIENT_POINTS",
                    f"member {member_id} has too few points for a debit of {-delta}",
                    {"member_id": member_id, "points_requested": -delta},
                )

    def balances_after(self, balances: Mapping[str, int]) -> list[int]:
        """Each entry's member balance right after it: the balance before the entries plus
        its running points, as PostgreSQL's statement computes it."""
        assert set(balances) == {account for account, _ in self.deltas}, "every balance read"
        assert all(balance >= 0 for balance in balances.values()), "negative balance cache"
        balances_after = [
            balances[member_account_id(entry.member_id)] + running_points
            for entry, running_points in zip(self.entries, self.running_points, strict=True)
        ]
        assert all(balance >= 0 for balance in balances_after), "a balance never goes negative"
        return balances_after

    def journal_rows_after(self, balances: Mapping[str, int]) -> list[dict[str, Any]]:
        return [
            {**row, "balance_points_after": balance_points_after}
            for row, balance_points_after in zip(
                self.journal_rows, self.balances_after(balances), strict=True
            )
        ]

    def rows_of(self, transaction_ids: Sequence[int]) -> _Rows:
        """The other tables' rows, naming each entry by `transaction_ids` (PostgreSQL's
        statement takes the entries' ordinals and maps them to the ids it takes)."""
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
                (t, e.member_id, m.burn_transaction_id, m.lot_id, m.points)
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
                (e.member_id, claim[0], claim[1], t)
                for e, claim, t in zip(self.entries, self.results, transaction_ids, strict=True)
                if claim is not None
            ],
        )

    @staticmethod
    def events_of(
        journal_rows: Sequence[Mapping[str, Any]], transaction_ids: Sequence[int]
    ) -> list[tuple[str, str, str, int, int, int]]:
        """An event per entry, to the partner its transaction belongs to (events/outbox.py);
        PostgreSQL's statement builds them from the journal rows it inserts instead."""
        return [
            (
                row["partner_id"],
                EVENT_KIND_OF_TRANSACTION[row["kind"]],
                row["member_id"],
                t,
                row["points_delta"],
                row["balance_points_after"],
            )
            for row, t in zip(journal_rows, transaction_ids, strict=True)
        ]


@dataclass(frozen=True)
class _Rows:
    postings: list[tuple[int, str, str, int]]
    lots: list[tuple[str, str, int, int, datetime | None]]
    # transaction, member, burn (None: the transaction itself), lot, points
    lot_moves: list[tuple[int, str, int | None, int, int]]
    lot_deltas: list[tuple[int, str, int]]  # lot, member, points taken in all (< 0: given)
    bonuses: list[tuple[int, str, str, int, str | None]]
    qualifying: list[tuple[str, int, int]]
    results: list[tuple[str, str, str, int]]  # member, partner, request id, transaction

    def lot_moves_named(self) -> list[tuple[int, str, int, int, int]]:
        """The lot moves with the burn each is made for named (where the dialect's statement
        does not map None to the transaction itself)."""
        return [
            (t, member_id, t if burn is None else burn, lot_id, points)
            for t, member_id, burn, lot_id, points in self.lot_moves
        ]

    def results_as_text(self) -> list[tuple[str, str, str, str]]:
        """The claims' results as idempotency_keys stores them (text)."""
        return [(m, p, r, str(t)) for m, p, r, t in self.results]


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


def _running_points(entries: Sequence[JournalEntry]) -> list[int]:
    """For each entry, the points the entries up to and including it moved on its member's
    account: its balance after is the account's balance before the entries plus these."""
    moved: dict[str, int] = defaultdict(int)
    running_points = []
    for entry in entries:
        for posting in entry.postings:
            if posting.account_id.startswith(MEMBER_ACCOUNT_PREFIX):
                moved[posting.account_id] += posting.points
        running_points.append(moved[member_account_id(entry.member_id)])
    return running_points


def _journal_rows(entries: Sequence[JournalEntry], now: datetime) -> list[dict[str, Any]]:
    """The journal rows of the entries, but their balances after (read under the locks)."""
    return [
        {
            "kind": entry.kind,
            "partner_id": entry.partner_id,
            "member_id": entry.member_id,
            "points_delta": entry.member_points_delta,
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
        for entry in entries
    ]


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
    def write(self, uow: UnitOfWork, plan: _Plan) -> tuple[list[int], dict[str, int]]:
        """Every row of the plan, or none (`plan.refuse` raised); the entries' transaction
        ids and the balances of the accounts they post to before them, read under the
        caller's locks."""
        ...


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column: the arrays an `unnest` takes."""
    return [[row[index] for row in rows] for index in range(width)]


# The journal's columns as the PostgreSQL statement passes them, one array each (`j_...`):
# the id is the statement's, the balance after is computed from `running_points`.
_POSTGRES_JOURNAL_ARRAYS = (
    ("kind", "text"),
    ("partner_id", "text"),
    ("member_id", "text"),
    ("points_delta", "bigint"),
    ("running_points", "bigint"),
    ("occurred_at", "timestamptz"),
    ("request_id", "text"),
    ("rate_version_id", "text"),
    ("parent_transaction_id", "bigint"),
    ("amount_minor", "bigint"),
    ("currency", "text"),
    ("native_points", "bigint"),
    ("partner_reference", "text"),
    ("reason", "text"),
)


class _PostgresStatements:
    """One statement whatever the number of entries, in one round trip: data-modifying CTEs
    (foreign keys are checked at the end of the statement, when the journal rows the other
    rows name are in). Arrays go in binary (`%b`): psycopg dumps them several times faster
    than as quoted text.

    The statement takes the entries' transaction ids (`ids`: the other rows name an entry by
    its ordinal, 1..N), reads the balances before them (`before`, under the caller's locks:
    its snapshot is taken after they were granted, so it sees a merge that committed while
    the caller waited) and writes only if `verdict` finds no member merged and no balance
    that would go below zero; otherwise nothing, and `plan.refuse` names why from what it
    read. Each balance after is the balance before plus the entry's `running_points`.

    `recorded` sets the results on keys this transaction's claim inserted (claim_many returns
    only those), so no one else can have set one. The planner expects one row from its join
    of the keys (they are nearly all closed in its statistics), so whatever it joins next goes
    in a nested loop: a `result_id IS NULL` guard, or a join of `ids`, made it quadratic in the
    group (160 to 480 ms of a 1,000-earn batch's writer). It takes each id from `id_list` by
    the entry's ordinal instead, an array built once per statement."""

    WRITE = NumberedStatement(
        "WITH before AS ("
        " SELECT a.account_id, a.balance_points, m.delta FROM member_accounts AS a"
        " JOIN unnest(%(member_ids)b::text[], %(account_ids)b::text[], %(deltas)b::bigint[])"
        " AS m(member_id, account_id, delta)"
        " ON a.member_id = m.member_id AND a.account_id = m.account_id"
        " WHERE a.member_id = ANY(%(member_ids)b::text[])),"
        " merged AS ("
        " SELECT member_id, merged_into_member_id FROM members"
        " WHERE member_id = ANY(%(member_ids)b::text[]) AND merged_into_member_id IS NOT NULL),"
        " verdict AS ("
        " SELECT NOT EXISTS (SELECT FROM merged)"
        " AND NOT EXISTS (SELECT FROM before WHERE balance_points + delta < 0) AS ok),"
        " ids AS ("
        " SELECT n, nextval('journal_transactions_transaction_id_seq') AS t"
        " FROM generate_series(1, cardinality(%(j_kind)b::text[])) AS n"
        " WHERE (SELECT ok FROM verdict)),"
        " id_list AS (SELECT array_agg(t ORDER BY n) AS t FROM ids),"
        " moved AS ("
        " UPDATE member_accounts AS a SET balance_points = a.balance_points + m.delta"
        " FROM unnest(%(member_ids)b::text[], %(account_ids)b::text[], %(deltas)b::bigint[])"
        " AS m(member_id, account_id, delta)"
        " WHERE a.member_id = m.member_id AND a.account_id = m.account_id"
        " AND a.balance_points + m.delta >= 0 AND a.member_id = ANY(%(member_ids)b::text[])"
        " AND (SELECT ok FROM verdict) RETURNING 1),"
        " journal AS ("
        f" INSERT INTO journal_transactions ({JOURNAL_COLUMNS})"
        " SELECT ids.t, j.kind, j.partner_id, j.member_id, j.points_delta,"
        " b.balance_points + j.running_points, j.occurred_at, %(now)s, j.request_id,"
        " j.rate_version_id, j.parent_transaction_id, j.amount_minor, j.currency,"
        " j.native_points, j.partner_reference, j.reason"
        " FROM unnest("
        + ", ".join(f"%(j_{name})b::{sql_type}[]" for name, sql_type in _POSTGRES_JOURNAL_ARRAYS)
        + ") WITH ORDINALITY AS j("
        + ", ".join(name for name, _ in _POSTGRES_JOURNAL_ARRAYS)
        + ", n)"
        " JOIN ids USING (n)"
        f" JOIN before AS b ON b.account_id = '{MEMBER_ACCOUNT_PREFIX}' || j.member_id"
        " RETURNING transaction_id, kind, partner_id, member_id, points_delta,"
        " balance_points_after),"
        " posted AS ("
        " INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)"
        " SELECT ids.t, x.m, x.a, x.p, %(now)s"
        " FROM unnest(%(p0)b::bigint[], %(p1)b::text[], %(p2)b::text[], %(p3)b::bigint[])"
        " AS x(n, m, a, p) JOIN ids USING (n)),"
        " issued AS ("
        " INSERT INTO lots (member_id, partner_id, transaction_id, points, remaining_points,"
        " expires_at, create_time)"
        " SELECT x.m, x.i, ids.t, x.p, x.p, x.e, %(now)s FROM unnest(%(l0)b::text[],"
        " %(l1)b::text[], %(l2)b::bigint[], %(l3)b::bigint[], %(l4)b::timestamptz[])"
        " AS x(m, i, n, p, e) JOIN ids USING (n)),"
        " consumed AS ("
        " INSERT INTO lot_consumptions (transaction_id, member_id, burn_transaction_id, lot_id,"
        " points) SELECT ids.t, x.m, coalesce(x.b, ids.t), x.l, x.p"
        " FROM unnest(%(c0)b::bigint[], %(c1)b::text[], %(c2)b::bigint[], %(c3)b::bigint[],"
        " %(c4)b::bigint[]) AS x(n, m, b, l, p) JOIN ids USING (n)),"
        " lots_moved AS ("
        " UPDATE lots AS l SET remaining_points = l.remaining_points - d.points"
        " FROM unnest(%(d0)b::bigint[], %(d1)b::text[], %(d2)b::bigint[])"
        " AS d(lot_id, member_id, points)"
        " WHERE l.lot_id = d.lot_id AND l.member_id = d.member_id"
        " AND l.remaining_points - d.points >= 0 AND (SELECT ok FROM verdict) RETURNING 1),"
        " bonuses AS ("
        " INSERT INTO earn_bonuses (transaction_id, member_id, rule_id, points,"
        " funding_partner_id) SELECT ids.t, x.m, x.r, x.p, x.f FROM unnest(%(b0)b::bigint[],"
        " %(b1)b::text[], %(b2)b::text[], %(b3)b::bigint[], %(b4)b::text[]) AS x(n, m, r, p, f)"
        " JOIN ids USING (n)),"
        " evented AS ("
        " INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id,"
        " points_delta, balance_points_after, create_time)"
        " SELECT j.partner_id, pg_current_xact_id()::text::bigint,"
        " (%(event_kinds)b::text[])[ids.n], j.member_id, j.transaction_id, j.points_delta,"
        " j.balance_points_after, %(now)s"
        " FROM journal AS j JOIN ids ON ids.t = j.transaction_id ORDER BY ids.n),"
        " qualified AS ("
        " INSERT INTO tier_qualifying_months (member_id, calendar_month, points)"
        " SELECT * FROM unnest(%(q0)b::text[], %(q1)b::integer[], %(q2)b::bigint[])"
        " WHERE (SELECT ok FROM verdict)"
        " ON CONFLICT (member_id, calendar_month)"
        " DO UPDATE SET points = tier_qualifying_months.points + excluded.points),"
        " recorded AS ("
        " UPDATE idempotency_keys AS k SET result_id = (SELECT t FROM id_list)[r.n]::text"
        " FROM unnest(%(r0)b::text[], %(r1)b::text[], %(r2)b::text[], %(r3)b::bigint[])"
        " AS r(member_id, partner_id, request_id, n)"
        " WHERE k.member_id = r.member_id AND k.partner_id = r.partner_id"
        " AND k.request_id = r.request_id AND k.member_id = ANY(%(r0)b::text[])"
        " AND (SELECT ok FROM verdict) RETURNING 1)"
        " SELECT (SELECT ok FROM verdict), (SELECT t FROM id_list),"
        " (SELECT json_object_agg(account_id, balance_points) FROM before),"
        " (SELECT coalesce(json_object_agg(member_id, merged_into_member_id), '{}')"
        " FROM merged),"
        " (SELECT count(*) FROM moved), (SELECT count(*) FROM recorded),"
        " (SELECT count(*) FROM lots_moved)"
    )

    def write(self, uow: UnitOfWork, plan: _Plan) -> tuple[list[int], dict[str, int]]:
        ordinals = range(1, len(plan.entries) + 1)
        rows = plan.rows_of(ordinals)
        journal = {
            f"j_{name}": (
                plan.running_points
                if name == "running_points"
                else [row[name] for row in plan.journal_rows]
            )
            for name, _ in _POSTGRES_JOURNAL_ARRAYS
        }
        parameters: dict[str, Any] = {
            "member_ids": [_member_of(account) for account, _ in plan.deltas],
            "account_ids": [account for account, _ in plan.deltas],
            "deltas": [delta for _, delta in plan.deltas],
            "now": plan.now,
            **journal,
            **_named("p", _columns(rows.postings, 4)),
            **_named("l", _columns(rows.lots, 5)),
            **_named("c", _columns(rows.lot_moves, 5)),
            **_named("d", _columns(rows.lot_deltas, 3)),
            **_named("b", _columns(rows.bonuses, 5)),
            "event_kinds": [EVENT_KIND_OF_TRANSACTION[row["kind"]] for row in plan.journal_rows],
            **_named("q", _columns(rows.qualifying, 3)),
            **_named("r", _columns(rows.results, 4)),
        }
        cursor = driver.kept_cursor(uow, psycopg.RawCursor)
        row = cursor.execute(self.WRITE.sql, self.WRITE.parameters(parameters)).fetchone()
        assert row is not None, "the statement answers one row"
        ok, transaction_ids, balances, survivors, moved, recorded, lots_moved = row
        balances = {account: int(points) for account, points in (balances or {}).items()}
        if not ok:
            plan.refuse(balances, survivors)
            raise AssertionError("the statement refused entries the plan would write")
        assert moved == len(plan.deltas), "balances moved under their locks"
        assert lots_moved == len(rows.lot_deltas), "lots moved under their members' locks"
        assert recorded == len(rows.results), "each result is recorded once, on its claim"
        return transaction_ids, balances


class _CitusStatements:
    """Four statements whatever the number of entries: the balances, the survivors of merged
    members and the transaction ids are read first, then one statement writes every row, as
    PostgreSQL's does but with VALUES lists where PostgreSQL inserts from `unnest`.

    Citus runs an INSERT ... SELECT from a function through the coordinator: it copies the rows
    to their shards with COPY, which always commits in two phases (PREPARE TRANSACTION on every
    worker written). An INSERT ... VALUES is routed to its member's shard like the guarded
    UPDATEs (`member_id = ANY(...)` prunes them to the members' shards), so one member's write
    commits on one worker in one phase. The statement text depends on the number of rows of
    each table only: each shape is built once and kept (`_citus_write`).

    The ids are read apart, not in the writing statement as on PostgreSQL: with one member,
    Citus routes the whole of that one to the member's worker, whose sequence hands out ids
    from its own range, while a group of several members takes them on the coordinator; a
    member's ids would then not follow the order its transactions committed in (the integrity
    proof replays them so). Every id comes from the coordinator's sequence here.
    """

    BALANCES = (
        "SELECT coalesce(json_object_agg(account_id, balance_points), '{}')"
        " FROM member_accounts WHERE member_id = ANY(%b) AND account_id = ANY(%b)"
    )
    SURVIVORS = (
        "SELECT coalesce(json_object_agg(member_id, merged_into_member_id), '{}') FROM members"
        " WHERE member_id = ANY(%b) AND merged_into_member_id IS NOT NULL"
    )
    TRANSACTION_IDS = (
        "SELECT array_agg(nextval('journal_transactions_transaction_id_seq'))"
        " FROM generate_series(1, %s)"
    )

    def write(self, uow: UnitOfWork, plan: _Plan) -> tuple[list[int], dict[str, int]]:
        member_ids = [_member_of(account) for account, _ in plan.deltas]
        account_ids = [account for account, _ in plan.deltas]
        cursor = driver.kept_cursor(uow)
        (balances,) = cursor.execute(
            self.BALANCES, (TextArray(member_ids), TextArray(account_ids))
        ).fetchone()
        balances = {account: int(points) for account, points in balances.items()}
        (survivors,) = cursor.execute(self.SURVIVORS, (TextArray(member_ids),)).fetchone()
        plan.refuse(balances, survivors)  # before any id is taken
        (transaction_ids,) = cursor.execute(self.TRANSACTION_IDS, (len(plan.entries),)).fetchone()
        journal_rows = plan.journal_rows_after(balances)
        rows = plan.rows_of(transaction_ids)
        journal = [
            (t, *(row[name] for name in JOURNAL_FIELDS))
            for t, row in zip(transaction_ids, journal_rows, strict=True)
        ]
        tables = (
            journal,
            [(*row, plan.now) for row in rows.postings],
            [(m, i, t, p, p, e, plan.now) for m, i, t, p, e in rows.lots],
            rows.lot_moves_named(),
            rows.bonuses,
            [(*row, plan.now) for row in plan.events_of(journal_rows, transaction_ids)],
            rows.qualifying,
        )
        results = _columns(rows.results_as_text(), 4)
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
        moved, recorded, lots_moved, _ = cursor.execute(statement, parameters).fetchone()
        assert moved == len(plan.deltas), "balances moved under their locks"
        assert lots_moved == len(rows.lot_deltas), "lots moved under their members' locks"
        assert recorded == len(rows.results), "each result is recorded once, on its claim"
        return transaction_ids, balances


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

    def write(self, uow: UnitOfWork, plan: _Plan) -> tuple[list[int], dict[str, int]]:
        cursor = driver.cursor_of(uow)
        balances = {}
        for account_id, _ in plan.deltas:
            row = cursor.execute(self.READ_BALANCE, (_member_of(account_id), account_id)).fetchone()
            assert row is not None, f"account {account_id} exists"
            balances[account_id] = row[0]
        member_ids = json.dumps([_member_of(account_id) for account_id, _ in plan.deltas])
        plan.refuse(balances, dict(cursor.execute(self.SURVIVORS, (member_ids,)).fetchall()))
        for account_id, delta in plan.deltas:
            cursor.execute(self.MOVE_BALANCE, (delta, _member_of(account_id), account_id, delta))
            assert cursor.rowcount == 1, "balances move under their locks"
        journal_rows = plan.journal_rows_after(balances)
        transaction_ids = [
            cursor.execute(
                self.INSERT_JOURNAL, [sqlite_value(row[name]) for name in JOURNAL_FIELDS]
            ).fetchone()[0]
            for row in journal_rows
        ]
        rows = plan.rows_of(transaction_ids)
        now = sqlite_value(plan.now)
        cursor.executemany(self.INSERT_POSTINGS, [(*row, now) for row in rows.postings])
        cursor.executemany(
            self.INSERT_LOTS,
            [(m, i, t, p, p, sqlite_value(e), now) for m, i, t, p, e in rows.lots],
        )
        cursor.executemany(self.INSERT_LOT_MOVES, rows.lot_moves_named())
        for lot_id, member_id, points in rows.lot_deltas:
            cursor.execute(self.MOVE_LOT, (points, lot_id, member_id, points))
            assert cursor.rowcount == 1, "lots move under their members' locks"
        cursor.executemany(self.INSERT_BONUSES, rows.bonuses)
        events = plan.events_of(journal_rows, transaction_ids)
        cursor.executemany(self.INSERT_EVENTS, [(*row, now) for row in events])
        cursor.executemany(self.ADD_QUALIFYING_POINTS, rows.qualifying)
        for member_id, partner_id, request_id, result_id in rows.results_as_text():
            cursor.execute(self.RECORD_RESULT, (result_id, member_id, partner_id, request_id))
            assert cursor.rowcount == 1, "each result is recorded once, on its claim"
        return transaction_ids, balances


_STATEMENTS: dict[str, _Statements] = {
    "postgresql": _PostgresStatements(),
    "citus": _CitusStatements(),
    "sqlite": _SqliteStatements(),
}

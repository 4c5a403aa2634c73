"""The embedded baselines: Python's sqlite3 in one process, closed loop, one transaction per
earn (or burn), issuing the same statements as the pgbench scripts (pgbench.py) on the bench's
SQLite file, with the hub's connection settings (WAL, synchronous=NORMAL, foreign keys,
BEGIN IMMEDIATE). Nothing the hub adds: no lock read, no partner or rate lookup, no gRPC.

A burn takes the member's lots earliest expiry first (never-expiring last), a page of the
hub's size at a time, as ledger/lots.py does.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import resource
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from queue import Empty
from typing import Any

from coalition.bench.pgbench import EARN_POINTS, EARN_SPEND_MINOR, SCRIPTS
from coalition.bench.setup import (
    BURN_POINTS_MAX,
    CURRENCIES,
    PARTNER_COUNT,
    bench_rate_version_id,
    member_id,
    partner_id,
)
from coalition.ledger.lots import LOT_PAGE_SIZE
from coalition.store.driver import sqlite_value
from coalition.store.engine import SQLITE_BUSY_TIMEOUT_SECONDS

RATE_VERSION_IDS = {n: bench_rate_version_id(n) for n in range(1, PARTNER_COUNT + 1)}
LOT_VALIDITY = timedelta(days=730)  # the bench partners' 24 months, near enough for a lot

CLAIM = (
    "INSERT INTO idempotency_keys (partner_id, request_id, operation, fingerprint, create_time,"
    " member_id) VALUES (?, ?, ?, ?, ?, ?)"
)
MOVE_BALANCE = (
    "UPDATE member_accounts SET balance_points = balance_points + ?"
    " WHERE member_id = ? AND account_id = ? AND balance_points + ? >= 0"
    " RETURNING balance_points"
)
INSERT_JOURNAL = (
    "INSERT INTO journal_transactions (kind, partner_id, member_id, points_delta,"
    " balance_points_after, occurred_at, create_time, request_id, rate_version_id,"
    " amount_minor, currency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING transaction_id"
)
INSERT_POSTINGS = (
    "INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)"
    " VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)"
)
INSERT_LOT = (
    "INSERT INTO lots (member_id, partner_id, transaction_id, points, remaining_points,"
    " expires_at, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
EARLIEST_LOTS = (
    "SELECT lot_id, remaining_points FROM lots WHERE member_id = ? AND remaining_points > 0"
    f" ORDER BY expires_at ASC NULLS LAST, lot_id LIMIT {LOT_PAGE_SIZE}"
)
INSERT_CONSUMPTION = (
    "INSERT INTO lot_consumptions (transaction_id, member_id, lot_id, burn_transaction_id,"
    " points) VALUES (?, ?, ?, ?, ?)"
)
TAKE_FROM_LOT = (
    "UPDATE lots SET remaining_points = remaining_points - ?"
    " WHERE lot_id = ? AND remaining_points >= ?"
)
INSERT_EVENT = (
    "INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id,"
    " points_delta, balance_points_after, create_time) VALUES (?, 0, ?, ?, ?, ?, ?, ?)"
)
RECORD_RESULT = (
    "UPDATE idempotency_keys SET result_id = ? WHERE partner_id = ? AND request_id = ?"
    " AND result_id IS NULL"
)
EARN_FINGERPRINT = json.dumps(
    {"member.member_id": "bm", "operation": "earn", "spend.amount_minor": EARN_SPEND_MINOR}
)
BURN_FINGERPRINT = json.dumps({"member.member_id": "bm", "operation": "burn", "points": 1})


@dataclass(frozen=True)
class SqliteBaselineResult:
    transactions: int
    errors: int
    duration_seconds: float
    latencies_ms: list[float]
    cpu_seconds: float


def run_sqlite_baseline(
    path: str, members: int, transactions_total: int, duration_seconds_max: float, script: str
) -> SqliteBaselineResult:
    """The script (one of pgbench.SCRIPTS) in a process of its own, so that its CPU is its own."""
    assert script in SCRIPTS
    context = multiprocessing.get_context("spawn")
    queue: Any = context.Queue()
    process = context.Process(
        target=_process_main,
        args=(path, members, transactions_total, duration_seconds_max, script, queue),
    )
    process.start()
    deadline = time.monotonic() + duration_seconds_max + 120
    report = None
    while report is None:
        try:
            report = queue.get(timeout=1.0)
        except Empty:
            if not process.is_alive() or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"the SQLite baseline process ended without a report ({process.exitcode})"
                ) from None
    process.join()
    if "failure" in report:
        raise RuntimeError(f"the SQLite baseline failed: {report['failure']}")
    return SqliteBaselineResult(**report)


def _process_main(
    path: str,
    members: int,
    transactions_total: int,
    duration_seconds_max: float,
    script: str,
    queue: Any,
) -> None:
    try:
        queue.put(_run(path, members, transactions_total, duration_seconds_max, script))
    except BaseException as error:  # report, so the parent does not wait forever
        queue.put({"failure": repr(error)})


def _run(
    path: str, members: int, transactions_total: int, duration_seconds_max: float, script: str
) -> dict[str, Any]:
    connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, isolation_level=None)
    cursor = connection.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    draw = random.Random(f"sqlite-{script}")
    transaction = _earn if script == "earn" else _burn
    latencies_ms: list[float] = []
    errors = 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    deadline = started + duration_seconds_max
    for sequence in range(transactions_total):
        begun = time.perf_counter()
        if begun >= deadline:
            break
        number = draw.randint(1, PARTNER_COUNT)
        member = member_id(draw.randint(1, members))
        cursor.execute("BEGIN IMMEDIATE")
        try:
            transaction(cursor, number, member, f"sqb-{script}-{sequence}", draw)
        except sqlite3.Error:
            cursor.execute("ROLLBACK")
            errors += 1
            continue
        cursor.execute("COMMIT")
        latencies_ms.append((time.perf_counter() - begun) * 1e3)
    duration_seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    connection.close()
    return {
        "transactions": len(latencies_ms),
        "errors": errors,
        "duration_seconds": duration_seconds,
        "latencies_ms": latencies_ms,
        "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_before,
    }


def _earn(
    cursor: sqlite3.Cursor, number: int, member: str, request_id: str, _draw: random.Random
) -> None:
    partner = partner_id(number)
    now = datetime.now(UTC)
    stamp = sqlite_value(now)
    account = f"member:{member}"
    cursor.execute(CLAIM, (partner, request_id, "earn", EARN_FINGERPRINT, stamp, member))
    (balance,) = cursor.execute(
        MOVE_BALANCE, (EARN_POINTS, member, account, EARN_POINTS)
    ).fetchone()
    (transaction_id,) = cursor.execute(
        INSERT_JOURNAL,
        ("earn", partner, member, EARN_POINTS, balance, stamp, stamp, request_id,
         RATE_VERSION_IDS[number], EARN_SPEND_MINOR, CURRENCIES[number - 1]),
    ).fetchone()  # fmt: skip
    cursor.execute(
        INSERT_POSTINGS,
        (transaction_id, member, account, EARN_POINTS, stamp,
         transaction_id, member, f"partner:{partner}:issuance", -EARN_POINTS, stamp),
    )  # fmt: skip
    cursor.execute(
        INSERT_LOT,
        (member, partner, transaction_id, EARN_POINTS, EARN_POINTS,
         sqlite_value(now + LOT_VALIDITY), stamp),
    )  # fmt: skip
    cursor.execute(INSERT_EVENT, (partner, "earned", member, transaction_id, EARN_POINTS,
                                  balance, stamp))  # fmt: skip
    cursor.execute(RECORD_RESULT, (str(transaction_id), partner, request_id))


def _burn(
    cursor: sqlite3.Cursor, number: int, member: str, request_id: str, draw: random.Random
) -> None:
    partner = partner_id(number)
    points = draw.randint(1, BURN_POINTS_MAX)
    stamp = sqlite_value(datetime.now(UTC))
    account = f"member:{member}"
    cursor.execute(CLAIM, (partner, request_id, "burn", BURN_FINGERPRINT, stamp, member))
    row = cursor.execute(MOVE_BALANCE, (-points, member, account, -points)).fetchone()
    if row is None:
        raise sqlite3.IntegrityError(f"{member} holds fewer than {points} points")
    (balance,) = row
    (transaction_id,) = cursor.execute(
        INSERT_JOURNAL,
        ("burn", partner, member, -points, balance, stamp, stamp, request_id,
         RATE_VERSION_IDS[number], None, None),
    ).fetchone()  # fmt: skip
    cursor.execute(
        INSERT_POSTINGS,
        (transaction_id, member, account, -points, stamp,
         transaction_id, member, f"partner:{partner}:redemption", points, stamp),
    )  # fmt: skip
    points_left = points
    while points_left:
        page = cursor.execute(EARLIEST_LOTS, (member,)).fetchall()
        if not page:
            raise sqlite3.IntegrityError(f"the lots of {member} hold less than its balance")
        taken = []
        for lot_id, remaining_points in page:
            points_taken = min(remaining_points, points_left)
            taken.append((lot_id, points_taken))
            points_left -= points_taken
            if not points_left:
                break
        cursor.executemany(
            INSERT_CONSUMPTION,
            [(transaction_id, member, lot, transaction_id, p) for lot, p in taken],
        )
        cursor.executemany(TAKE_FROM_LOT, [(p, lot, p) for lot, p in taken])
    cursor.execute(INSERT_EVENT, (partner, "burned", member, transaction_id, -points, balance,
                                  stamp))  # fmt: skip
    cursor.execute(RECORD_RESULT, (str(transaction_id), partner, request_id))

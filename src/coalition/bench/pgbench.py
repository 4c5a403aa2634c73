"""The baselines: pgbench running, per transaction, the SQL work of one earn or of one burn,
written by hand with nothing the hub adds (no lock read, no partner or rate lookup, no Python,
no gRPC).

Earn, per transaction: claim the request id, move the member's balance cache (guarded,
RETURNING the balance), insert the journal row (RETURNING its id), both postings in one
INSERT, the lot, the partner event, and record the claim's result.

Burn, per transaction: claim the request id, debit the balance cache (guarded: never below
zero), the journal row, both postings, the lot consumptions earliest expiry first (never-
expiring last, in pages of the hub's size) with their lots' remaining points in one
statement, the event, and the claim's result. Partner, member and points are random.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from coalition.bench.setup import (
    BURN_POINTS_MAX,
    CURRENCIES,
    PARTNER_COUNT,
    bench_rate_version_id,
    partner_id,
)
from coalition.ledger.lots import LOT_PAGE_SIZE

EARN_POINTS = 10
EARN_SPEND_MINOR = 1000
SCRIPTS = ("earn", "burn")
PGBENCH_CANDIDATES = ("pgbench", "/usr/lib/postgresql/15/bin/pgbench")


def earn_script(partner_number: int, members: int) -> str:
    # Variables are cast with CAST(), not `::`: pgbench misreads `:name::type`.
    partner = partner_id(partner_number)
    currency = CURRENCIES[partner_number - 1]
    rate = _literal(bench_rate_version_id(partner_number))
    issuance = _literal(f"partner:{partner}:issuance")
    request = "'pgb-' || CAST(:client_id AS text) || '-' || CAST(:rid AS text)"
    member = "'bm' || CAST(:member AS text)"
    fingerprint = json.dumps(
        {"member.member_id": "bm", "operation": "earn", "spend.amount_minor": EARN_SPEND_MINOR}
    )
    return f"""\\set member random(1, {members})
\\set rid random(1, 9000000000000000000)
BEGIN;
INSERT INTO idempotency_keys (partner_id, request_id, operation, fingerprint, create_time,
  member_id)
  VALUES ('{partner}', {request}, 'earn', '{fingerprint}', now(), {member});
UPDATE member_accounts SET balance_points = balance_points + {EARN_POINTS}
  WHERE member_id = {member} AND account_id = 'member:' || {member}
  AND balance_points + {EARN_POINTS} >= 0
  RETURNING balance_points AS balance \\gset
INSERT INTO journal_transactions (kind, partner_id, member_id, points_delta,
  balance_points_after, occurred_at, create_time, request_id, rate_version_id, amount_minor,
  currency)
  VALUES ('earn', '{partner}', {member}, {EARN_POINTS}, :balance, now(), now(), {request},
  {rate}, {EARN_SPEND_MINOR}, '{currency}')
  RETURNING transaction_id AS tid \\gset
INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)
  VALUES (:tid, {member}, 'member:' || {member}, {EARN_POINTS}, now()),
  (:tid, {member}, {issuance}, -{EARN_POINTS}, now());
INSERT INTO lots (member_id, partner_id, transaction_id, points, remaining_points, expires_at,
  create_time)
  VALUES ({member}, '{partner}', :tid, {EARN_POINTS}, {EARN_POINTS},
  now() + interval '24 months', now());
INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id, points_delta,
  balance_points_after, create_time)
  VALUES ('{partner}', pg_current_xact_id()::text::bigint, 'earned', {member}, :tid,
  {EARN_POINTS}, :balance, now());
UPDATE idempotency_keys SET result_id = CAST(:tid AS text)
  WHERE member_id = {member} AND partner_id = '{partner}' AND request_id = {request}
  AND result_id IS NULL;
END;
"""


def burn_script(partner_number: int, members: int) -> str:
    partner = partner_id(partner_number)
    rate = _literal(bench_rate_version_id(partner_number))
    redemption = _literal(f"partner:{partner}:redemption")
    request = "'pgb-' || CAST(:client_id AS text) || '-' || CAST(:rid AS text)"
    member = "'bm' || CAST(:member AS text)"
    points = "CAST(:points AS bigint)"
    fingerprint = json.dumps({"member.member_id": "bm", "operation": "burn", "points": 1})
    return f"""\\set member random(1, {members})
\\set rid random(1, 9000000000000000000)
\\set points random(1, {BURN_POINTS_MAX})
BEGIN;
INSERT INTO idempotency_keys (partner_id, request_id, operation, fingerprint, create_time,
  member_id)
  VALUES ('{partner}', {request}, 'burn', '{fingerprint}', now(), {member});
UPDATE member_accounts SET balance_points = balance_points - {points}
  WHERE member_id = {member} AND account_id = 'member:' || {member}
  AND balance_points - {points} >= 0
  RETURNING balance_points AS balance \\gset
INSERT INTO journal_transactions (kind, partner_id, member_id, points_delta,
  balance_points_after, occurred_at, create_time, request_id, rate_version_id)
  VALUES ('burn', '{partner}', {member}, 0 - {points}, :balance, now(), now(), {request},
  {rate})
  RETURNING transaction_id AS tid \\gset
INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)
  VALUES (:tid, {member}, 'member:' || {member}, 0 - {points}, now()),
  (:tid, {member}, {redemption}, {points}, now());
WITH page AS (SELECT lot_id, remaining_points, SUM(remaining_points)
    OVER (ORDER BY expires_at ASC NULLS LAST, lot_id) - remaining_points AS points_before
  FROM (SELECT lot_id, remaining_points, expires_at FROM lots
    WHERE member_id = {member} AND remaining_points > 0
    ORDER BY expires_at ASC NULLS LAST, lot_id LIMIT {LOT_PAGE_SIZE}) AS earliest),
taken AS (INSERT INTO lot_consumptions (transaction_id, member_id, lot_id,
    burn_transaction_id, points)
  SELECT :tid, {member}, lot_id, :tid, LEAST(remaining_points, {points} - points_before)
  FROM page WHERE points_before < {points} RETURNING lot_id, points)
UPDATE lots SET remaining_points = lots.remaining_points - taken.points
  FROM taken WHERE lots.member_id = {member} AND lots.lot_id = taken.lot_id;
INSERT INTO events (partner_id, commit_xid, kind, member_id, transaction_id, points_delta,
  balance_points_after, create_time)
  VALUES ('{partner}', pg_current_xact_id()::text::bigint, 'burned', {member}, :tid,
  0 - {points}, :balance, now());
UPDATE idempotency_keys SET result_id = CAST(:tid AS text)
  WHERE member_id = {member} AND partner_id = '{partner}' AND request_id = {request}
  AND result_id IS NULL;
END;
"""


def _literal(value: str) -> str:
    """A SQL string literal without `:name` inside, which pgbench would take for a variable."""
    return " || ':' || ".join(f"'{part}'" for part in value.split(":"))


@dataclass(frozen=True)
class PgbenchResult:
    transactions: int
    errors: int
    duration_seconds: float
    latencies_ms: list[float]
    cpu_seconds: float
    command: list[str]


def pgbench_executable() -> str:
    for candidate in PGBENCH_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("pgbench not found: install the PostgreSQL client tools")


def run_pgbench(
    database_url: str,
    members: int,
    clients: int,
    threads: int,
    transactions_total: int,
    duration_seconds_max: float,
    directory: Path,
    script: str = "earn",
) -> PgbenchResult:
    """Closed loop, `clients` connections, bounded by count (-t per client) and time;
    `script` is one of SCRIPTS."""
    build = {"earn": earn_script, "burn": burn_script}[script]
    scripts = []
    for number in range(1, PARTNER_COUNT + 1):
        path = directory / f"{script}-{number}.sql"
        path.write_text(build(number, members))
        scripts += ["-f", f"{path}@1"]
    url = make_url(database_url)
    per_client = max(1, transactions_total // clients)
    command = [
        pgbench_executable(),
        "-n",  # no vacuum of pgbench's own tables (there are none)
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(threads),
        "-t",
        str(per_client),
        "-l",
        "--log-prefix",
        str(directory / "pgbench_log"),
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        *scripts,
        url.database or "",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration_seconds_max + 60,
        check=False,
    )
    duration_seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode not in (0, 2):  # 2: some clients failed; reported as errors
        raise RuntimeError(f"pgbench failed: {completed.stderr.strip()[-2000:]}")
    latencies_ms = _logged_latencies_ms(directory)
    expected = per_client * clients
    return PgbenchResult(
        transactions=len(latencies_ms),
        errors=expected - len(latencies_ms),
        duration_seconds=duration_seconds,
        latencies_ms=latencies_ms,
        cpu_seconds=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        command=command,
    )


def _logged_latencies_ms(directory: Path) -> list[float]:
    """pgbench -l: `client_id transaction_no time script_no time_epoch time_us` per line,
    time in microseconds of each committed transaction."""
    latencies_ms: list[float] = []
    for path in directory.glob("pgbench_log*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies_ms.append(int(fields[2]) / 1000)
    return latencies_ms

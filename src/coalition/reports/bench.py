"""Report scale benchmark: bulk-load a synthetic ledger of ~10 million postings into an empty,
migrated PostgreSQL database with set-based SQL, then time `coalition report` over it.

    python -m coalition.reports.bench --db postgresql+psycopg://.../bench --out DIR

The ledger: earns (2 postings, 1 lot each), burns at another partner consuming part of an
earlier lot (2 postings, 1 lot consumption), expiries of unspent lots (2 postings). Only for
measuring the report; it bypasses the service functions, so member balance caches are not
maintained (they stay 0).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from coalition.partners.manifest import load_manifests
from coalition.partners.sync import sync_partners
from coalition.reports.command import run_report
from coalition.reports.period import period_argument
from coalition.store import migrate
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork

MEMBERS = 200_000
EARNS = 3_250_000
BURNS = 1_800_000
EXPIRY_EVERY_NTH_LOT = 20  # of the lots no burn touched
START = "2025-01-01 00:00:00+00"
SPAN_SECONDS = 540 * 86_400  # eighteen months of activity

LOAD_STATEMENTS = [
    # A bulk load of rows consistent by construction: skip the per-row foreign key triggers
    # (PostgreSQL superuser only; the hub itself never does this).
    "SET session_replication_role = replica",
    # partner id by number, with its first rate version
    """CREATE TEMP TABLE bench_partners AS
       SELECT (row_number() OVER (ORDER BY p.partner_id)) - 1 AS n, p.partner_id,
              (SELECT r.rate_version_id FROM rate_versions r WHERE r.partner_id = p.partner_id
               ORDER BY r.effective_from LIMIT 1) AS rate_version_id
       FROM partners p""",
    """INSERT INTO accounts (account_id, kind, partner_id)
       SELECT 'partner:' || partner_id || ':breakage', 'partner_breakage', partner_id
       FROM bench_partners ON CONFLICT DO NOTHING""",
    f"""INSERT INTO members (member_id, display_name, create_time)
        SELECT 'bm' || g, 'bench member', TIMESTAMPTZ '{START}' + (g % 500) * INTERVAL '1 day'
        FROM generate_series(0, {MEMBERS - 1}) g""",
    f"""INSERT INTO member_accounts (account_id, kind, member_id, balance_points)
        SELECT 'member:bm' || g, 'member', 'bm' || g, 0 FROM generate_series(0, {MEMBERS - 1}) g""",
    # earns: transaction ids 1..EARNS
    f"""INSERT INTO journal_transactions (transaction_id, kind, partner_id, member_id,
            points_delta, balance_points_after, occurred_at, create_time, request_id,
            rate_version_id)
        SELECT g, 'earn', p.partner_id, 'bm' || (g % {MEMBERS}), 10 + g % 50, 10 + g % 50,
               t.at, t.at, 'e' || g, p.rate_version_id
        FROM generate_series(1, {EARNS}) g
        JOIN bench_partners p ON p.n = g % (SELECT count(*) FROM bench_partners)
        CROSS JOIN LATERAL (SELECT TIMESTAMPTZ '{START}'
            + (g::bigint * {SPAN_SECONDS} / {EARNS}) * INTERVAL '1 second' AS at) t""",
    f"""INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)
        SELECT transaction_id, member_id, 'member:' || member_id, points_delta, create_time
        FROM journal_transactions WHERE transaction_id <= {EARNS}
        UNION ALL
        SELECT transaction_id, member_id, 'partner:' || partner_id || ':issuance', -points_delta,
               create_time
        FROM journal_transactions WHERE transaction_id <= {EARNS}""",
    f"""INSERT INTO lots (lot_id, member_id, partner_id, transaction_id, points,
            remaining_points, expires_at, create_time)
        SELECT transaction_id, member_id, partner_id, transaction_id, points_delta,
               points_delta, occurred_at + INTERVAL '12 months', create_time
        FROM journal_transactions WHERE transaction_id <= {EARNS}""",
    # burns: transaction EARNS + g burns half of lot g at the next partner, ten days later
    f"""INSERT INTO journal_transactions (transaction_id, kind, partner_id, member_id,
            points_delta, balance_points_after, occurred_at, create_time, request_id,
            rate_version_id)
        SELECT {EARNS} + l.lot_id, 'burn', p.partner_id, l.member_id, -(l.points / 2), 0,
               l.create_time + INTERVAL '10 days', l.create_time + INTERVAL '10 days',
               'b' || l.lot_id, p.rate_version_id
        FROM lots l
        JOIN bench_partners p ON p.n = (l.lot_id + 1) % (SELECT count(*) FROM bench_partners)
        WHERE l.lot_id <= {BURNS}""",
    f"""INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)
        SELECT transaction_id, member_id, 'member:' || member_id, points_delta, create_time
        FROM journal_transactions WHERE transaction_id > {EARNS} AND kind = 'burn'
        UNION ALL
        SELECT transaction_id, member_id, 'partner:' || partner_id || ':redemption',
               -points_delta, create_time
        FROM journal_transactions WHERE transaction_id > {EARNS} AND kind = 'burn'""",
    f"""INSERT INTO lot_consumptions (transaction_id, member_id, lot_id, burn_transaction_id,
            points)
        SELECT {EARNS} + lot_id, member_id, lot_id, {EARNS} + lot_id, points / 2
        FROM lots WHERE lot_id <= {BURNS}""",
    f"""UPDATE lots SET remaining_points = points - points / 2 WHERE lot_id <= {BURNS}""",
    # expiries of every nth untouched lot that is due before the end of the activity
    f"""INSERT INTO journal_transactions (transaction_id, kind, partner_id, member_id,
            points_delta, balance_points_after, occurred_at, create_time, request_id)
        SELECT {EARNS + BURNS} + l.lot_id, 'expire', l.partner_id, l.member_id,
               -l.remaining_points, 0, l.expires_at, l.expires_at, 'x' || l.lot_id
        FROM lots l
        WHERE l.lot_id > {BURNS} AND l.lot_id % {EXPIRY_EVERY_NTH_LOT} = 0
          AND l.expires_at < TIMESTAMPTZ '{START}' + INTERVAL '{SPAN_SECONDS} seconds'""",
    f"""INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)
        SELECT transaction_id, member_id, 'member:' || member_id, points_delta, create_time
        FROM journal_transactions WHERE transaction_id > {EARNS + BURNS}
        UNION ALL
        SELECT transaction_id, member_id, 'partner:' || partner_id || ':breakage',
               -points_delta, create_time
        FROM journal_transactions WHERE transaction_id > {EARNS + BURNS}""",
    f"""INSERT INTO lot_expiries (transaction_id, member_id, lot_id, expiry_round, points)
        SELECT transaction_id, member_id, transaction_id - {EARNS + BURNS}, 1, -points_delta
        FROM journal_transactions WHERE transaction_id > {EARNS + BURNS}""",
    f"""UPDATE lots SET remaining_points = 0
        WHERE lot_id IN (SELECT transaction_id - {EARNS + BURNS} FROM journal_transactions
                         WHERE transaction_id > {EARNS + BURNS})""",
    "SELECT setval(pg_get_serial_sequence('journal_transactions', 'transaction_id'),"
    " (SELECT max(transaction_id) FROM journal_transactions))",
    "SELECT setval(pg_get_serial_sequence('lots', 'lot_id'), (SELECT max(lot_id) FROM lots))",
]


def load(engine: Engine, partners_directory: Path) -> float:
    assert engine.dialect.name == "postgresql", "the scale benchmark runs on PostgreSQL"
    started = time.perf_counter()
    migrate.upgrade(engine)
    sync_partners(UnitOfWork(engine), load_manifests(partners_directory), datetime.now(UTC))
    # Straight to psycopg without parameters, so `%` is SQL's modulo, not a placeholder.
    raw = engine.raw_connection()
    try:
        for statement in LOAD_STATEMENTS:
            cursor = raw.cursor()
            cursor.execute(statement)
            cursor.close()
        raw.commit()
        # What an operator does after a bulk load: set hint bits and the visibility map and
        # gather statistics, so the report is timed on a settled table, not on the first
        # reads that rewrite every freshly loaded page.
        driver_connection = raw.driver_connection
        assert driver_connection is not None
        driver_connection.autocommit = True
        driver_connection.execute("VACUUM (ANALYZE)")
    finally:
        raw.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coalition.reports.bench")
    parser.add_argument("--db", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--out", required=True)
    parser.add_argument("--period", default=period_argument("2026-06"), type=period_argument)
    parser.add_argument("--partners", default="partners")
    parser.add_argument("--skip-load", action="store_true")
    arguments = parser.parse_args(argv)
    engine = create_database_engine(arguments.db)
    if not arguments.skip_load:
        print(f"loaded in {load(engine, Path(arguments.partners)):.1f} s", flush=True)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM postings")).scalar_one()
    print(f"postings: {count}", flush=True)
    started = time.perf_counter()
    report_arguments = argparse.Namespace(period=arguments.period, out=arguments.out, partner=None)
    run_report(engine, report_arguments)
    print(f"report: {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

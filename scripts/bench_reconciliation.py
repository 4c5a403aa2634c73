"""Reconciliation at scale: a 1,000,000-row partner report against a 1,000,000-operation ledger.

Creates a throwaway PostgreSQL database, fills the ledger set-based (INSERT ... SELECT
generate_series), writes the matching partner CSV with a few planted exceptions, then runs the
real `coalition reconcile run` under /usr/bin/time -v and prints its wall time and peak RSS.
Drops the database at the end.

    .venv/bin/python scripts/bench_reconciliation.py [--rows 1000000] [--server URL]
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from coalition.store import migrate
from coalition.store.engine import create_database_engine

SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE_NAME = "coalition_bench_reconciliation"
PARTNER_ID = "bench-coffee"
START = datetime(2026, 1, 1, tzinfo=UTC)
OPERATIONS_PER_MEMBER = 10
# Planted in the report: every 100,000th operation left out, mismatched, duplicated.
PLANT_EVERY = 100_000

LEDGER_SQL = (
    """INSERT INTO partners (partner_id, name, kind, currency, roles, points_validity_months,
         create_time, update_time)
       VALUES (:partner, 'Bench Coffee', 'coffee_chain', 'CNY', 'partner', NULL, now(), now())""",
    """INSERT INTO members (member_id, display_name, create_time)
       SELECT 'm' || g, 'Member ' || g, now() FROM generate_series(1, :members) g""",
    """INSERT INTO partner_links (partner_id, partner_customer_id, member_id, create_time)
       SELECT :partner, 'c' || g, 'm' || g, now() FROM generate_series(1, :members) g""",
    # Every operation an earn of (g mod 500) + 1 points, one per second from START.
    """INSERT INTO journal_transactions (kind, partner_id, member_id, points_delta,
         balance_points_after, occurred_at, create_time, request_id, amount_minor, currency,
         partner_reference)
       SELECT 'earn', :partner, 'm' || ((g - 1) / :per_member + 1), (g % 500) + 1,
              (g % 500) + 1, :start + g * interval '1 second', now(), 'req-' || g,
              ((g % 500) + 1) * 1000, 'CNY', 'receipt-' || g
       FROM generate_series(1, :rows) g""",
    "ANALYZE",
)


def build_ledger(url: str, rows: int) -> None:
    engine = create_database_engine(url)
    migrate.upgrade(engine)
    parameters = {
        "partner": PARTNER_ID,
        "members": rows // OPERATIONS_PER_MEMBER,
        "per_member": OPERATIONS_PER_MEMBER,
        "rows": rows,
        "start": START,
    }
    with engine.begin() as connection:
        for statement in LEDGER_SQL:
            connection.execute(text(statement), parameters)
    engine.dispose()


def write_report(path: Path, rows: int) -> None:
    """The partner's view, streamed row by row: matching except for the planted rows."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\r\n")
        writer.writerow(
            [
                "request_id",
                "type",
                "points",
                "occurred_at",
                "partner_reference",
                "member",
                "amount_minor",
                "currency",
            ]
        )
        for g in range(1, rows + 1):
            points = g % 500 + 1
            occurred_at = (START + timedelta(seconds=g)).isoformat().replace("+00:00", "Z")
            member = f"c{(g - 1) // OPERATIONS_PER_MEMBER + 1}"
            row = [
                f"req-{g}",
                "earn",
                points,
                occurred_at,
                f"receipt-{g}",
                member,
                points * 1000,
                "CNY",
            ]
            if g % PLANT_EVERY == 1:
                continue  # missing in partner
            if g % PLANT_EVERY == 2:
                row[2] = points + 1  # mismatched
            writer.writerow(row)
            if g % PLANT_EVERY == 3:
                writer.writerow(row)  # duplicated
        writer.writerow(
            ["req-ghost", "earn", 5, START.isoformat().replace("+00:00", "Z"), "", "", "", ""]
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--server", default=SERVER_URL)
    arguments = parser.parse_args()
    administration = create_engine(arguments.server, isolation_level="AUTOCOMMIT")
    with administration.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{DATABASE_NAME}"'))
    url = arguments.server.rsplit("/", 1)[0] + f"/{DATABASE_NAME}"
    try:
        started = time.monotonic()
        build_ledger(url, arguments.rows)
        print(f"ledger: {arguments.rows} operations in {time.monotonic() - started:.1f} s")
        with tempfile.TemporaryDirectory() as directory:
            report = Path(directory) / "report.csv"
            write_report(report, arguments.rows)
            print(f"report: {report.stat().st_size / 1e6:.1f} MB")
            command = [
                "/usr/bin/time",
                "-v",
                sys.executable,
                "-m",
                "coalition.reconciliation",
                "run",
                "--partner",
                PARTNER_ID,
                str(report),
                "--db",
                url,
                "--output-dir",
                directory,
            ]
            print("$ " + " ".join(command))
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            print(result.stdout)
            print(
                result.stderr[-3000:]
                if result.returncode not in (0, 1) or not result.stdout
                else ""
            )
            wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", result.stderr)
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
            print(f"exit {result.returncode}")
            print(f"wall clock: {wall.group(1) if wall else '?'}")
            print(f"peak RSS: {int(rss.group(1)) / 1024:.0f} MiB" if rss else result.stderr)
    finally:
        with administration.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)'))
        administration.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

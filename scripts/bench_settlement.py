"""Measure building one settlement statement of N entries for one partner on PostgreSQL.

Usage: .venv/bin/python scripts/bench_settlement.py --entries 1000000
       [--server postgresql+psycopg://postgres@127.0.0.1:5432/test]

Creates a throwaway database on the server, generates N earns of one partner set-based
(INSERT ... SELECT generate_series: journal rows and their two postings each, no Python
loop), builds the statement, exports and verifies it, prints wall time and peak RSS of each
step, and drops the database. Lots are not generated: settlement never reads them.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from coalition.partners.manifest import PartnerManifest, RateVersionManifest
from coalition.partners.sync import sync_partners
from coalition.settlement import export, keys, service, verify
from coalition.settlement.service import Signer
from coalition.store import migrate
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork

PARTNER = PartnerManifest(
    partner_id="bench-coffee",
    name="Bench Coffee",
    kind="coffee_chain",
    currency="CNY",
    roles=("partner",),
    points_validity_months=None,
    rate_versions=(
        RateVersionManifest(
            effective_from=datetime(2025, 1, 1, tzinfo=UTC),
            earn_points_per_unit=Decimal("0.1"),
            native_points_rate=None,
            burn_value_minor_per_point=Decimal("5"),
            issuance_price_minor_per_point=Decimal("6.01"),
            redemption_price_minor_per_point=Decimal("4.5"),
        ),
    ),
)
PERIOD_LAST_DAY = date(2026, 1, 31)

GENERATE = """
INSERT INTO members (member_id, display_name, create_time)
VALUES ('bench-member', 'Bench', '2026-01-01T00:00:00Z');
INSERT INTO accounts (account_id, kind, member_id, balance_points)
VALUES ('member:bench-member', 'member', 'bench-member', :entries * 7);
INSERT INTO journal_transactions (transaction_id, kind, partner_id, member_id, points_delta,
    balance_points_after, occurred_at, create_time, request_id, rate_version_id)
SELECT g, 'earn', 'bench-coffee', 'bench-member', 7, g * 7,
    timestamptz '2026-01-01T00:00:00Z' + g * interval '1 millisecond',
    timestamptz '2026-01-01T00:00:00Z' + g * interval '1 millisecond',
    'bench-' || g, 'bench-coffee@2025-01-01T00:00:00Z'
FROM generate_series(1, :entries) AS g;
INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)
SELECT transaction_id, member_id, 'member:bench-member', 7, create_time
FROM journal_transactions;
INSERT INTO postings (transaction_id, member_id, account_id, points, create_time)
SELECT transaction_id, member_id, 'partner:bench-coffee:issuance', -7, create_time
FROM journal_transactions;
SELECT setval(pg_get_serial_sequence('journal_transactions', 'transaction_id'), :entries);
ANALYZE;
"""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(label: str, step: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = step()
    print(
        f"{label:<28} {time.perf_counter() - started:8.2f} s   peak RSS {peak_rss_mib():7.1f} MiB"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    arguments = parser.parse_args()
    server_url = make_url(arguments.server)
    name = f"coalition_bench_{uuid.uuid4().hex[:8]}"
    administration = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with administration.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        run(server_url.set(database=name).render_as_string(hide_password=False), arguments.entries)
    finally:
        with administration.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


def generate(engine: Any, entries: int) -> None:
    with engine.begin() as connection:
        for statement in filter(str.strip, GENERATE.split(";")):
            connection.execute(text(statement), {"entries": entries})


def run(database_url: str, entries: int) -> None:
    engine = create_database_engine(database_url)
    migrate.upgrade(engine)
    now = datetime.now(UTC)
    sync_partners(UnitOfWork(engine), [PARTNER], now)
    print(f"entries: {entries}   baseline peak RSS {peak_rss_mib():.1f} MiB")
    timed("generate (SQL)", lambda: generate(engine, entries))
    with tempfile.TemporaryDirectory() as directory:
        key_path = Path(directory) / "signing.pem"
        key = keys.generate(UnitOfWork(engine), key_path, now)
        signer = Signer.from_file(key_path)
        result = timed(
            "build statement",
            lambda: service.settle_partner(
                UnitOfWork(engine), PARTNER.partner_id, PERIOD_LAST_DAY, signer, now
            ),
        )
        assert result.created and result.statement.entry_count == entries
        out = Path(directory) / "export"
        unit_of_work = partial(UnitOfWork, engine)
        timed(
            "export",
            lambda: export.export_statement(unit_of_work, result.statement.statement_id, out),
        )
        verification = timed("verify (offline)", lambda: verify.verify_export(out, key.public_key))
        assert verification.ok, verification.failures
    print(result.statement.body_document()["money"])
    engine.dispose()


if __name__ == "__main__":
    main()

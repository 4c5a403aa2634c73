"""`coalition demo`: the product's story end to end, on the embedded SQLite default.

Four partners of one group (coffee chain, supermarket, airline, cinema) share one currency.
Last month is replayed at its own instants (demo/last_month.py): members across brands, earns
with a tier upgrade and a promotion, a cross-brand burn, a hold, a refund. Today's traffic goes
through real gRPC calls on loopback (demo/today.py): a retried burn replayed, mistakes refused.
Then last month is closed (demo/closing.py): settled and signed, verified offline, a partner's
report reconciled, the integrity proof, the report written.

The demo's partners and programme ship inside the package (demo/partners, demo/programme), so
the command works from any directory once installed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from coalition.demo import closing, last_month, today
from coalition.demo.output import say
from coalition.ledger.totals import partner_totals
from coalition.partners.manifest import load_manifests
from coalition.partners.sync import sync_partners
from coalition.programme.config import load_programme
from coalition.reports.period import Period, month_period
from coalition.store import migrate
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork

DEMO_DATA_DIRECTORY = Path(__file__).resolve().parent
PARTNERS_DIRECTORY = DEMO_DATA_DIRECTORY / "partners"
PROGRAMME_DIRECTORY = DEMO_DATA_DIRECTORY / "programme"


def run(database_url: str | None, partners_directory: Path | None, out: Path | None) -> int:
    partners_directory = partners_directory or PARTNERS_DIRECTORY
    programme = load_programme(PROGRAMME_DIRECTORY)
    manifests = load_manifests(partners_directory)
    period = closed_month(datetime.now(UTC))
    out_directory = out or Path(tempfile.mkdtemp(prefix="coalition-demo-"))
    out_directory.mkdir(parents=True, exist_ok=True)
    with _database(database_url) as url:
        engine = create_database_engine(url)
        try:
            migrate.prepare(engine)
            # The partners joined before the month the demo replays.
            sync_partners(UnitOfWork(engine), manifests, period.start - timedelta(days=1))
            say(f"Ledger: {engine.url.render_as_string(hide_password=True)}")
            say(
                f"Partners from {partners_directory}/: "
                + ", ".join(f"{m.partner_id} ({m.kind}, {m.currency})" for m in manifests)
            )
            say(f"Programme from {PROGRAMME_DIRECTORY}/: tiers and promotions")
            month = last_month.replay(engine, manifests, programme, period)
            section = today.story(engine, manifests, programme, month, first_section=7)
            _print_partner_totals(engine, section)
            section = closing.close_period(
                engine, manifests, partners_directory, period, month, out_directory, section + 1
            )
        finally:
            engine.dispose()
    say(f"\nEverything the demo wrote is in {out_directory}")
    return 0


def closed_month(now: datetime) -> Period:
    """The calendar month before `now`'s: over, so it can be settled."""
    last_day = now.date().replace(day=1) - timedelta(days=1)
    return month_period(last_day.year, last_day.month)


@contextmanager
def _database(database_url: str | None) -> Iterator[str]:
    if database_url:
        yield database_url
        return
    with tempfile.TemporaryDirectory(prefix="coalition-demo-db-") as directory:
        yield f"sqlite:///{directory}/demo.db"


def _print_partner_totals(engine: Engine, section: int) -> None:
    say(f"\n{section}. Per-partner totals, derived from the journal's postings")
    say(
        f"   {'partner':<16} {'transactions':>12} {'issued':>9} {'redeemed':>9} "
        f"{'earn rev.':>9} {'burn rev.':>9}"
    )
    for totals in partner_totals(UnitOfWork(engine, read_only=True)):
        say(
            f"   {totals.partner_id:<16} {totals.transactions:>12} {totals.points_issued:>9} "
            f"{totals.points_redeemed:>9} {totals.points_issued_reversed:>9} "
            f"{totals.points_redeemed_reversed:>9}"
        )

"""The bench's own throwaway databases: a PostgreSQL database created on the server, or a
SQLite file (the product's default); migrated with coalition's migrations, four partners, N
members (set-based inserts) with a starting balance, API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.engine import make_url

from coalition.domain.points import Money
from coalition.identity.members import MemberReference
from coalition.operations import batch_earn
from coalition.operations.points import EarnCommand
from coalition.partners import credentials
from coalition.partners.manifest import PartnerManifest, RateVersionManifest
from coalition.partners.sync import rate_version_id, sync_partners
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store import citus, migrate
from coalition.store.engine import create_database_engine, normalise_database_url
from coalition.store.schema import UtcDateTime
from coalition.store.unit_of_work import UnitOfWork

RATES_EFFECTIVE_FROM = datetime(2020, 1, 1, tzinfo=UTC)
PARTNER_COUNT = 4
CURRENCIES = ("EUR", "CNY", "GBP", "EUR")
SEED_SPEND_MINOR = 100_000  # 1,000 points per member at 1 point per major unit
# Each burn of a run takes 1 to this many points: a member would need 200 burns in one run
# to run dry (a default run makes at most ~60,000 burns over 100,000 members).
BURN_POINTS_MAX = 5
SEED_BATCH_SIZE = batch_earn.BATCH_EARN_ITEMS_MAX


def partner_id(number: int) -> str:
    """Bench partners are bench-1 .. bench-4 (pgbench scripts compute them from a number)."""
    return f"bench-{number}"


def member_id(number: int) -> str:
    return f"bm{number}"


def bench_partners() -> list[PartnerManifest]:
    return [
        PartnerManifest(
            partner_id=partner_id(number),
            name=f"Bench Partner {number}",
            kind="bench",
            currency=CURRENCIES[number - 1],
            roles=("partner",),
            points_validity_months=24,
            rate_versions=(
                RateVersionManifest(
                    effective_from=RATES_EFFECTIVE_FROM,
                    earn_points_per_unit=Decimal(1),
                    native_points_rate=None,
                    burn_value_minor_per_point=Decimal(1),
                    issuance_price_minor_per_point=Decimal("1.2"),
                    redemption_price_minor_per_point=Decimal("0.9"),
                ),
            ),
        )
        for number in range(1, PARTNER_COUNT + 1)
    ]


def bench_rate_version_id(number: int) -> str:
    return rate_version_id(partner_id(number), RATES_EFFECTIVE_FROM)


@dataclass(frozen=True)
class BenchDatabase:
    url: str
    api_keys: dict[str, str]  # partner id -> API key (bench-only database, thrown away)
    members: int


def create_bench_database(server_url: str, name: str) -> str:
    """A fresh database `name` on the server (dropped first if it exists); on a Citus
    coordinator, a cluster of its own over the coordinator's workers (store/citus.py)."""
    url = make_url(normalise_database_url(server_url))
    administration = create_engine(url, isolation_level="AUTOCOMMIT")
    with administration.connect() as connection:
        workers = citus.worker_nodes(connection)
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    administration.dispose()
    if workers is not None:
        citus.join_cluster(url, name, workers)
    return url.set(database=name).render_as_string(hide_password=False)


def sqlite_bench_database_url(directory: Path) -> str:
    """A fresh SQLite file in `directory` (the product's default database)."""
    path = directory / "coalition-bench.db"
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def drop_bench_database(server_url: str, name: str) -> None:
    administration = create_engine(
        make_url(normalise_database_url(server_url)), isolation_level="AUTOCOMMIT"
    )
    with administration.connect() as connection:
        workers = citus.worker_nodes(connection)
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    administration.dispose()
    citus.drop_on_workers(make_url(normalise_database_url(server_url)), name, workers or [])


def prepare_bench_database(url: str, members: int) -> BenchDatabase:
    engine = create_database_engine(url)
    try:
        migrate.upgrade(engine)
        now = datetime.now(UTC)
        sync_partners(UnitOfWork(engine), bench_partners(), now)
        _insert_members(engine, members, now)
        _seed_balances(engine, members, now)
        api_keys = {
            partner_id(number): credentials.issue_key(
                UnitOfWork(engine), partner_id(number), "partner", now
            ).api_key
            for number in range(1, PARTNER_COUNT + 1)
        }
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return BenchDatabase(url, api_keys, members)


# The numbers 1..:members (and 1..:partners) as a row source, per dialect: SQLite has no
# generate_series outside its shell, so a recursive common table expression counts instead.
_SERIES = {
    "postgresql": (
        "", "generate_series(1, :members) AS n", "generate_series(1, :partners) AS p"
    ),
    "sqlite": (
        "WITH RECURSIVE n(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM n WHERE n < :members),"
        " p(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM p WHERE p < :partners) ",
        "n",
        "p",
    ),
}  # fmt: skip


def _insert_members(engine: Engine, members: int, now: datetime) -> None:
    """Members, their accounts and their links as enrolment creates them, in three set-based
    statements."""
    series, numbers, partners = _SERIES[engine.dialect.name]
    parameters = {"now": now, "members": members, "partners": PARTNER_COUNT}
    stamp = bindparam("now", type_=UtcDateTime)  # as the schema stores a time, per dialect
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO members (member_id, display_name, create_time) "
                f"{series}SELECT 'bm' || n, 'Bench member', :now FROM {numbers}"
            ).bindparams(stamp),
            parameters,
        )
        connection.execute(
            text(
                "INSERT INTO member_accounts (account_id, kind, member_id, balance_points) "
                f"{series}SELECT 'member:bm' || n, 'member', 'bm' || n, 0 FROM {numbers}"
            ),
            parameters,
        )
        # Every member shops at every bench partner, as linked customers (bm<n>): burns and
        # balances are only for members linked to the caller (docs/identity.md, "Privacy
        # between partners").
        connection.execute(
            text(
                "INSERT INTO partner_links (partner_id, partner_customer_id, member_id, "
                f"create_time) {series}SELECT 'bench-' || p, 'bm' || n, 'bm' || n, :now "
                f"FROM {numbers} CROSS JOIN {partners}"
            ).bindparams(stamp),
            parameters,
        )


def _seed_balances(engine: Engine, members: int, now: datetime) -> None:
    """A starting balance for every member, through batch earn (so every invariant holds),
    under the default programme: the bench's hubs serve without --programme."""
    for first in range(1, members + 1, SEED_BATCH_SIZE):
        numbers = range(first, min(first + SEED_BATCH_SIZE, members + 1))
        number = 1 + (first // SEED_BATCH_SIZE) % PARTNER_COUNT
        commands = [
            EarnCommand(
                request_id=f"seed-{n}",
                member=MemberReference(member_id=member_id(n)),
                spend=Money(SEED_SPEND_MINOR, CURRENCIES[number - 1]),
            )
            for n in numbers
        ]
        result = batch_earn.batch_earn(
            UnitOfWork(engine), DEFAULT_PROGRAMME, partner_id(number), commands, True, now
        )
        assert result.applied_count + result.replayed_count == len(commands)

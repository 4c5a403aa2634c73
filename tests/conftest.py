"""Shared fixtures: real databases (SQLite file, PostgreSQL) and a real gRPC hub on loopback.

PostgreSQL comes from COALITION_TEST_DATABASE_URL (default: the local server's `test`
database). Each pytest run creates its own database next to it and drops it at the end, so
runs never see each other's rows; each test starts from empty tables.
"""

from __future__ import annotations

import gc
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from coalition.api import interceptors
from coalition.api.server import Hub
from coalition.partners import credentials
from coalition.partners.manifest import PartnerManifest, RateVersionManifest
from coalition.partners.sync import sync_partners
from coalition.programme.config import DEFAULT_PROGRAMME, Programme
from coalition.programme.promotion_catalogue import CATALOGUE
from coalition.settings import identity_secret_from
from coalition.store import citus, migrate
from coalition.store.engine import create_database_engine, normalise_database_url
from coalition.store.schema import metadata
from coalition.store.unit_of_work import UnitOfWork

# Hypothesis's timing checks (an example's deadline, slow input generation) judge the machine,
# not the code: on a busy 2-core CI runner the first draws of `st.timezones()` alone took 1.4 s.
# The properties still run every example they draw.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


POSTGRES_URL = os.environ.get(
    "COALITION_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DATABASES = ("sqlite", "postgresql")
# Parameters of the fixtures that give a test each database, marked with the database's name
# so that a run can choose one (`make test-fast`: -m "... and not postgresql").
DATABASE_PARAMS = [pytest.param(name, marks=getattr(pytest.mark, name)) for name in DATABASES]

# The kinds of test (pyproject.toml's markers). Each test carries at least one, so that a run
# can choose by kind (`make test-fast`); one without is refused at collection.
TEST_KINDS = frozenset(
    ("unit", "integration", "end_to_end", "process", "reliability", "bench", "browser", "citus")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if not any(marker.name in TEST_KINDS for marker in item.iter_markers())
    ]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) carry no kind marker ({', '.join(sorted(TEST_KINDS))}):\n  "
            + "\n  ".join(unmarked)
        )


def rate(
    effective_from: datetime, earn: str, burn: str, native: str | None = None
) -> RateVersionManifest:
    return RateVersionManifest(
        effective_from=effective_from,
        earn_points_per_unit=Decimal(earn),
        native_points_rate=None if native is None else Decimal(native),
        burn_value_minor_per_point=Decimal(burn),
        issuance_price_minor_per_point=Decimal("1.2") * Decimal(burn),
        redemption_price_minor_per_point=Decimal("0.9") * Decimal(burn),
    )


# Test partners, independent of the demo manifests in partners/. They allow backdating by
# years (the documented default is 7 days) because the tests place traffic across rate
# versions and validity periods at chosen instants; the default's own tests
# (tests/integration/test_backdating.py) declare partners without it.
TESTS_BACKDATING_DAYS_MAX = 3_660
COFFEE = PartnerManifest(
    partner_id="test-coffee",
    name="Test Coffee",
    kind="coffee_chain",
    currency="CNY",
    roles=("partner", "merchant"),
    points_validity_months=24,
    rate_versions=(
        rate(datetime(2025, 1, 1, tzinfo=UTC), earn="0.1", burn="5"),
        rate(datetime(2026, 1, 1, tzinfo=UTC), earn="0.2", burn="5"),
    ),
    backdating_days_max=TESTS_BACKDATING_DAYS_MAX,
)
AIR = PartnerManifest(
    partner_id="test-air",
    name="Test Air",
    kind="airline",
    currency="EUR",
    roles=("partner",),
    points_validity_months=36,
    rate_versions=(rate(datetime(2025, 1, 1, tzinfo=UTC), earn="1", burn="1", native="0.5"),),
    backdating_days_max=TESTS_BACKDATING_DAYS_MAX,
)
CINEMA = PartnerManifest(
    partner_id="test-cinema",
    name="Test Cinema",
    kind="cinema",
    currency="GBP",
    roles=("partner",),
    points_validity_months=12,
    rate_versions=(rate(datetime(2025, 6, 1, tzinfo=UTC), earn="1", burn="0.85"),),
    backdating_days_max=TESTS_BACKDATING_DAYS_MAX,
)
TEST_PARTNERS = (COFFEE, AIR, CINEMA)


# On Citus, shards per distributed table in the test database (each test truncates them all).
CITUS_TEST_SHARD_COUNT = 4


@contextmanager
def migrated_postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the test PostgreSQL server, migrated, dropped after use.

    When that server is a Citus coordinator (its database has the extension), the database is
    created on every worker too and joined into a cluster of its own, with the layout
    `coalition db upgrade` applies (store/citus.py)."""
    server_url = make_url(normalise_database_url(POSTGRES_URL))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    administration = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with administration.connect() as connection:
            workers = citus.worker_nodes(connection)
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # the suite needs PostgreSQL: say so plainly
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {error}")
    url = server_url.set(database=name)
    if workers is not None:
        citus.join_cluster(url, name, workers, CITUS_TEST_SHARD_COUNT)
    engine = create_database_engine(url.render_as_string(hide_password=False))
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with administration.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        administration.dispose()
        citus.drop_on_workers(url, name, workers or [])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this run's own on the test PostgreSQL server, migrated once; on a Citus
    coordinator, a cluster of its own, so that the whole suite runs on Citus."""
    with migrated_postgres_database("coalition_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    engine = create_database_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


# Emptying the test database between tests. TRUNCATE of every table costs 120-350 ms a test
# (it gives each table and index a new file); a DELETE of the few rows a test wrote, child
# tables first, and a restart of the sequences it used, take a few ms in one round trip.
_DELETE_EVERY_ROW = "".join(
    f'DELETE FROM "{table.name}"; ' for table in reversed(metadata.sorted_tables)
)
POSTGRES_EMPTYING = f"""
    DO $$
    DECLARE used record;
    BEGIN
      {_DELETE_EVERY_ROW}
      FOR used IN SELECT schemaname, sequencename FROM pg_sequences WHERE last_value IS NOT NULL
      LOOP
        EXECUTE format('ALTER SEQUENCE %I.%I RESTART', used.schemaname, used.sequencename);
      END LOOP;
    END $$
"""
_TRUNCATE_EVERY_TABLE = "TRUNCATE {} RESTART IDENTITY CASCADE".format(
    ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
)


@pytest.fixture(scope="session")
def postgres_emptying_statement(postgres_url: str) -> str:
    """The statement that empties the test database: DELETE, or TRUNCATE on Citus (whose
    distributed tables are emptied shard by shard either way, and TRUNCATE is its own path)."""
    engine = create_database_engine(postgres_url)
    with engine.connect() as connection:
        on_citus = connection.execute(
            text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
        ).first()
    engine.dispose()
    return _TRUNCATE_EVERY_TABLE if on_citus else POSTGRES_EMPTYING


@pytest.fixture(params=DATABASE_PARAMS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """An empty, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = create_database_engine(url)
    with engine.begin() as connection:
        connection.execute(text(request.getfixturevalue("postgres_emptying_statement")))
    engine.dispose()
    CATALOGUE.invalidate()  # this process's promotions were the emptied database's
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url)
    sync_partners(UnitOfWork(engine), list(TEST_PARTNERS), datetime.now(UTC))
    yield engine
    engine.dispose()


@pytest.fixture
def programme() -> Programme:
    """The programme the `hub` fixture serves; a test that needs another overrides this
    fixture (its module's own `programme`, or a parametrisation of it)."""
    return DEFAULT_PROGRAMME


@pytest.fixture
def hub(engine: Engine, programme: Programme) -> Iterator[Hub]:
    # The identity secret as a hub process takes it at start (tests set it with monkeypatch).
    hub = Hub(
        engine,
        "127.0.0.1:0",
        programme=programme,
        identity_secret=identity_secret_from(os.environ),
    ).start()
    yield hub
    hub.stop(grace_seconds=0)


@pytest.fixture
def channel(hub: Hub) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
        yield channel


def api_key(engine: Engine, principal_id: str, role: str = "partner") -> tuple[tuple[str, str]]:
    """gRPC metadata carrying a fresh API key for the principal."""
    issued = credentials.issue_key(UnitOfWork(engine), principal_id, role, datetime.now(UTC))
    return (("authorization", f"Bearer {issued.api_key}"),)


@pytest.fixture
def no_principal_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interceptor remembers a key's principal for PRINCIPAL_CACHE_SECONDS (2 s), so a
    revoked key keeps working that long by design. Caching nothing lets a test see the
    revocation at once instead of sleeping through the window; the interceptor reads the
    constant on every lookup, so patching the module attribute takes effect immediately."""
    assert interceptors.PRINCIPAL_CACHE_SECONDS > 0, "the cache is off: nothing to patch"
    monkeypatch.setattr(interceptors, "PRINCIPAL_CACHE_SECONDS", 0.0)


@pytest.fixture(autouse=True)
def _garbage_collected_after_each_test() -> Iterator[None]:
    """Collect garbage when each test ends: an object left unclosed (a connection, say) then
    warns, as an error, in the test that left it, not in whichever later test the collector
    happens to run during."""
    yield
    gc.collect()

"""One generated ledger per database for the whole run, shared by the report tests that only
read it (a report writes nothing); tests that write get the function-scoped `engine`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from coalition.partners.sync import sync_partners
from coalition.programme.promotion_catalogue import CATALOGUE
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork
from tests.conftest import DATABASES, TEST_PARTNERS, migrated_postgres_database
from tests.reports.ledger_model import Model, generate

GENERATED_SEED = 20260701


@dataclass(frozen=True)
class GeneratedLedger:
    """The ledger `generate` built, where it lives, and the model that predicts its figures.
    Read it only: every test of the run that asks for it sees the same rows."""

    database_url: str
    engine: Engine
    model: Model


@pytest.fixture(scope="session", params=DATABASES)
def generated_ledger(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[GeneratedLedger]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("generated") / "ledger.db"
        shutil.copy(sqlite_template, path)
        yield from _generated(f"sqlite:///{path}")
        return
    with migrated_postgres_database("coalition_generated") as url:
        yield from _generated(url)


def _generated(database_url: str) -> Iterator[GeneratedLedger]:
    engine = create_database_engine(database_url)
    CATALOGUE.invalidate()  # the process-wide promotions were another database's
    sync_partners(UnitOfWork(engine), list(TEST_PARTNERS), datetime.now(UTC))
    model = generate(engine, seed=GENERATED_SEED)
    CATALOGUE.invalidate()  # and now this one's: the next test's database is another
    yield GeneratedLedger(database_url, engine, model)
    engine.dispose()

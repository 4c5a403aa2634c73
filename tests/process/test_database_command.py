"""`coalition db upgrade` on EMPTY databases: creates the schema the code expects, twice safely."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from coalition.store import migrate
from coalition.store.schema import metadata
from tests.process.commands import (
    database_engine,
    explain,
    run_coalition,
    table_contents,
    throwaway_postgres_database,
)

pytestmark = pytest.mark.process

ALEMBIC_VERSION_TABLE = "alembic_version"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (unlike conftest's `database_url`, already migrated)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with throwaway_postgres_database() as url:
        yield url


def schema_differences(database_url: str) -> list[object]:
    with database_engine(database_url) as engine, engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def schema_state(database_url: str) -> tuple[set[str], set[str]]:
    """The tables and the Alembic revisions the database is at."""
    with database_engine(database_url) as engine, engine.connect() as connection:
        return (
            set(inspect(connection).get_table_names()),
            set(MigrationContext.configure(connection).get_current_heads()),
        )


def newest_revisions() -> set[str]:
    """Every head of the migration scripts (there may be more than one branch)."""
    with database_engine("sqlite://") as engine:
        script = ScriptDirectory.from_config(migrate.alembic_config(engine))
        return set(script.get_heads())


def test_upgrade_creates_the_schema_of_the_code_and_is_idempotent(empty_database_url: str) -> None:
    assert schema_state(empty_database_url) == (set(), set())

    first = run_coalition("db", "upgrade", "--db", empty_database_url)

    assert first.returncode == 0, explain(first)
    assert "database schema is up to date" in first.stdout
    tables, revisions = schema_state(empty_database_url)
    assert tables == {*metadata.tables, ALEMBIC_VERSION_TABLE}
    assert revisions == newest_revisions()
    assert schema_differences(empty_database_url) == []
    contents = table_contents(empty_database_url)

    second = run_coalition("db", "upgrade", "--db", empty_database_url)

    assert second.returncode == 0, explain(second)
    assert "database schema is up to date" in second.stdout
    assert schema_state(empty_database_url) == (tables, revisions)
    assert table_contents(empty_database_url) == contents
    assert schema_differences(empty_database_url) == []


def test_upgrade_reads_the_database_url_from_the_environment(
    empty_database_url: str, tmp_path: Path
) -> None:
    working_directory = tmp_path / "cwd"
    working_directory.mkdir()

    result = run_coalition(
        "db", "upgrade", environment_database_url=empty_database_url, cwd=working_directory
    )

    assert result.returncode == 0, explain(result)
    assert schema_state(empty_database_url)[1] == newest_revisions()
    # Not the embedded default (sqlite:///coalition.db, relative to the working directory).
    assert list(working_directory.iterdir()) == []


def test_the_db_option_wins_over_the_environment(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.db"
    ignored = tmp_path / "ignored.db"

    result = run_coalition(
        "db",
        "upgrade",
        "--db",
        f"sqlite:///{chosen}",
        environment_database_url=f"sqlite:///{ignored}",
        cwd=tmp_path,
    )

    assert result.returncode == 0, explain(result)
    assert schema_state(f"sqlite:///{chosen}")[1] == newest_revisions()
    assert not ignored.exists()


def test_partners_sync_migrates_an_empty_database_first(empty_database_url: str) -> None:
    result = run_coalition("partners", "sync", "partners", "--db", empty_database_url)

    assert result.returncode == 0, explain(result)
    assert schema_differences(empty_database_url) == []
    assert schema_state(empty_database_url)[1] == newest_revisions()

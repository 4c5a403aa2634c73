"""Schema migrations (Alembic), run the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from coalition.store import citus

MIGRATIONS_DIRECTORY = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied, then, on Citus, the distributed layout
    (store/citus.py); a no-op on an up-to-date database."""
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")
    with engine.begin() as connection:
        if citus.is_citus(connection):
            citus.distribute(connection)


def is_up_to_date(engine: Engine) -> bool:
    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads()) == heads


def prepare(engine: Engine) -> None:
    """Migrate an empty database; refuse to run on an outdated one (that is an operator's
    decision: `coalition db upgrade`)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
        table_names = inspect(connection).get_table_names()
    if not current and not table_names:
        upgrade(engine)
    elif not is_up_to_date(engine):
        raise RuntimeError(
            f"the database schema is at revision {', '.join(current)}, not the newest: "
            "run `coalition db upgrade` first"
        )

"""Engines for the two supported databases, configured for the hub's concurrency model.

PostgreSQL runs at READ COMMITTED: money rows are protected by guarded updates and row locks
named where they happen. SQLite serialises writers: a writing unit of work starts with
BEGIN IMMEDIATE so that two writers never deadlock upgrading a read lock; WAL lets readers go on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_SECONDS = 30
POOL_SIZE = 8
POOL_OVERFLOW_MAX = 16  # with POOL_SIZE, one connection per worker thread (api/server.py)
READ_ONLY_OPTION = "coalition_read_only"
CITUS_INFO_KEY = "coalition_citus"  # in a connection's info: the database runs Citus
CITUS_QUERY = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"


def normalise_database_url(database_url: str) -> str:
    """Accept plain `postgresql://` URLs and use psycopg 3 for them."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def create_database_engine(database_url: str) -> Engine:
    url = make_url(normalise_database_url(database_url))
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url.render_as_string(hide_password=False))
    if url.get_backend_name() == "postgresql":
        engine = create_engine(
            url,
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW_MAX,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
        )
        return _noting_citus(engine)
    raise ValueError(f"unsupported database {url.get_backend_name()!r}: use sqlite or postgresql")


def create_committer_engine(engine: Engine, connections: int, wait_seconds_max: float) -> Engine:
    """Connections of their own for the hub's group committers (operations/group_commit.py),
    on the database of `engine`, tuned for a loop that commits group after group:

    - no ping before each use: a connection the database dropped fails its group UNAVAILABLE
      (clients retry) and is replaced (store/driver.py invalidates it), where a ping would
      cost every group a round trip;
    - lock and statement waits bounded by the session at `wait_seconds_max`, so that a group
      sets its own bound only when a caller's deadline is shorter (store/deadlines.py);
    - generic plans for the group's prepared statements (`plan_cache_mode`): their parameters
      are arrays, whose length a custom plan knows, so PostgreSQL judged every generic plan
      dearer and planned each statement again on every group: a fifth of PostgreSQL's CPU per
      earn, a sixth of a group's wall (docs/benchmarks.md, 2026-12-03 afternoon). Not on Citus,
      whose distributed planning is its own (not measured so).
    """
    if engine.dialect.name != "postgresql":
        return engine  # SQLite: one writer at a time, on the file; nothing to tune
    milliseconds = round(wait_seconds_max * 1000)
    options = f"-c lock_timeout={milliseconds} -c statement_timeout={milliseconds}"
    committer = create_engine(
        engine.url,
        pool_size=connections,
        max_overflow=0,
        isolation_level="READ COMMITTED",
        connect_args={"options": options},
    )
    _noting_citus(committer)

    @event.listens_for(committer, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # After _noting_citus's listener (listeners run in the order they were added).
        if not record.info[CITUS_INFO_KEY]:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(GENERIC_PLANS)
            dbapi_connection.commit()  # a SET rolled back with its transaction is undone

    return committer


def _noting_citus(engine: Engine) -> Engine:
    """Note on each new connection whether the database runs Citus (UnitOfWork.is_citus)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Statements that Citus would run in two phases have a variant (ledger/writer.py).
        with dbapi_connection.cursor() as cursor:
            cursor.execute(CITUS_QUERY)
            record.info[CITUS_INFO_KEY] = bool(cursor.fetchone()[0])
        dbapi_connection.rollback()

    return engine


def _create_sqlite_engine(database_url: str) -> Engine:
    engine = create_engine(
        database_url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        # On the driver's connection: every unit of work begins here, and SQLAlchemy's
        # execution path around one statement cost more than the statement.
        dbapi_connection = connection.connection.dbapi_connection
        dbapi_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine

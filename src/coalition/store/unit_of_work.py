"""One unit of work per request: one database transaction that commits only when asked."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Connection, Engine

from coalition.store import deadlines
from coalition.store.engine import CITUS_INFO_KEY, READ_ONLY_OPTION


class UnitOfWork:
    """A context manager around one database transaction.

    It rolls back unless the service calls `commit()`; the connection is reachable only
    through it, never passed around bare. The connection is taken from the pool, and the
    transaction begun, at the first use inside `with`: a unit of work that finds everything it
    needs in a cache (the group commit's split, say) costs no checkout.
    """

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self._engine = engine
        self._read_only = read_only
        self._connection: Connection | None = None
        self._citus = False  # whether the connection's database runs Citus (store/engine.py)
        self._entered = False
        self._committed = False

    @property
    def connection(self) -> Connection:
        assert self._entered, "use the unit of work inside `with`"
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    @property
    def is_citus(self) -> bool:
        """Whether the database is a Citus coordinator (read from the connection once)."""
        self.connection  # noqa: B018 (connects: the engine notes Citus on each connection)
        return self._citus

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect_name(self) -> str:
        return self._engine.dialect.name

    def __enter__(self) -> UnitOfWork:
        assert not self._entered, "one transaction at a time"
        self._entered = True
        self._committed = False
        return self

    def _connect(self) -> Connection:
        connection = self._engine.connect()
        if self._read_only:
            connection = connection.execution_options(**{READ_ONLY_OPTION: True})
        connection.begin()
        self._citus = bool(connection.info.get(CITUS_INFO_KEY, False))
        if self.dialect_name == "postgresql":
            self._bound_waits_by_deadline(connection)
        return connection

    @staticmethod
    def _bound_waits_by_deadline(connection: Connection) -> None:
        # SET LOCAL: for this transaction only, so the pooled connection keeps no setting; and
        # SET is no query, so a service can still choose its isolation level after it.
        milliseconds = deadlines.milliseconds_remaining()
        if milliseconds is None:
            return
        connection.exec_driver_sql(
            f"SET LOCAL lock_timeout = {milliseconds:d}; "
            f"SET LOCAL statement_timeout = {milliseconds:d}"
        )

    def commit(self) -> None:
        assert not self._read_only, "a read-only unit of work has nothing to commit"
        assert self._entered, "use the unit of work inside `with`"
        if self._connection is not None:
            self._connection.commit()
        self._committed = True

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection, self._entered = self._connection, None, False
        if connection is None:
            return
        try:
            if not self._committed:
                connection.rollback()
        finally:
            connection.close()

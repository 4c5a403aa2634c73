"""The unit of work takes its connection at its first statement (store/unit_of_work.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from coalition.store.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def checkouts(engine: Engine) -> list[Any]:
    """Every connection checked out of the engine's pool from now on."""
    seen: list[Any] = []
    event.listen(engine, "checkout", lambda dbapi_connection, *_: seen.append(dbapi_connection))
    return seen


def test_a_unit_of_work_without_a_statement_takes_no_connection(engine: Engine) -> None:
    seen = checkouts(engine)
    with UnitOfWork(engine) as uow:
        uow.commit()
    with UnitOfWork(engine):
        pass
    assert seen == []


def test_a_unit_of_work_takes_one_connection_at_its_first_statement(engine: Engine) -> None:
    seen = checkouts(engine)
    with UnitOfWork(engine) as uow:
        assert seen == []
        uow.connection.execute(text("SELECT 1"))
        uow.connection.execute(text("SELECT 2"))
        assert len(seen) == 1
        uow.commit()
    assert len(seen) == 1


def test_what_a_unit_of_work_did_not_commit_is_rolled_back(engine: Engine) -> None:
    count = text("SELECT count(*) FROM promotion_catalogue WHERE catalogue_id = 99")
    with UnitOfWork(engine) as uow:
        uow.connection.execute(
            text("INSERT INTO promotion_catalogue (catalogue_id, version) VALUES (99, 1)")
        )
        assert uow.connection.execute(count).scalar_one() == 1
    with UnitOfWork(engine) as uow:
        assert uow.connection.execute(count).scalar_one() == 0


def test_the_connection_is_reached_only_inside_with(engine: Engine) -> None:
    uow = UnitOfWork(engine)
    with pytest.raises(AssertionError, match="inside `with`"):
        uow.connection  # noqa: B018
    with uow:
        pass
    with pytest.raises(AssertionError, match="inside `with`"):
        uow.connection  # noqa: B018

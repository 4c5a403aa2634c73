"""The statements of the largest batch of earns and the largest group of burns stay linear
in their items, as PostgreSQL ran them on the bench's ledger (20,000 members with a key
each, analysed): auto_explain's plan of each statement, sent to the client, shows nothing read
once per row of something else but index lookups.

On tables that size the planner expects one row from the join of a batch's claimed keys
(each found by its primary key), so a CTE joined after it went into a nested loop: `ids`
read 1,000 times made a 1,000-earn batch's writer 160 to 480 ms of its 180 to 500
(ledger/writer.py, `recorded`). The small tables of the other tests plan hash joins instead,
which is why these build the bench's database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

from coalition.bench.setup import (
    create_bench_database,
    drop_bench_database,
    member_id,
    partner_id,
    prepare_bench_database,
)
from coalition.domain.points import Money
from coalition.identity.members import MemberReference
from coalition.operations import batch_burn, batch_earn
from coalition.operations.points import BurnCommand, EarnCommand
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.settings import GROUP_SIZE_MAX_BOUND
from coalition.store.engine import create_database_engine, normalise_database_url
from coalition.store.unit_of_work import UnitOfWork
from tests.citus import skip_on_citus_database
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.bench

MEMBERS = 20_000
BATCH_ITEMS = batch_earn.BATCH_EARN_ITEMS_MAX
INDEX_LOOKUPS = {"Index Scan", "Index Only Scan"}
WRITER_TEXT_START = "WITH before AS"  # ledger/writer.py, _PostgresStatements.WRITE


def explaining(plans: list[dict[str, Any]]) -> Any:
    """A `connect` listener: every statement of the connection reports its plan, as run, in
    JSON (`auto_explain`, loaded for the session), into `plans`."""

    def notice(diagnostic: Any) -> None:
        message = diagnostic.message_primary or ""
        if message.startswith("duration:"):
            plans.append(json.loads(message.split("plan:", 1)[1]))

    def listen_on(dbapi_connection: Any, _record: Any = None) -> None:
        dbapi_connection.add_notice_handler(notice)
        with dbapi_connection.cursor() as cursor:
            cursor.execute("LOAD 'auto_explain'")
            for setting in (
                "auto_explain.log_min_duration = 0",
                "auto_explain.log_analyze = on",
                "auto_explain.log_timing = off",
                "auto_explain.log_format = json",
                "client_min_messages = log",
            ):
                cursor.execute(f"SET {setting}")
        dbapi_connection.commit()

    return listen_on


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


@pytest.fixture(scope="module")
def bench_url() -> Iterator[str]:
    """The bench's database, on this run's PostgreSQL server, dropped after the module."""
    server = make_url(normalise_database_url(POSTGRES_URL)).render_as_string(hide_password=False)
    skip_on_citus_database(server, "on Citus the writer sends statements of its own (VALUES)")
    name = f"coalition_plan_{uuid.uuid4().hex[:8]}"
    url = create_bench_database(server, name)
    try:
        prepare_bench_database(url, MEMBERS)
        yield url
    finally:
        drop_bench_database(server, name)


def plans_of(url: str, group: Callable[[Engine], None]) -> list[dict[str, Any]]:
    """The plans, as run, of every statement `group` sends."""
    engine = create_database_engine(url)
    plans: list[dict[str, Any]] = []
    event.listen(engine, "connect", explaining(plans))
    try:
        group(engine)
    finally:
        engine.dispose()
    return plans


def repeated_reads(plans: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """(statement, node, what it reads, times run) of every part of a plan run more than once
    other than an index lookup: a CTE, a function's rows (`unnest`) or a table read again for
    each row of something else makes the statement quadratic in its items."""
    return [
        (plan["Query Text"][:40], node["Node Type"], node.get("Alias", ""), node["Actual Loops"])
        for plan in plans
        for node in nodes(plan["Plan"])
        if node["Actual Loops"] > 1 and node["Node Type"] not in INDEX_LOOKUPS
    ]


def writers(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [plan for plan in plans if plan["Query Text"].startswith(WRITER_TEXT_START)]


def test_a_batch_of_earns_reads_nothing_once_per_item(bench_url: str) -> None:
    items = [
        EarnCommand(
            f"plan-earn-{number}",
            MemberReference(member_id=member_id(1 + number * 17 % MEMBERS)),
            spend=Money(1000, "EUR"),
        )
        for number in range(BATCH_ITEMS)
    ]

    def earn(engine: Engine) -> None:
        result = batch_earn.batch_earn(
            UnitOfWork(engine), DEFAULT_PROGRAMME, partner_id(1), items, False, datetime.now(UTC)
        )
        assert result.applied_count == BATCH_ITEMS, result.outcomes

    plans = plans_of(bench_url, earn)
    assert len(writers(plans)) == 1
    assert repeated_reads(plans) == []


def test_the_largest_group_of_burns_reads_nothing_once_per_item(
    bench_url: str,
) -> None:
    burns = [
        (
            partner_id(1),
            BurnCommand(
                f"plan-burn-{number}",
                MemberReference(member_id=member_id(1 + number * 13 % MEMBERS)),
                points=1,
            ),
        )
        for number in range(GROUP_SIZE_MAX_BOUND)
    ]

    def burn(engine: Engine) -> None:
        outcomes = batch_burn.burn_many(UnitOfWork(engine), burns, datetime.now(UTC))
        assert [outcome.error for outcome in outcomes] == [None] * len(burns)

    plans = plans_of(bench_url, burn)
    assert len(writers(plans)) == 1
    assert repeated_reads(plans) == []

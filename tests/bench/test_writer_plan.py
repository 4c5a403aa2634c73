"""The writer's statement stays linear in its entries, as PostgreSQL ran it on the bench's
ledger (20,000 members with a key each, analysed): auto_explain's plan of each statement,
sent to the client, shows no common table expression read once per row of something else.

On tables that size the planner expects one row from the join of a batch's claimed keys
(each found by its primary key), so a CTE joined after it went into a nested loop: `ids`
read 1,000 times made a 1,000-earn batch's writer 160 to 480 ms of its 180 to 500
(ledger/writer.py, `recorded`). The small tables of the other tests plan hash joins instead,
which is why this one builds the bench's database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event
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
from coalition.operations import batch_earn
from coalition.operations.points import EarnCommand
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.engine import create_database_engine, normalise_database_url
from coalition.store.unit_of_work import UnitOfWork
from tests.citus import skip_on_citus_database
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.bench

MEMBERS = 20_000
BATCH_ITEMS = batch_earn.BATCH_EARN_ITEMS_MAX


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


def test_a_batch_of_earns_reads_each_common_table_expression_of_the_writer_once() -> None:
    server = make_url(normalise_database_url(POSTGRES_URL)).render_as_string(hide_password=False)
    skip_on_citus_database(server, "on Citus the writer sends statements of its own (VALUES)")
    name = f"coalition_plan_{uuid.uuid4().hex[:8]}"
    url = create_bench_database(server, name)
    engine = create_database_engine(url)
    try:
        prepare_bench_database(url, MEMBERS)
        plans: list[dict[str, Any]] = []
        event.listen(engine, "connect", explaining(plans))
        items = [
            EarnCommand(
                f"plan-{number}",
                MemberReference(member_id=member_id(1 + number * 17 % MEMBERS)),
                spend=Money(1000, "EUR"),
            )
            for number in range(BATCH_ITEMS)
        ]
        result = batch_earn.batch_earn(
            UnitOfWork(engine), DEFAULT_PROGRAMME, partner_id(1), items, False, datetime.now(UTC)
        )
    finally:
        engine.dispose()
        drop_bench_database(server, name)
    assert result.applied_count == BATCH_ITEMS, result.outcomes
    (written,) = [plan for plan in plans if plan["Query Text"].startswith("WITH before AS")]
    scans = [node for node in nodes(written["Plan"]) if node["Node Type"] == "CTE Scan"]
    assert {scan["Alias"] for scan in scans} >= {"ids", "verdict", "before"}
    assert [
        (scan["Alias"], scan["Actual Loops"]) for scan in scans if scan["Actual Loops"] > 1
    ] == []

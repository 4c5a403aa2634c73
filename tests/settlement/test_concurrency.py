"""Settlement while earn and burn traffic runs, and settlement runs racing each other, on
real SQLite and PostgreSQL: nothing lost, nothing counted twice."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from coalition.ledger.totals import partner_totals
from coalition.settlement.service import RunResult, Signer
from coalition.store.schema import journal_transactions, settlement_statements
from coalition.store.unit_of_work import UnitOfWork
from tests.settlement.conftest import JANUARY, Ledger, settle

pytestmark = pytest.mark.integration

WORKERS = 4
OPERATIONS_PER_WORKER = 12
TRAFFIC_START = datetime(2026, 1, 1, tzinfo=UTC)
# Each operation is stamped 90 minutes after the previous one, so traffic spans the first
# days of January and every daily settlement below races operations of its own day.
TRAFFIC_STEP = timedelta(minutes=90)


def run_traffic(ledger: Ledger, clock: Callable[[], datetime]) -> None:
    member_id = ledger.member()
    for step in range(OPERATIONS_PER_WORKER):
        if step % 3 == 2:
            ledger.burn(member_id, 1, clock())
        else:
            ledger.earn(member_id, 5_000, clock())  # 50 CNY -> 10 points


def test_settling_while_traffic_runs_loses_and_double_counts_nothing(
    engine: Engine, ledger: Ledger, signer: Signer
) -> None:
    counter = itertools.count()
    lock = threading.Lock()

    def clock() -> datetime:
        with lock:
            return TRAFFIC_START + TRAFFIC_STEP * next(counter)

    with ThreadPoolExecutor(max_workers=WORKERS + 1) as pool:
        traffic = [pool.submit(run_traffic, ledger, clock) for _ in range(WORKERS)]
        days = [date(2026, 1, day) for day in range(1, 5)]
        settled = pool.submit(lambda: [settle(engine, signer, day) for day in days])
        for future in traffic:
            future.result()
        settled.result()
    (final,) = settle(engine, signer, JANUARY)

    with engine.connect() as connection:
        statements = connection.execute(
            select(settlement_statements.c.body).where(
                settlement_statements.c.partner_id == "test-coffee"
            )
        ).scalars()
        summed = {"entries": 0, "issued": 0, "redeemed": 0}
        for body in statements:
            document = json.loads(body)
            summed["entries"] += int(document["entry_count"])
            summed["issued"] += int(document["points"]["issued"])
            summed["redeemed"] += int(document["points"]["redeemed"])
        transactions = connection.execute(
            select(func.count()).where(journal_transactions.c.partner_id == "test-coffee")
        ).scalar_one()
    (coffee,) = [t for t in partner_totals(UnitOfWork(engine)) if t.partner_id == "test-coffee"]
    assert transactions == WORKERS * OPERATIONS_PER_WORKER
    assert summed == {
        "entries": transactions,
        "issued": coffee.points_issued,
        "redeemed": coffee.points_redeemed,
    }
    assert final.statement.sequence_number == len(days) + 1


def test_racing_runs_for_one_partner_and_period_produce_one_statement(
    engine: Engine, ledger: Ledger, signer: Signer
) -> None:
    member_id = ledger.member()
    for day in range(1, 6):
        ledger.earn(member_id, 5_000, datetime(2026, 1, day, tzinfo=UTC))
    barrier = threading.Barrier(4)

    def run() -> RunResult:
        barrier.wait()
        (result,) = settle(engine, signer, JANUARY)
        return result

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: run(), range(4)))
    assert sorted(result.created for result in results) == [False, False, False, True]
    assert len({result.statement for result in results}) == 1
    assert results[0].statement.entry_count == 5
    with engine.connect() as connection:
        count = connection.execute(
            select(func.count()).select_from(settlement_statements)
        ).scalar_one()
    assert count == 1

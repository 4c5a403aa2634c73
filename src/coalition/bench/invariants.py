"""Ledger invariants after a run: the integrity proof of `coalition reconcile integrity`."""

from __future__ import annotations

from sqlalchemy import Engine

from coalition.reconciliation import integrity
from coalition.store.unit_of_work import UnitOfWork


def ledger_violations(engine: Engine) -> dict[str, int]:
    """The number of offending subjects of each check (all zero when the ledger is sound)."""
    report = integrity.prove(UnitOfWork(engine, read_only=True), None, None, lambda _: None)
    assert not report.skipped, "every check of the proof runs after a bench"
    return {result.name: result.failed for result in report.results}

"""The extension point for settlement statements in the integrity proof.

Two checks belong here: every stored statement's signature, Merkle root and chain verify,
and all statements together equal the ledger totals for the settled range. Both are the
settlement module's own verification of a *stored* statement (its canonical body, entry
hashing and chain rules are the settlement module's to define, not to be re-implemented
here): `coalition.settlement.stored`, re-exported by `coalition.settlement.verify` under the
two hook names below. Should that module not offer them, both checks report `skipped`, which
the proof never counts as passed: `coalition reconcile integrity` then exits 3 (incomplete),
never 0.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from coalition.reconciliation.checks import CheckResult
from coalition.store.unit_of_work import UnitOfWork

SETTLEMENT_VERIFY_MODULE = "coalition.settlement.verify"
# The hook: verify_stored_statements(uow, window_start, window_end) yields, for every
# statement generated in the window, (statement_id, failures: list[str]), streamed; and
# settled_totals_match_ledger(uow, window_start, window_end) returns
# (statements_checked, failures: list[str]).
VERIFY_STORED_STATEMENTS = "verify_stored_statements"
SETTLED_TOTALS_MATCH_LEDGER = "settled_totals_match_ledger"
SAMPLE_FAILURES_MAX = 5

STATEMENT_CHECKS = (
    ("statements_verify", "every statement's signature, Merkle root and chain verify"),
    ("statements_match_ledger", "all statements together equal the ledger for the settled range"),
)


def statement_checks(
    uow: UnitOfWork, window_start: datetime, window_end: datetime
) -> list[CheckResult]:
    verify = _hook(VERIFY_STORED_STATEMENTS)
    match_totals = _hook(SETTLED_TOTALS_MATCH_LEDGER)
    if verify is None or match_totals is None:
        note = (
            "skipped: no settlement module verification of stored statements "
            f"({SETTLEMENT_VERIFY_MODULE}.{VERIFY_STORED_STATEMENTS} is not available)"
        )
        return [
            CheckResult(name, description, "skipped", 0, 0, note=note)
            for name, description in STATEMENT_CHECKS
        ]
    return [
        _verify_statements(verify(uow, window_start, window_end)),
        _match_totals(*match_totals(uow, window_start, window_end)),
    ]


def _hook(name: str) -> Callable[..., Any] | None:
    try:
        module = importlib.import_module(SETTLEMENT_VERIFY_MODULE)
    except ImportError:
        return None
    hook = getattr(module, name, None)
    return hook if callable(hook) else None


def _verify_statements(verified: Iterator[tuple[str, list[str]]]) -> CheckResult:
    checked = failed = 0
    samples: list[str] = []
    for statement_id, failures in verified:
        checked += 1
        if failures:
            failed += 1
            if len(samples) < SAMPLE_FAILURES_MAX:
                samples.append(f"{statement_id}: {failures[0]}")
    name, description = STATEMENT_CHECKS[0]
    return CheckResult(
        name, description, "failed" if failed else "passed", checked, failed, tuple(samples)
    )


def _match_totals(statements_checked: int, failures: list[str]) -> CheckResult:
    name, description = STATEMENT_CHECKS[1]
    return CheckResult(
        name,
        description,
        "failed" if failures else "passed",
        statements_checked,
        len(failures),
        tuple(failures[:SAMPLE_FAILURES_MAX]),
    )

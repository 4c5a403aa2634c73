"""The integrity proof: sound on a real ledger, and each corruption caught by its name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from coalition.reconciliation import commands, integrity
from coalition.reconciliation.checks import CheckResult
from coalition.settlement import keys, service
from coalition.store.unit_of_work import UnitOfWork
from tests.reconciliation.conftest import Ledger

pytestmark = pytest.mark.integration

LEDGER_CHECK_NAMES = {check.name for check in integrity.LEDGER_CHECKS}


def prove(engine: Engine, ledger: Ledger | None = None) -> dict[str, CheckResult]:
    heard: list[CheckResult] = []
    window = (None, None) if ledger is None else (ledger.window_start, ledger.window_end)
    report = integrity.prove(UnitOfWork(engine, read_only=True), *window, heard.append)
    assert list(report.results) == heard
    return {result.name: result for result in report.results}


def test_a_sound_ledger_passes_every_ledger_check_and_has_no_statements_to_verify(
    ledger: Ledger,
) -> None:
    results = prove(ledger.engine)
    assert {name for name, r in results.items() if r.status == "passed"} >= LEDGER_CHECK_NAMES
    assert all(results[name].checked > 0 for name in LEDGER_CHECK_NAMES)
    statements = {name: r for name, r in results.items() if name not in LEDGER_CHECK_NAMES}
    assert set(statements) == {"statements_verify", "statements_match_ledger"}
    # The settlement hooks exist now: with nothing settled they run and find nothing to check.
    assert all(r.status == "passed" and r.checked == 0 for r in statements.values())


# Each corruption breaks exactly one invariant; the subject is the first test-coffee earn.
CORRUPTIONS = {
    "postings_sum_to_zero": """
        UPDATE postings SET points = points + 1
        WHERE account_id LIKE 'partner:%' AND transaction_id = :transaction_id
    """,
    # One point moves from the member's side to the partner's side in one transaction of the
    # member and back in another: sums, the member's total and its lots stay right.
    "member_deltas_match_postings": """
        UPDATE postings SET points = points + (CASE WHEN account_id LIKE 'member:%'
                                                    THEN -1 ELSE 1 END)
        WHERE transaction_id = :transaction_id;
        UPDATE postings SET points = points + (CASE WHEN account_id LIKE 'member:%'
                                                    THEN 1 ELSE -1 END)
        WHERE transaction_id = (
          SELECT MIN(other.transaction_id) FROM journal_transactions other
          JOIN journal_transactions first ON first.member_id = other.member_id
          WHERE first.transaction_id = :transaction_id
            AND other.transaction_id > :transaction_id AND other.kind = 'earn')
    """,
    "balance_caches_match_postings": """
        UPDATE member_accounts SET balance_points = balance_points + 5 WHERE account_id = (
          SELECT 'member:' || member_id FROM journal_transactions
          WHERE transaction_id = :transaction_id)
    """,
    "lot_remainders_match_balances": """
        UPDATE lots SET remaining_points = remaining_points - 1
        WHERE transaction_id = :transaction_id
    """,
    "balances_never_negative": """
        UPDATE journal_transactions SET balance_points_after = balance_points_after + 3
        WHERE transaction_id = :transaction_id
    """,
    "idempotency_keys_map_to_one_transaction": """
        UPDATE idempotency_keys SET result_id = '999999'
        WHERE result_id = CAST(:transaction_id AS VARCHAR(20))
    """,
}


@pytest.mark.parametrize("check_name", sorted(CORRUPTIONS))
def test_each_corruption_is_caught_by_name(ledger: Ledger, check_name: str) -> None:
    with ledger.engine.begin() as connection:
        transaction_id = connection.execute(
            text("SELECT MIN(transaction_id) FROM journal_transactions")
        ).scalar_one()
        for statement in CORRUPTIONS[check_name].split(";"):
            connection.execute(text(statement), {"transaction_id": transaction_id})
    results = prove(ledger.engine)
    failed = {name for name, result in results.items() if result.status == "failed"}
    assert failed == {check_name}
    assert results[check_name].failed >= 1 and results[check_name].samples


def test_an_applied_request_whose_key_records_a_refusal_is_caught(ledger: Ledger) -> None:
    """A request id answers once: a key holding a refusal must have no transaction."""
    with ledger.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE idempotency_keys SET result_id = NULL, refusal = :refusal "
                "WHERE result_id = (SELECT CAST(MIN(transaction_id) AS VARCHAR(20)) "
                "FROM journal_transactions)"
            ),
            {"refusal": '{"code": "FAILED_PRECONDITION", "reason": "INSUFFICIENT_POINTS"}'},
        )
    results = prove(ledger.engine)
    failed = {name for name, result in results.items() if result.status == "failed"}
    assert failed == {"idempotency_keys_map_to_one_transaction"}


def test_a_window_limits_transaction_checks_to_commits_within_it(ledger: Ledger) -> None:
    with ledger.engine.begin() as connection:
        # Some transaction of the ledger (on Citus, ids start at a worker's range, not at 1).
        transaction_id = connection.execute(
            text("SELECT MIN(transaction_id) FROM journal_transactions")
        ).scalar_one()
        connection.execute(
            text(CORRUPTIONS["postings_sum_to_zero"]), {"transaction_id": transaction_id}
        )
    later = ledger.window_end + timedelta(days=1)
    outside = integrity.prove(
        UnitOfWork(ledger.engine, read_only=True), later, later + timedelta(days=1), lambda r: None
    )
    assert not outside.failed
    inside = prove(ledger.engine, ledger)
    assert inside["postings_sum_to_zero"].status == "failed"


def settle_everything(ledger: Ledger, tmp_path: Path) -> list[str]:
    """Two chained statements per partner: yesterday (empty) and today (all of the ledger)."""
    issued = datetime.now(UTC)
    path = tmp_path / "keys" / "signing.pem"
    keys.generate(UnitOfWork(ledger.engine), path, issued - timedelta(days=2))
    signer = service.Signer.from_file(path)
    today = issued.date()
    statement_ids = []
    for period_last_day in (today - timedelta(days=1), today):
        results = service.run_settlement(
            lambda: UnitOfWork(ledger.engine),
            period_last_day,
            None,
            signer,
            service.period_end_time(today) + timedelta(minutes=1),
        )
        statement_ids += [result.statement.statement_id for result in results]
    return statement_ids


def test_statement_checks_pass_on_a_settled_ledger_and_fail_by_name(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statement_ids = settle_everything(ledger, tmp_path)
    assert commands.reconcile_integrity(ledger.engine, (None, None)) == commands.EXIT_CLEAN
    out = capsys.readouterr().out
    checked = len(statement_ids)
    assert f"PASSED  statements_verify: {checked} checked, 0 failed" in out
    assert f"PASSED  statements_match_ledger: {checked} checked, 0 failed" in out
    assert "integrity PROVEN: 9 passed, 0 failed, 0 skipped" in out
    coffee_today = max(i for i in statement_ids if i.startswith("test-coffee-"))
    with ledger.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE settlement_statements SET body = REPLACE(body, merkle_root, :forged) "
                "WHERE statement_id = :statement_id"
            ),
            {"forged": "ab" * 32, "statement_id": coffee_today},
        )
    results = prove(ledger.engine)
    failed = {name for name, result in results.items() if result.status == "failed"}
    assert failed == {"statements_verify"}
    assert results["statements_verify"].failed == 1
    (sample,) = results["statements_verify"].samples
    assert sample.startswith(f"{coffee_today}: ")

"""`coalition reconcile run` and `coalition reconcile integrity`: output, files, exit codes.

The handlers are driven through the same argument parser as the `coalition` command.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from coalition.reconciliation import commands, jobs
from coalition.reconciliation.arguments import add_reconcile_parser
from coalition.reconciliation.runs import rfc3339
from coalition.reports.period import month_period
from coalition.store.unit_of_work import UnitOfWork
from tests.reconciliation.conftest import PARTNER_ID, Ledger, as_csv, planted_report

pytestmark = pytest.mark.integration


def run_command(ledger: Ledger, *arguments: str) -> int:
    parser = argparse.ArgumentParser(prog="coalition")
    add_reconcile_parser(
        parser.add_subparsers(dest="command", required=True),
        lambda sub: sub.add_argument("--db", dest="database_url", default=None),
    )
    parsed = parser.parse_args(["reconcile", *arguments])
    handler = commands.RECONCILE_COMMANDS[f"reconcile {parsed.reconcile_command}"]
    return handler(ledger.engine, parsed)


def test_run_prints_a_summary_writes_both_reports_and_exits_1_on_exceptions(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "coffee.csv"
    report.write_bytes(as_csv(planted_report(ledger).rows))
    code = run_command(
        ledger, "run", "--partner", PARTNER_ID, str(report), "--output-dir", str(tmp_path / "out")
    )
    out, err = capsys.readouterr()
    assert code == commands.EXIT_FINDINGS, err
    assert "missing in partner 1" in out and "exceptions open    4 of 4" in out
    assert "loading" in err or "matching" in err  # plain progress lines: stderr is no TTY
    run_id = out.split()[1]
    with (tmp_path / "out" / f"{run_id}.csv").open(newline="") as file:
        kinds = sorted(row["kind"] for row in csv.DictReader(file))
    assert kinds == ["duplicated", "mismatched", "missing_in_hub", "missing_in_partner"]
    document = json.loads((tmp_path / "out" / f"{run_id}.json").read_text())
    assert document["run"]["run_id"] == run_id and len(document["exceptions"]) == 4
    again = run_command(
        ledger,
        "run",
        "--partner",
        PARTNER_ID,
        str(report),
        "--exit-zero",
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert again == commands.EXIT_CLEAN
    assert "already reconciled" in capsys.readouterr().out


def test_run_exits_2_on_a_malformed_report_naming_the_line(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "coffee.jsonl"
    report.write_text('{"request_id": "a", "type": "earn", "points": 1}\n')
    code = run_command(ledger, "run", "--partner", PARTNER_ID, str(report))
    err = capsys.readouterr().err
    assert code == commands.EXIT_ERROR
    assert "REPORT_MALFORMED" in err and "line[1].occurred_at: required" in err


def test_a_job_already_running_exits_75(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = jobs.acquire(UnitOfWork(ledger.engine), "integrity", "elsewhere:1", datetime.now(UTC))
    assert run_command(ledger, "integrity") == commands.EXIT_ALREADY_RUNNING
    assert "JOB_ALREADY_RUNNING" in capsys.readouterr().err
    jobs.release(UnitOfWork(ledger.engine), held, datetime.now(UTC))


def test_integrity_is_proven_without_statements_and_fails_on_corruption(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_command(ledger, "integrity") == commands.EXIT_CLEAN
    out = capsys.readouterr().out
    assert "PASSED  postings_sum_to_zero" in out
    assert "PASSED  statements_verify: 0 checked, 0 failed" in out
    assert "integrity PROVEN: 9 passed, 0 failed, 0 skipped" in out
    with ledger.engine.begin() as connection:
        connection.execute(text("UPDATE lots SET remaining_points = remaining_points - 1"))
    assert (
        run_command(
            ledger, "integrity", "--from", "2020-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z"
        )
        == commands.EXIT_FINDINGS
    )
    assert "FAILED  lot_remainders_match_balances" in capsys.readouterr().out


def test_a_period_is_the_window_from_its_start_to_its_end(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--period` takes the forms of `report` and `settle run`; it does not mix with --to."""
    report = tmp_path / "coffee.csv"
    report.write_bytes(as_csv(ledger.report_rows()))
    month = ledger.window_end.strftime("%Y-%m")
    period = month_period(ledger.window_end.year, ledger.window_end.month)
    code = run_command(
        ledger, "run", "--partner", PARTNER_ID, str(report), "--period", month,
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code in (commands.EXIT_CLEAN, commands.EXIT_FINDINGS), err
    assert f"window {rfc3339(period.start)} .. {rfc3339(period.end)}" in out

    mixed = run_command(ledger, "integrity", "--period", month, "--to", "2100-01-01T00:00:00Z")
    assert mixed == commands.EXIT_ERROR
    assert "--to: give --period or --from/--to, not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        run_command(ledger, "integrity", "--period", month, "--from", "2020-01-01T00:00:00Z")
    assert exited.value.code == 2

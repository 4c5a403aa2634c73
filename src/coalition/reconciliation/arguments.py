"""The parsers of `coalition reconcile ...` (handlers: reconciliation/commands.py); they load
no reconciliation code."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from coalition.reports.period import PERIOD_HELP, period_argument


def _add_window_options(parser: argparse.ArgumentParser) -> None:
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--period", type=period_argument, default=None, help=PERIOD_HELP + " (or --from/--to)"
    )
    window.add_argument("--from", dest="window_start", default=None, help="RFC 3339, inclusive")
    parser.add_argument("--to", dest="window_end", default=None, help="RFC 3339, exclusive")


def add_reconcile_parser(
    commands: Any, add_database_option: Callable[[argparse.ArgumentParser], None]
) -> None:
    reconcile = commands.add_parser("reconcile", help="partner reports and ledger integrity")
    reconcile_commands = reconcile.add_subparsers(dest="reconcile_command", required=True)
    run = reconcile_commands.add_parser("run", help="match a partner report against the ledger")
    run.add_argument("--partner", required=True, help="the partner whose report FILE is")
    run.add_argument("file", metavar="FILE", help="CSV or JSON Lines report")
    run.add_argument("--format", choices=["csv", "jsonl"], default=None, help="default: suffix")
    _add_window_options(run)
    run.add_argument("--output-dir", default=".", help="where the CSV and JSON reports go")
    run.add_argument(
        "--exit-zero", action="store_true", help="exit 0 even when exceptions were found"
    )
    add_database_option(run)
    integrity_command = reconcile_commands.add_parser(
        "integrity", help="prove the ledger invariants"
    )
    _add_window_options(integrity_command)
    add_database_option(integrity_command)

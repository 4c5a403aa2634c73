"""The parsers of `coalition reconcile ...` (handlers: reconciliation/commands.py); they load
no reconciliation code."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from coalition.reports.period import PERIOD_HELP, period_argument

EXCEPTION_KINDS = ("missing_in_hub", "missing_in_partner", "mismatched", "duplicated")
EXCEPTIONS_LISTED_DEFAULT = 100
EXCEPTIONS_LISTED_MAX = 1000


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
    _add_exceptions_parser(reconcile_commands, add_database_option)


def _add_exceptions_parser(
    reconcile_commands: Any, add_database_option: Callable[[argparse.ArgumentParser], None]
) -> None:
    exceptions = reconcile_commands.add_parser("exceptions", help="a run's exceptions")
    exceptions_commands = exceptions.add_subparsers(dest="exceptions_command", required=True)
    listing = exceptions_commands.add_parser("list", help="a run's exceptions, in id order")
    listing.add_argument("run_id", metavar="RUN_ID")
    listing.add_argument("--kind", choices=EXCEPTION_KINDS, default=None)
    listing.add_argument("--open", dest="open_only", action="store_true", help="unresolved only")
    listing.add_argument(
        "--after", type=int, default=0, metavar="EXCEPTION_ID", help="the page after this id"
    )
    listing.add_argument(
        "--limit",
        type=_limit,
        default=EXCEPTIONS_LISTED_DEFAULT,
        help=f"at most this many, 1 to {EXCEPTIONS_LISTED_MAX} (default "
        f"{EXCEPTIONS_LISTED_DEFAULT})",
    )
    add_database_option(listing)
    resolve = exceptions_commands.add_parser("resolve", help="mark an exception resolved")
    resolve.add_argument("exception_id", type=int, metavar="EXCEPTION_ID")
    resolve.add_argument("--note", required=True, help="why it is resolved (kept with it)")
    resolve.add_argument(
        "--by", default="cli", metavar="WHO", help="who resolves it, recorded (default: cli)"
    )
    add_database_option(resolve)


def _limit(text: str) -> int:
    value = int(text)
    if not 0 < value <= EXCEPTIONS_LISTED_MAX:
        raise argparse.ArgumentTypeError(f"between 1 and {EXCEPTIONS_LISTED_MAX}")
    return value

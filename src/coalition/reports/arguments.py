"""The parser of `coalition report` (handler: reports/command.py); it loads no report code."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from coalition.reports.period import PERIOD_HELP, period_argument


def add_report_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_database_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    report = commands.add_parser(
        "report", help="finance and programme report of a period (CSV, JSON, report.html)"
    )
    report.add_argument("--period", required=True, type=period_argument, help=PERIOD_HELP)
    report.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    report.add_argument("--partner", default=None, metavar="ID", help="only this partner")
    add_database_option(report)

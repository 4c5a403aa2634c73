"""`coalition report --period YYYY-MM[-DD] --out DIR [--partner ID]`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from coalition.reports.build import build_report, write_report
from coalition.reports.period import parse_period
from coalition.store.unit_of_work import UnitOfWork


def add_report_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_database_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    report = commands.add_parser(
        "report", help="finance and programme report of a period (CSV, JSON, report.html)"
    )
    report.add_argument("--period", required=True, help="YYYY-MM (a month) or YYYY-MM-DD (a day)")
    report.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    report.add_argument("--partner", default=None, metavar="ID", help="only this partner")
    add_database_option(report)


def run_report(engine: Engine, arguments: argparse.Namespace) -> int:
    try:
        return _run_report(engine, arguments)
    finally:
        engine.dispose()  # a one-shot command leaves no pooled connection behind


def _run_report(engine: Engine, arguments: argparse.Namespace) -> int:
    try:
        period = parse_period(arguments.period)
    except ValueError as error:
        raise RuntimeError(str(error)) from error
    started = time.perf_counter()
    with UnitOfWork(engine, read_only=True) as uow:
        report = build_report(uow, period, arguments.partner, datetime.now(UTC))
    paths = write_report(report, Path(arguments.out))
    elapsed_seconds = time.perf_counter() - started
    print(f"report {period.label}: {len(paths)} files in {arguments.out} ({elapsed_seconds:.2f} s)")
    return 0

"""`coalition report --period YYYY-MM[-DD] --out DIR [--partner ID]`; its parser is in
reports/arguments.py."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from coalition.reports.build import build_report
from coalition.reports.files import write_report
from coalition.store.unit_of_work import UnitOfWork


def run_report(engine: Engine, arguments: argparse.Namespace) -> int:
    try:
        return _run_report(engine, arguments)
    finally:
        engine.dispose()  # a one-shot command leaves no pooled connection behind


def _run_report(engine: Engine, arguments: argparse.Namespace) -> int:
    period = arguments.period
    started = time.perf_counter()
    with UnitOfWork(engine, read_only=True) as uow:
        report = build_report(uow, period, arguments.partner, datetime.now(UTC))
    paths = write_report(report, Path(arguments.out))
    elapsed_seconds = time.perf_counter() - started
    print(f"report {period.label}: {len(paths)} files in {arguments.out} ({elapsed_seconds:.2f} s)")
    return 0


REPORT_COMMANDS = {"report": run_report}

"""The parsers of `coalition jobs ...` (handlers: programme/jobs.py); they load no job code.

WHEN is an ISO 8601 date (meaning 00:00 UTC that day) or a date-time with an offset.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime

BATCH_SIZE_MAX = 5_000
SCHEDULED_JOB_NAMES = ("holds", "expire", "tiers", "integrity")  # scheduler/catalogue.py


def add_jobs_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_database_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    jobs = commands.add_parser("jobs", help="scheduled programme jobs (idempotent)")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    expire = jobs_commands.add_parser("expire", help="expire lots due at --as-of")
    holds = jobs_commands.add_parser("holds", help="release burn holds past their TTL")
    tiers = jobs_commands.add_parser("tiers", help="downgrade members below their tier")
    tiers.add_argument("--programme", default=None, help="programme DIR (tiers.toml)")
    jobs_commands.add_parser(
        "status", help="every job's last run: when, outcome, duration, and who runs it now"
    ).set_defaults(as_of=None)
    run = jobs_commands.add_parser(
        "run", help="run one scheduled job now, under its lease, recorded as the hub does"
    )
    run.add_argument("name", choices=SCHEDULED_JOB_NAMES)
    for parser in jobs_commands.choices.values():
        if parser not in (expire, holds, tiers):
            add_database_option(parser)
    for parser in (expire, holds, tiers):
        parser.add_argument("--as-of", dest="as_of", type=instant, default=None, metavar="WHEN")
        parser.add_argument(
            "--batch-size",
            type=batch_size_argument,
            default=None,
            help=f"rows per transaction, 1 to {BATCH_SIZE_MAX} (default: the job's own)",
        )
        add_database_option(parser)


def instant(text: str) -> datetime:
    """An ISO date (00:00 UTC) or a date-time with an explicit offset."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or date-time: {text!r}") from error
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("a date-time needs an offset, e.g. 2027-03-01T00:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:  # such as 0001-01-01T00:00+14:00
        raise argparse.ArgumentTypeError(f"{text!r} lies outside years 1 to 9999 in UTC") from error


def batch_size_argument(text: str) -> int:
    value = int(text)
    if not 0 < value <= BATCH_SIZE_MAX:
        raise argparse.ArgumentTypeError(f"between 1 and {BATCH_SIZE_MAX}")
    return value

"""Periods: a calendar month (`YYYY-MM`) or one day (`YYYY-MM-DD`), in UTC.

A period covers what the ledger committed (`create_time`) from its start, inclusive, to its
end, exclusive: the same cut settlement uses, so a report and a statement of one period see
the same journal entries. Every command that takes `--period` (report, settle run, reconcile
run) reads it with `period_argument`, so the forms are the same everywhere.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    label: str
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC
    is_month: bool

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(days=1)).date()

    def previous(self) -> Period:
        if self.is_month:
            last_day = self.start.date() - timedelta(days=1)
            return month_period(last_day.year, last_day.month)
        return day_period(self.start.date() - timedelta(days=1))


def parse_period(text: str) -> Period:
    """`YYYY-MM` (a month) or `YYYY-MM-DD` (a day); ValueError otherwise."""
    if match := _MONTH.match(text):
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise ValueError(f"period {text!r}: month must be 01..12")
        return month_period(year, month)
    if _DAY.match(text):
        return day_period(date.fromisoformat(text))
    raise ValueError(f"period {text!r}: expected YYYY-MM or YYYY-MM-DD")


PERIOD_HELP = "YYYY-MM (a calendar month) or YYYY-MM-DD (a day), UTC"


def period_argument(text: str) -> Period:
    """`--period` of every command: `parse_period`, as argparse wants its errors."""
    try:
        return parse_period(text)
    except (ValueError, OverflowError) as error:  # OverflowError: the day after 9999-12-31
        raise argparse.ArgumentTypeError(str(error)) from error


def month_period(year: int, month: int) -> Period:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return Period(f"{year:04d}-{month:02d}", start, end, is_month=True)


def day_period(day: date) -> Period:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Period(day.isoformat(), start, start + timedelta(days=1), is_month=False)


def trailing_periods(period: Period, count: int) -> list[Period]:
    """The `count` periods ending with `period`, oldest first."""
    assert count >= 1
    periods = [period]
    while len(periods) < count:
        periods.append(periods[-1].previous())
    return periods[::-1]

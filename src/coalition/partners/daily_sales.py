"""A partner's reported total sales per day: the denominator of the report's contribution
share, "share of sales from members" (docs/reports.md).

A partner reports the total of all its sales of one UTC day (members' or not), in its own
currency. The first report of a day is version 1; a later report of the same day is a
correction: it becomes the day's total as the next version, and every version is kept, with
who reported it, when, and under which request_id (the audit trail). A request_id applies at
most once (AIP-155): the same request_id again answers the version it wrote; with another day
or amount it is refused (REQUEST_ID_REUSED). Reports of one partner are serialised by a lock
on its partner row (FOR NO KEY UPDATE, which earns' foreign-key locks do not wait on).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, insert, select

from coalition.domain.errors import CoalitionError, FieldViolation, InvalidArgument
from coalition.domain.points import AMOUNT_MINOR_MAX, Money
from coalition.ledger.idempotency import request_id_reused
from coalition.partners.catalog import get_partner
from coalition.store import driver
from coalition.store.driver import Statement
from coalition.store.schema import partner_daily_sales
from coalition.store.unit_of_work import UnitOfWork

# How far back a day may be reported (or corrected): a year and a month, for late
# corrections of last year's closing.
SALES_DAYS_BACK_MAX = 400
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")

LOCK_PARTNER = {
    "postgresql": Statement(
        "SELECT partner_id FROM partners WHERE partner_id = %s FOR NO KEY UPDATE"
    ),
    "sqlite": Statement("SELECT partner_id FROM partners WHERE partner_id = %s"),
}


@dataclass(frozen=True)
class DailySales:
    partner_id: str
    sales_date: date
    total: Money
    version: int
    request_id: str
    reported_by: str
    report_time: datetime
    replayed: bool = False  # the request_id's first answer, nothing written


def parse_sales_date(text: str) -> date | None:
    """A "YYYY-MM-DD" calendar date, or None when it is not one."""
    if not DATE_PATTERN.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def check_sales(sales_date: date, total: Money, partner_currency: str, now: datetime) -> None:
    """Refuse a day after today (UTC) or further back than SALES_DAYS_BACK_MAX days, a total
    below 0 or above AMOUNT_MINOR_MAX, and a currency other than the partner's."""
    today = now.astimezone(UTC).date()
    if sales_date > today:
        raise InvalidArgument(
            [FieldViolation("sales_date", f"must not be after today ({today.isoformat()}, UTC)")],
            reason="SALES_DATE_IN_FUTURE",
        )
    violations = []
    if sales_date < today - timedelta(days=SALES_DAYS_BACK_MAX):
        violations.append(FieldViolation("sales_date", f"at most {SALES_DAYS_BACK_MAX} days back"))
    if not 0 <= total.amount_minor <= AMOUNT_MINOR_MAX:
        violations.append(
            FieldViolation("total_sales.amount_minor", f"must be 0 to {AMOUNT_MINOR_MAX}")
        )
    if violations:
        raise InvalidArgument(violations)
    if total.currency != partner_currency:
        raise InvalidArgument(
            [
                FieldViolation(
                    "total_sales.currency",
                    f"must be {partner_currency}, the partner's currency",
                )
            ],
            reason="CURRENCY_MISMATCH",
        )


def report_daily_sales(
    uow: UnitOfWork,
    partner_id: str,
    reported_by: str,
    request_id: str,
    sales_date: date,
    total: Money,
    now: datetime,
) -> DailySales:
    """Record `total` as the partner's sales of `sales_date` (its next version), once per
    request_id."""
    with uow:
        partner = get_partner(uow, partner_id)
        check_sales(sales_date, total, partner.currency, now)
        driver.execute(uow, LOCK_PARTNER[uow.dialect_name], (partner_id,))
        first = _by_request(uow, partner_id, request_id)
        if first is not None:
            differing = [
                name
                for name, differs in (
                    ("sales_date", first.sales_date != sales_date),
                    ("total_sales", first.total != total),
                )
                if differs
            ]
            if differing:
                raise request_id_reused(request_id, differing)
            return replace(first, replayed=True)
        table = partner_daily_sales
        version = 1 + int(
            uow.connection.execute(
                select(func.coalesce(func.max(table.c.version), 0)).where(
                    table.c.partner_id == partner_id, table.c.sales_date == sales_date
                )
            ).scalar_one()
        )
        uow.connection.execute(
            insert(table).values(
                partner_id=partner_id,
                sales_date=sales_date,
                version=version,
                amount_minor=total.amount_minor,
                currency=total.currency,
                request_id=request_id,
                reported_by=reported_by,
                report_time=now,
            )
        )
        uow.commit()
    return DailySales(partner_id, sales_date, total, version, request_id, reported_by, now)


def _by_request(uow: UnitOfWork, partner_id: str, request_id: str) -> DailySales | None:
    table = partner_daily_sales
    row = uow.connection.execute(
        select(table).where(table.c.partner_id == partner_id, table.c.request_id == request_id)
    ).one_or_none()
    if row is None:
        return None
    return DailySales(
        row.partner_id,
        row.sales_date,
        Money(int(row.amount_minor), row.currency),
        int(row.version),
        row.request_id,
        row.reported_by,
        row.report_time,
    )


# --- `coalition partners import-sales FILE`: a CSV of partner_id,sales_date,amount_minor,currency


@dataclass(frozen=True)
class SalesLine:
    line_number: int
    partner_id: str
    sales_date: date
    total: Money

    @property
    def request_id(self) -> str:
        """The line's own request_id: importing the same line again applies nothing; a
        changed amount is a correction (the day's next version)."""
        digest = hashlib.sha256(
            f"{self.partner_id}|{self.sales_date}|{self.total.amount_minor}|"
            f"{self.total.currency}".encode()
        ).hexdigest()
        return f"import:{digest[:40]}"


class SalesFileError(ValueError):
    pass


SALES_COLUMNS = ("partner_id", "sales_date", "amount_minor", "currency")


def read_sales_file(path: Path) -> Iterator[SalesLine]:
    """The lines of a sales file, streamed (a header row of SALES_COLUMNS first)."""
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None or tuple(column.strip() for column in header) != SALES_COLUMNS:
            raise SalesFileError(f"{path}: the first line must be {','.join(SALES_COLUMNS)}")
        for line_number, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(SALES_COLUMNS):
                raise SalesFileError(f"{path}:{line_number}: {len(SALES_COLUMNS)} fields expected")
            partner_id, date_text, amount_text, currency = (field.strip() for field in fields)
            sales_date = parse_sales_date(date_text)
            if sales_date is None or not re.fullmatch(r"\d{1,16}", amount_text):
                raise SalesFileError(
                    f"{path}:{line_number}: a YYYY-MM-DD date and a whole amount_minor expected"
                )
            yield SalesLine(line_number, partner_id, sales_date, Money(int(amount_text), currency))


def run_import(engine: Engine, arguments: argparse.Namespace) -> int:
    """Apply each line of the file as its partner's report, one transaction a line, as the
    operator `cli:<user>`; stop at the first line refused (the lines before it are applied,
    and applying the file again applies them nothing twice)."""
    actor = f"cli:{getpass.getuser()}"
    recorded = replayed = 0
    try:
        for line in read_sales_file(Path(arguments.file)):
            try:
                sales = report_daily_sales(
                    UnitOfWork(engine),
                    line.partner_id,
                    actor,
                    line.request_id,
                    line.sales_date,
                    line.total,
                    datetime.now(UTC),
                )
            except CoalitionError as error:
                print(f"{arguments.file}:{line.line_number}: {error.reason}: {error}")
                return 1
            replayed += sales.replayed
            recorded += not sales.replayed
    except SalesFileError as error:
        print(error)
        return 2
    finally:
        engine.dispose()
    print(f"daily sales: {recorded} recorded, {replayed} already recorded")
    return 0


SALES_COMMANDS = {"partners import-sales": run_import}

"""Partners' daily total sales (PartnerService.ReportDailySales, `partners import-sales`) and
the report's share of sales from members, worked out by hand, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, func, select

from coalition import cli
from coalition.domain.points import Money
from coalition.partners import daily_sales
from coalition.reports import queries
from coalition.reports.period import parse_period
from coalition.store.schema import partner_daily_sales
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, partner_service_pb2, partner_service_pb2_grpc
from tests.conftest import api_key
from tests.end_to_end.support import expect_failure
from tests.integration import ledger_checks
from tests.programme.conftest import earn, enroll, new_id

TIMEOUT_SECONDS = 15.0
messages = partner_service_pb2


def rows(directory: Path, name: str) -> list[dict[str, str]]:
    with (directory / f"{name}.csv").open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def sales_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(partner_daily_sales)).scalar_one()
        )


@pytest.mark.end_to_end
def test_a_partner_reports_its_daily_sales_once_per_request_and_corrects_them(
    channel: grpc.Channel, engine: Engine
) -> None:
    stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
    air = api_key(engine, "test-air")
    day = (datetime.now(UTC) - timedelta(days=2)).date()

    def send(
        request_id: str,
        sales_date: str,
        amount_minor: int,
        currency: str = "EUR",
        **options: object,
    ) -> messages.ReportDailySalesResponse:
        request = messages.ReportDailySalesRequest(
            request_id=request_id,
            sales_date=sales_date,
            total_sales=common_pb2.Money(amount_minor=amount_minor, currency=currency),
        )
        return stub.ReportDailySales(
            request, metadata=options.get("metadata", air), timeout=TIMEOUT_SECONDS
        )

    first = send("sales-1", day.isoformat(), 500_000).daily_sales
    assert (first.partner_id, first.sales_date, first.version) == ("test-air", day.isoformat(), 1)
    assert (first.total_sales.amount_minor, first.total_sales.currency) == (500_000, "EUR")
    assert send("sales-1", day.isoformat(), 500_000).daily_sales == first  # a retry: once
    assert sales_rows(engine) == 1
    reused = expect_failure(
        lambda: send("sales-1", day.isoformat(), 600_000),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert reused.metadata["differing_fields"] == "total_sales"
    corrected = send("sales-2", day.isoformat(), 600_000).daily_sales
    assert (corrected.version, corrected.total_sales.amount_minor) == (2, 600_000)
    assert sales_rows(engine) == 2  # the first version stays, as the audit trail

    before = ledger_checks.row_counts(engine, ["partner_daily_sales"])
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    too_old = (datetime.now(UTC) - timedelta(days=401)).date().isoformat()
    for call, code, reason, fields in (
        (
            lambda: send(new_id(), tomorrow, 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "SALES_DATE_IN_FUTURE",
            ("sales_date",),
        ),
        (
            lambda: send(new_id(), day.isoformat(), 1, "CNY"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "CURRENCY_MISMATCH",
            ("total_sales.currency",),
        ),
        (
            lambda: send(new_id(), day.isoformat(), -1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ("total_sales.amount_minor",),
        ),
        (
            lambda: send(new_id(), too_old, 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ("sales_date",),
        ),
        (
            lambda: send(new_id(), "2026-02-30", 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ("sales_date",),
        ),
        (
            lambda: stub.ReportDailySales(
                messages.ReportDailySalesRequest(request_id=new_id(), sales_date=day.isoformat()),
                metadata=air,
                timeout=TIMEOUT_SECONDS,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ("total_sales",),
        ),
        (
            lambda: send(
                new_id(), day.isoformat(), 1, metadata=api_key(engine, "marketing", "admin")
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_ALLOWED",
            (),
        ),
    ):
        expect_failure(call, code, reason, fields)
    assert ledger_checks.row_counts(engine, ["partner_daily_sales"]) == before
    # Zero is a total (a day closed); a day's sales are reported on or after that day.
    today = datetime.now(UTC).date().isoformat()
    assert send(new_id(), today, 0).daily_sales.version == 1


CLOCK = datetime(2026, 3, 10, 12, tzinfo=UTC)


def report_sales(engine: Engine, partner_id: str, day: date, amount_minor: int) -> int:
    currency = {"test-air": "EUR", "test-coffee": "CNY"}[partner_id]
    return daily_sales.report_daily_sales(
        UnitOfWork(engine),
        partner_id,
        f"{partner_id}-key",
        new_id(),
        day,
        Money(amount_minor, currency),
        CLOCK,
    ).version


def march_at_air(engine: Engine) -> None:
    """Members' purchases at test-air (by purchase day): 150 EUR on the 3rd, 30 on the 4th,
    80 on the 5th; a coffee purchase on the 3rd is test-coffee's. test-air reports the 3rd
    and the 4th (corrected from 400 to 300 EUR), and a day of February, outside the period;
    never the 5th."""
    alice, bob = enroll(engine), enroll(engine)

    def on(day: int) -> datetime:
        return datetime(2026, 3, day, 15, tzinfo=UTC)

    for member_id, amount_minor, day in (
        (alice, 10_000, 3),
        (bob, 5_000, 3),
        (alice, 3_000, 4),
        (bob, 8_000, 5),
    ):
        earn(engine, member_id, amount_minor, occurred_at=on(day), at=CLOCK)
    earn(engine, alice, 2_000, "test-coffee", occurred_at=on(3), at=CLOCK)
    assert report_sales(engine, "test-air", date(2026, 3, 3), 100_000) == 1
    assert report_sales(engine, "test-air", date(2026, 3, 4), 40_000) == 1
    assert report_sales(engine, "test-air", date(2026, 3, 4), 30_000) == 2
    assert report_sales(engine, "test-air", date(2026, 2, 28), 1) == 1


@pytest.mark.integration
def test_the_share_of_sales_from_members_counts_only_the_days_reported(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    march_at_air(engine)
    out = tmp_path / "report"
    assert cli.main(["report", "--db", database_url, "--period", "2026-03", "--out", str(out)]) == 0
    (share,) = rows(out, "contribution_share")
    # (150 + 30) / (1,000 + 300) = 0.13846...
    assert share == {
        "partner_id": "test-air",
        "days_reported": "2",
        "days_covered": "2026-03-03 to 2026-03-04",
        "member_spend": "180.00",
        "reported_sales": "1300.00",
        "share_of_sales": "0.1385",
        "currency": "EUR",
    }
    # A day's report: only that day.
    out_day = tmp_path / "day"
    assert (
        cli.main(["report", "--db", database_url, "--period", "2026-03-03", "--out", str(out_day)])
        == 0
    )
    (day_share,) = rows(out_day, "contribution_share")
    assert (day_share["member_spend"], day_share["share_of_sales"]) == ("150.00", "0.1500")
    html = (out / "report.html").read_text()
    assert "Share of sales from members" in html and "2026-03-03 to 2026-03-04" in html


@pytest.mark.integration
def test_the_import_command_loads_a_file_once(
    database_url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=back)).isoformat() for back in (3, 2, 1)]
    path = tmp_path / "sales.csv"
    path.write_text(
        "partner_id,sales_date,amount_minor,currency\n"
        f"test-air,{days[0]},120000,EUR\n"
        f"test-air,{days[1]},90000,EUR\n"
        f"test-coffee,{days[2]},5000000,CNY\n"
    )
    command = ["partners", "import-sales", str(path), "--db", database_url]
    assert cli.main(command) == 0
    assert "3 recorded, 0 already recorded" in capsys.readouterr().out
    assert cli.main(command) == 0  # again: nothing applied twice
    assert "0 recorded, 3 already recorded" in capsys.readouterr().out
    assert sales_rows(engine) == 3
    path.write_text(
        "partner_id,sales_date,amount_minor,currency\n"
        f"test-air,{days[1]},95000,EUR\n"  # a correction: the day's version 2
        f"test-air,{days[2]},1,CNY\n"
    )
    assert cli.main(command) == 1
    assert f"{path}:3: CURRENCY_MISMATCH" in capsys.readouterr().out
    assert sales_rows(engine) == 4  # the correction before the refused line applied
    path.write_text("day,amount\n")
    assert cli.main(command) == 2


@pytest.mark.end_to_end
def test_the_share_over_grpc_as_the_report_has_it(channel: grpc.Channel, engine: Engine) -> None:
    march_at_air(engine)
    stub = partner_service_pb2_grpc.PartnerServiceStub(channel)

    def share(partner_id: str, metadata: object, period: str = "2026-03") -> object:
        return stub.GetContributionShare(
            messages.GetContributionShareRequest(partner_id=partner_id, period=period),
            metadata=metadata,
            timeout=TIMEOUT_SECONDS,
        )

    air = api_key(engine, "test-air")
    own = share("test-air", air)
    assert list(own.sales_dates) == ["2026-03-03", "2026-03-04"]
    assert (own.member_spend.amount_minor, own.member_spend.currency) == (18_000, "EUR")
    assert (own.reported_sales.amount_minor, own.share_of_sales) == (130_000, "0.1385")
    assert share("test-air", api_key(engine, "marketing", "admin")) == own
    nothing = share("test-coffee", api_key(engine, "test-coffee"))
    assert list(nothing.sales_dates) == [] and not nothing.HasField("member_spend")
    for partner_id in ("test-coffee", "no-such-partner"):
        expect_failure(
            lambda partner_id=partner_id: share(partner_id, air),
            grpc.StatusCode.NOT_FOUND,
            "PARTNER_NOT_FOUND",
        )
    expect_failure(
        lambda: share("test-air", air, "2026-13"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("period",),
    )


@pytest.mark.integration
def test_concurrent_reports_of_a_day_apply_once_per_request_and_number_their_versions(
    engine: Engine,
) -> None:
    """Six retries of one request at once write one version; six corrections at once get
    versions 2 to 7, none lost, none repeated (the partner row's lock)."""
    day = date(2026, 3, 3)
    start = threading.Barrier(6)

    def send(request_id: str, amount_minor: int) -> daily_sales.DailySales:
        start.wait()
        return daily_sales.report_daily_sales(
            UnitOfWork(engine),
            "test-air",
            "test-air-key",
            request_id,
            day,
            Money(amount_minor, "EUR"),
            CLOCK,
        )

    with ThreadPoolExecutor(6) as pool:
        retried = list(pool.map(send, ["same"] * 6, [1_000] * 6))
    assert {sales.version for sales in retried} == {1}
    assert sorted(sales.replayed for sales in retried) == [False] + [True] * 5
    with ThreadPoolExecutor(6) as pool:
        corrections = list(pool.map(send, [new_id() for _ in range(6)], range(2_000, 2_006)))
    assert sorted(sales.version for sales in corrections) == [2, 3, 4, 5, 6, 7]
    assert sales_rows(engine) == 7
    latest = max(corrections, key=lambda sales: sales.version)
    assert daily_sales_total(engine, day) == latest.total.amount_minor


def daily_sales_total(engine: Engine, day: date) -> int:
    with UnitOfWork(engine, read_only=True) as uow:
        period = parse_period(day.isoformat())
        return queries.reported_sales(uow, period, "test-air")["test-air"][day]

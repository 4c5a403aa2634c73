"""The report's tables, on both databases, against figures computed from the model."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from coalition import cli
from coalition.reports.period import parse_period, trailing_periods
from coalition.store.schema import lots
from tests.integration.ledger_checks import assert_ledger_sound
from tests.reports import expected
from tests.reports.conftest import GeneratedLedger

pytestmark = pytest.mark.integration

TABLES = (
    "liability",
    "liability_trend",
    "breakage_by_cohort",
    "breakage_by_partner",
    "flow_matrix",
    "settlement_positions",
    "programme_metrics",
)


def read_csv(directory: Path, name: str) -> list[list[str]]:
    with (directory / f"{name}.csv").open(newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def stringify(rows: list[tuple[object, ...]]) -> list[list[str]]:
    return [[str(value) for value in row] for row in rows]


def run_report(database_url: str, period: str, out: Path, *extra: str) -> None:
    assert (
        cli.main(["report", "--db", database_url, "--period", period, "--out", str(out), *extra])
        == 0
    )


@pytest.mark.parametrize("period_text", ["2026-07", "2026-03", "2026-05-12"])
def test_report_matches_the_model(
    generated_ledger: GeneratedLedger, tmp_path: Path, period_text: str
) -> None:
    generated = generated_ledger.model
    assert_ledger_sound(generated_ledger.engine)
    period = parse_period(period_text)
    run_report(generated_ledger.database_url, period_text, tmp_path)
    for name in TABLES:
        assert (tmp_path / f"{name}.csv").is_file() and (tmp_path / f"{name}.json").is_file()
    assert (tmp_path / "report.html").is_file()

    trend = expected.liability(generated, trailing_periods(period, 6))
    assert read_csv(tmp_path, "liability_trend")[1:] == stringify(trend)
    liability = {row[0]: row for row in read_csv(tmp_path, "liability")[1:]}
    for issuer, value_minor in expected.liability_value(generated, period).items():
        assert int(liability[issuer][3]) == value_minor
        # the page's columns: the same money in major units (all three currencies have 2
        # decimals), the price per point exactly
        assert liability[issuer][6] == f"{Decimal(value_minor) / 100:.2f}"
        assert Decimal(liability[issuer][5]) * 100 == Decimal(liability[issuer][2])
    assert read_csv(tmp_path, "breakage_by_cohort")[1:] == stringify(
        expected.breakage(generated, period.end, by_cohort=True)
    )
    assert read_csv(tmp_path, "breakage_by_partner")[1:] == stringify(
        expected.breakage(generated, period.end, by_cohort=False)
    )
    assert read_csv(tmp_path, "flow_matrix")[1:] == stringify(expected.flows(generated, period))
    positions = read_csv(tmp_path, "settlement_positions")
    assert positions[0][:7] == [
        "partner_id",
        "issued_points",
        "redeemed_points",
        "owed_by_partner_minor",
        "owed_to_partner_minor",
        "net_owed_by_partner_minor",
        "currency",
    ], "the published columns keep their names and places"
    assert [row[:7] for row in positions[1:]] == stringify(expected.settlement(generated, period))
    for row in positions[1:]:
        assert row[7:] == [f"{Decimal(int(minor)) / 100:.2f}" for minor in row[3:6]]
    metrics = dict(read_csv(tmp_path, "programme_metrics")[1:])
    for name, value in expected.metrics(generated, period).items():
        assert metrics[name] == value, name


def test_generated_ledger_has_every_kind_of_figure(generated_ledger: GeneratedLedger) -> None:
    """The generator really exercises expiry, cross-brand burns and retention."""
    generated = generated_ledger.model
    assert generated.expiries
    assert any(issuer != redeemer for issuer, redeemer, _, _ in generated.consumptions)
    july = parse_period("2026-07")
    assert expected.metrics(generated, july)["retained_members"] != "0"


def test_trend_at_the_end_equals_lot_remainders(
    generated_ledger: GeneratedLedger, tmp_path: Path
) -> None:
    run_report(generated_ledger.database_url, "2026-10", tmp_path)
    with generated_ledger.engine.connect() as connection:
        remaining = dict(
            connection.execute(
                select(lots.c.partner_id, func.sum(lots.c.remaining_points)).group_by(
                    lots.c.partner_id
                )
            ).all()
        )
    latest = {row[0]: int(row[1]) for row in read_csv(tmp_path, "liability")[1:]}
    assert latest == {partner: int(points) for partner, points in remaining.items()}


def test_json_equals_csv_and_partner_filter(
    generated_ledger: GeneratedLedger, tmp_path: Path
) -> None:
    run_report(generated_ledger.database_url, "2026-06", tmp_path, "--partner", "test-air")
    for name in TABLES:
        document = json.loads((tmp_path / f"{name}.json").read_text())
        rows = read_csv(tmp_path, name)
        assert document["columns"] == rows[0]
        assert [[str(record[c]) for c in rows[0]] for record in document["rows"]] == rows[1:]
    assert {row[0] for row in read_csv(tmp_path, "liability")[1:]} == {"test-air"}
    assert all("test-air" in (row[0], row[1]) for row in read_csv(tmp_path, "flow_matrix")[1:])


def test_bad_period_is_refused(
    database_url: str, tmp_path: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """A usage error, as a bad --period of every other command (exit 2, nothing written)."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        cli.main(["report", "--db", database_url, "--period", "2026-13", "--out", str(out)])
    assert exited.value.code == 2
    assert "--period: period '2026-13': month must be 01..12" in capsys.readouterr().err
    assert not out.exists()

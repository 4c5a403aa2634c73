"""report.html in a real headless browser: no console errors, a screenshot, and every number
on the page equal to the CSV it came from. Fails (never skips) without chromium."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from coalition import cli
from tests.reports.browser import render, table_cells
from tests.reports.conftest import GeneratedLedger
from tests.reports.test_report_figures import TABLES

pytestmark = pytest.mark.browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Checked cell by cell against their CSV here; their figures in test_promotion_costs.py.
PROMOTION_AND_MEMBER_TABLES = (
    "promotion_costs",
    "promotion_funders",
    "member_spend",
    "contribution_share",
    "tier_distribution",
    "tier_movements",
)


def test_console_errors_are_seen(tmp_path: Path) -> None:
    """The console check itself: a page that logs an error and throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p>"
        "<script>console.error('marker'); notDefined();</script></body></html>"
    )
    rendering = render(page, tmp_path)
    assert any("marker" in line for line in rendering.console_lines)
    assert any("notDefined" in line for line in rendering.console_lines)


def test_report_renders_and_matches_the_csv(
    generated_ledger: GeneratedLedger, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    database_url = generated_ledger.database_url
    assert cli.main(["report", "--db", database_url, "--period", "2026-07", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html

    rendering = render(out / "report.html", tmp_path)

    assert rendering.console_lines == []
    assert rendering.screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert rendering.screenshot.stat().st_size > 10_000
    assert rendering.dom.count("<svg") == 3
    cells = table_cells(rendering.dom)
    compared = 0
    for name in (*TABLES, *PROMOTION_AND_MEMBER_TABLES):
        with (out / f"{name}.csv").open(newline="", encoding="utf-8") as stream:
            header, *rows = list(csv.reader(stream))
        columns = ["value"] if name == "programme_metrics" else header
        for index, row in enumerate(rows):
            values = row[1:] if name == "programme_metrics" else row
            for column, value in zip(columns, values, strict=True):
                if "minor" in column:
                    # people read major units: the minor-unit columns are for machines only
                    assert (name, index, column) not in cells, (name, index, column)
                    continue
                assert cells[(name, index, column)] == value, (name, index, column)
                compared += 1
        if any("minor" in column for column in header):
            assert "currency" in header, name
    assert compared == len(cells) and compared > 100
    assert "minor units)" not in rendering.dom

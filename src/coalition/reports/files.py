"""A built report written out: a CSV and a JSON file per table, and one `report.html`.

Apart from build.py so that the imports run one way: build <- html <- files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from coalition.reports.build import Report
from coalition.reports.html import render_html


def write_report(report: Report, directory: Path) -> list[Path]:
    """`<table>.csv` and `<table>.json` for every table, and `report.html`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for table in report.tables.values():
        csv_path = directory / f"{table.name}.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(table.columns)
            writer.writerows(table.rows)
        json_path = directory / f"{table.name}.json"
        document = {
            "table": table.name,
            "period": report.period.label,
            "partner_id": report.partner_id,
            "columns": list(table.columns),
            "rows": table.records(),
        }
        json_path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        written += [csv_path, json_path]
    html_path = directory / "report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return [*written, html_path]

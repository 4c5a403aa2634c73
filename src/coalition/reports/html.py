"""One self-contained `report.html`: tables and inline SVG charts, no scripts, no fetches.

Every table cell carries `data-table`, `data-row` and `data-column` so that a reader (or a
test in a browser) can match each number on the page with the CSV it came from.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Any

from coalition.reports.build import Report, Table

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th { background: #eee; }
td.text, th.text { text-align: left; }
p.headline { font-weight: bold; margin: 0.2em 0; }
svg { background: #fafafa; border: 1px solid #ddd; margin: 0.5em 0; }
svg text { font-size: 11px; font-family: sans-serif; }
"""


def render_html(report: Report) -> str:
    scope = f" — partner {report.partner_id}" if report.partner_id else ""
    title = f"Coalition report {report.period.label}{scope}"
    tables = report.tables
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may load from anywhere: no scripts, no images, no fonts, no fetches.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Period {escape(report.period.start.isoformat())} to "
        f"{escape(report.period.end.isoformat())} (end exclusive, by commit time); generated "
        f"{escape(report.generate_time.isoformat())}.</p>",
        _headline(
            "Money is in major units of the currency shown on each row; the CSV and JSON files "
            "also carry it in minor units."
        ),
        "<h2>Liability</h2>",
        _table_html(tables["liability"]),
        _trend_svg(tables["liability_trend"]),
        _table_html(tables["liability_trend"]),
        "<h2>Breakage</h2>",
        _cohort_svg(tables["breakage_by_cohort"]),
        _table_html(tables["breakage_by_cohort"]),
        _table_html(tables["breakage_by_partner"]),
        "<h2>Cross-brand flow</h2>",
        _heat_map_svg(tables["flow_matrix"]),
        _table_html(tables["flow_matrix"]),
        _table_html(tables["settlement_positions"]),
        "<h2>Programme metrics</h2>",
        _metrics_html(tables["programme_metrics"]),
        "<h2>Promotions: what they cost and returned</h2>",
        _headline("Cost is at the issuance price of each earn's rate version."),
        _table_html(tables["promotion_costs"]),
        _table_html(tables["promotion_funders"]),
        "<h2>Members: spend, tiers</h2>",
        _table_html(tables["member_spend"]),
        _table_html(tables["contribution_share"]),
        _table_html(tables["tier_distribution"]),
        _table_html(tables["tier_movements"]),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _cell(table: Table, index: int, column: str, value: Any) -> str:
    kind = "num" if isinstance(value, int) or _is_decimal(value) else "text"
    return (
        f'<td class="{kind}" data-table="{table.name}" data-row="{index}" '
        f'data-column="{escape(column)}">{escape(str(value))}</td>'
    )


def _is_decimal(value: Any) -> bool:
    try:
        Decimal(str(value))
    except ArithmeticError:
        return False
    return str(value) != ""


# Column names as a reader says them; the CSV keeps the machine names (data-column too).
COLUMN_WORDS = {
    "partner_id": "Partner",
    "issuer_partner_id": "Issued at",
    "redeemer_partner_id": "Redeemed at",
    "outstanding_points": "Outstanding points",
    "redemption_price_per_point": "Redemption price per point",
    "value": "Value",
    "issued_points": "Points issued",
    "expired_points": "Points expired",
    "redeemed_points": "Points redeemed",
    "breakage_rate": "Breakage rate",
    "earn_month": "Earn month",
    "owed_by_partner": "Owed by the partner",
    "owed_to_partner": "Owed to the partner",
    "net_owed_by_partner": "Net owed by the partner",
    "currency": "Currency",
    "period": "Period",
    "points": "Points",
    "members": "Members",
    "visits": "Visits",
    "spend": "Spend",
    "funder": "Funder",
    "promotion_id": "Promotion",
    "funded_by": "Funded by",
    "members_reached": "Members reached",
    "promoted_visits": "Promoted visits",
    "points_granted": "Points granted",
    "cost": "Cost",
    "participant_spend": "Participants' spend",
    "spend_per_promoted_visit": "Spend per promoted visit",
    "spend_per_other_visit": "Spend per other visit",
    "incremental_spend": "Incremental spend",
    "roi": "ROI",
    "budget_points": "Budget (points)",
    "budget_left_points": "Budget left (points)",
    "budget_money": "Budget (money)",
    "budget_money_spent": "Budget spent (money)",
    "budget_money_left": "Budget left (money)",
    "budget_currency": "Budget currency",
    "spend_per_visit": "Spend per visit",
    "days_reported": "Days reported",
    "days_covered": "Days covered",
    "member_spend": "Members' spend",
    "reported_sales": "Reported total sales",
    "share_of_sales": "Share of sales from members",
    "tier_id": "Tier",
    "tier_before": "From tier",
    "tier_after": "To tier",
}


def _column_words(column: str) -> str:
    return COLUMN_WORDS.get(column, column.replace("_", " ").capitalize())


def _headline(text: str) -> str:
    return f'<p class="headline">{escape(text)}</p>' if text else ""


def _table_html(table: Table) -> str:
    shown = table.page_columns
    header = "".join(f"<th>{escape(_column_words(column))}</th>" for column in shown)
    body = "".join(
        "<tr>"
        + "".join(
            _cell(table, index, column, value)
            for column, value in zip(table.columns, row, strict=True)
            if column in shown
        )
        + "</tr>"
        for index, row in enumerate(table.rows)
    )
    if not table.rows:
        body = f'<tr><td colspan="{len(shown)}" class="text">no rows</td></tr>'
    return (
        f"<h3>{escape(table.title)}</h3>{_headline(table.headline)}"
        f'<table id="{table.name}"><thead><tr>{header}</tr>'
        f"</thead><tbody>{body}</tbody></table>"
    )


def _metrics_html(table: Table) -> str:
    rows = "".join(
        f'<tr><td class="text">{escape(str(name))}</td>{_cell(table, index, "value", value)}'
        f'<td class="text">{escape(table.definitions.get(str(name), ""))}</td></tr>'
        for index, (name, value) in enumerate(table.rows)
    )
    return (
        f'<table id="{table.name}"><thead><tr><th class="text">metric</th><th>value</th>'
        f'<th class="text">definition</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, value: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(value)}</text>'


def _vertical(x: float, y: float) -> str:
    return f' transform="rotate(-90 {x:.1f} {y:.1f})"'


def _heat_map_svg(table: Table) -> str:
    """Issuers down, redeemers across; darker cells moved more points."""
    names = sorted({row[0] for row in table.rows} | {row[1] for row in table.rows})
    cells = {(row[0], row[1]): int(row[2]) for row in table.rows}
    peak = max((abs(points) for points in cells.values()), default=0) or 1
    size, left, top = 70, 130, 110
    width = max(left + size * len(names) + 20, 420)  # room for the caption
    height = top + size * len(names) + 20
    body = [_text(20, 16, "rows: issuing partner; columns: redeeming partner", "start")]
    for column, name in enumerate(names):
        x = left + column * size + size / 2
        body.append(_text(x, top - 8, name, "start", f' transform="rotate(-40 {x:.1f} {top - 8})"'))
    for row_index, issuer in enumerate(names):
        y = top + row_index * size
        body.append(_text(left - 6, y + size / 2 + 4, issuer, "end"))
        for column, redeemer in enumerate(names):
            points = cells.get((issuer, redeemer), 0)
            opacity = 0.08 + 0.92 * abs(points) / peak if points else 0.0
            x = left + column * size
            body.append(
                f'<rect x="{x}" y="{y}" width="{size - 2}" height="{size - 2}" '
                f'fill="#b2182b" fill-opacity="{opacity:.3f}" stroke="#ccc" '
                f'data-issuer="{escape(issuer)}" data-redeemer="{escape(redeemer)}" '
                f'data-points="{points}"><title>{escape(issuer)} → {escape(redeemer)}: '
                f"{points}</title></rect>"
            )
            body.append(_text(x + size / 2, y + size / 2 + 4, str(points)))
    return _svg(width, height, "Heat map of the cross-brand flow matrix", body)


def _trend_svg(table: Table) -> str:
    periods = list(dict.fromkeys(row[0] for row in table.rows))
    series: dict[str, list[int]] = {}
    for _, partner_id, points in table.rows:
        series.setdefault(partner_id, []).append(int(points))
    peak = max((max(values) for values in series.values()), default=0) or 1
    width, height, left, right, top, bottom = 640, 300, 70, 150, 20, 40
    plot_width, plot_height = width - left - right, height - top - bottom
    step = plot_width / max(len(periods) - 1, 1)

    def y_of(points: int) -> float:
        return top + plot_height - plot_height * max(points, 0) / peak

    body = [
        f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" '
        f'y2="{top + plot_height}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_height}" stroke="#444"/>',
        _text(left - 6, top + 4, str(peak), "end"),
        _text(left - 6, top + plot_height + 4, "0", "end"),
        _text(left + plot_width / 2, height - 2, "period (end of)"),
        _text(
            14,
            top + plot_height / 2,
            "outstanding points",
            extra=_vertical(14, top + plot_height / 2),
        ),
    ]
    for index, label in enumerate(periods):
        body.append(_text(left + index * step, height - 15, label))
    for number, (partner_id, values) in enumerate(sorted(series.items())):
        colour = PALETTE[number % len(PALETTE)]
        points = " ".join(
            f"{left + index * step:.1f},{y_of(value):.1f}" for index, value in enumerate(values)
        )
        body.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" '
            f'data-partner="{escape(partner_id)}"/>'
        )
        legend_y = top + 14 * number + 10
        body.append(
            f'<rect x="{width - right + 10}" y="{legend_y - 8}" width="10" height="10" '
            f'fill="{colour}"/>'
        )
        body.append(_text(width - right + 25, legend_y + 1, partner_id, "start"))
    return _svg(width, height, "Liability trend: outstanding points per period", body)


def _cohort_svg(table: Table) -> str:
    rows = [(row[0], Decimal(row[3]) if row[3] != "" else Decimal(0)) for row in table.rows]
    peak = max((rate for _, rate in rows), default=Decimal(0)) or Decimal(1)
    bar, gap, left, top, plot_height = 36, 10, 60, 20, 200
    width = max(left + (bar + gap) * max(len(rows), 1) + 20, 360)  # room for the axis labels
    height = top + plot_height + 50
    body = [
        f'<line x1="{left}" y1="{top + plot_height}" x2="{width - 10}" '
        f'y2="{top + plot_height}" stroke="#444"/>',
        _text(left - 6, top + 4, str(peak), "end"),
        _text(left - 6, top + plot_height + 4, "0", "end"),
        _text((left + width) / 2, height - 4, "earn month (cohort)"),
        _text(
            12, top + plot_height / 2, "breakage rate", extra=_vertical(12, top + plot_height / 2)
        ),
    ]
    for index, (cohort, rate) in enumerate(rows):
        bar_height = float(plot_height * rate / peak)
        x = left + index * (bar + gap) + gap / 2
        body.append(
            f'<rect x="{x:.1f}" y="{top + plot_height - bar_height:.1f}" width="{bar}" '
            f'height="{bar_height:.1f}" fill="#4575b4" data-cohort="{escape(cohort)}">'
            f"<title>{escape(cohort)}: {rate}</title></rect>"
        )
        body.append(_text(x + bar / 2, top + plot_height + 15, cohort))
    return _svg(width, height, "Breakage rate by earn-month cohort", body)

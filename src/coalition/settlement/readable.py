"""Statements as finance reads them: major units with the currency, who owes whom, the rate
versions that priced it, and a group summary per currency.

Everything here is derived from the signed JSON (`statement.json`), never from the database:
the JSON stays the signed truth, and each page says so and carries its hash, so a reader can
check that the page and the file are of one statement.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from coalition.domain.currency import MINOR_UNIT_EXPONENTS
from coalition.settlement.format import (
    EXPIRED,
    HUB_PAYS_PARTNER,
    ISSUED,
    ISSUED_REVERSED,
    PARTNER_PAYS_HUB,
    REDEEMED,
    REDEEMED_REVERSED,
)

POINT_ROWS = (
    (ISSUED, "issued"),
    (ISSUED_REVERSED, "issued, reversed (refunds)"),
    (REDEEMED, "redeemed"),
    (REDEEMED_REVERSED, "redeemed, reversed"),
    (EXPIRED, "expired"),
)


def major(amount_minor: int, currency: str) -> str:
    """`12345, "CNY"` -> `"123.45 CNY"`, with the currency's own number of decimals."""
    exponent = MINOR_UNIT_EXPONENTS[currency]
    value = Decimal(amount_minor).scaleb(-exponent)
    return f"{value:,.{exponent}f} {currency}"


def net_sentence(body: dict[str, Any], partner_name: str) -> str:
    money = body["money"]
    amount = major(int(money["net_minor"]), body["currency"])
    if money["net_direction"] == PARTNER_PAYS_HUB:
        return f"{partner_name} pays the hub {amount}"
    if money["net_direction"] == HUB_PAYS_PARTNER:
        return f"The hub pays {partner_name} {amount}"
    return "Nobody owes anything: the two sides are even"


def statement_html(document: dict[str, Any], partner_name: str) -> str:
    """The page of one exported statement (`document`: the parsed statement.json)."""
    body = document["body"]
    currency = body["currency"]
    money = body["money"]
    rows = "".join(
        f"<tr><td>{label}</td><td class=n>{int(body['points'][key]):,}</td></tr>"
        for key, label in POINT_ROWS
    )
    versions = "".join(_rate_version_row(version, currency) for version in body["rate_versions"])
    title = f"Settlement statement {body['statement_id']}"
    return _page(
        title,
        f"""<h1>{_e(title)}</h1>
<p class=lead>{_e(partner_name)} ({_e(body["partner_id"])}), period ending
{_e(body["period"]["last_day"])} (everything committed before {_e(body["period"]["end_time"])}),
statement {_e(body["sequence_number"])} of its chain, {int(body["entry_count"]):,} entries.</p>
<p class=net>{_e(net_sentence(body, partner_name))}</p>
<h2>Money</h2>
<table><tr><th>owed by the partner (points issued, net of refunds)</th>
<td class=n>{_e(major(int(money["owed_by_partner_minor"]), currency))}</td></tr>
<tr><th>owed by the hub (points redeemed, net of reversals)</th>
<td class=n>{_e(major(int(money["owed_by_hub_minor"]), currency))}</td></tr>
<tr><th>net</th><td class=n>{_e(net_sentence(body, partner_name))}</td></tr></table>
<h2>Points</h2><table><tr><th>movement</th><th>points</th></tr>{rows}</table>
<h2>Rate versions that priced it</h2>
<table><tr><th>rate version</th><th>issuance price per point</th>
<th>redemption price per point</th><th>points issued (net)</th><th>points redeemed (net)</th>
<th>owed by the partner</th><th>owed by the hub</th></tr>{versions}</table>
{_signed_truth(document)}""",
    )


def _rate_version_row(version: dict[str, Any], currency: str) -> str:
    points = version["points"]
    issued = int(points[ISSUED]) - int(points[ISSUED_REVERSED])
    redeemed = int(points[REDEEMED]) - int(points[REDEEMED_REVERSED])
    return (
        f"<tr><td>{_e(version['rate_version_id'])}</td>"
        f"<td class=n>{_e(version['issuance_price_minor_per_point'])} minor {_e(currency)}</td>"
        f"<td class=n>{_e(version['redemption_price_minor_per_point'])} minor {_e(currency)}</td>"
        f"<td class=n>{issued:,}</td><td class=n>{redeemed:,}</td>"
        f"<td class=n>{_e(major(int(version['owed_by_partner_minor']), currency))}</td>"
        f"<td class=n>{_e(major(int(version['owed_by_hub_minor']), currency))}</td></tr>"
    )


def _signed_truth(document: dict[str, Any]) -> str:
    return (
        "<p class=truth>This page is a reading of <code>statement.json</code>, which is the "
        "signed statement and the only one that counts: "
        f"statement hash <code>{_e(document['statement_hash'])}</code>, signed with key "
        f"<code>{_e(document['body']['signing_key_id'])}</code>. Check it offline with "
        "<code>coalition settle verify</code>.</p>"
    )


@dataclass
class CurrencyTotals:
    currency: str
    partners: int = 0
    points: dict[str, int] = field(default_factory=lambda: dict.fromkeys(dict(POINT_ROWS), 0))
    owed_by_partners_minor: int = 0
    owed_by_hub_minor: int = 0

    @property
    def net_to_hub_minor(self) -> int:
        """What the partners of this currency pay the hub, net (negative: the hub pays)."""
        return self.owed_by_partners_minor - self.owed_by_hub_minor


def group_totals(bodies: list[dict[str, Any]]) -> list[CurrencyTotals]:
    """Per currency, the sum of the statements' figures (never summed across currencies)."""
    by_currency: dict[str, CurrencyTotals] = {}
    for body in bodies:
        totals = by_currency.setdefault(body["currency"], CurrencyTotals(body["currency"]))
        totals.partners += 1
        for key in totals.points:
            totals.points[key] += int(body["points"][key])
        totals.owed_by_partners_minor += int(body["money"]["owed_by_partner_minor"])
        totals.owed_by_hub_minor += int(body["money"]["owed_by_hub_minor"])
    return [by_currency[currency] for currency in sorted(by_currency)]


def group_summary_html(
    period_label: str, documents: list[dict[str, Any]], names: dict[str, str]
) -> str:
    """The group's page of a period: one row per partner statement, totals per currency."""
    statement_rows = "".join(_statement_row(document, names) for document in documents)
    currency_rows = "".join(
        f"<tr><td>{_e(t.currency)}</td><td class=n>{t.partners}</td>"
        f"<td class=n>{t.points[ISSUED]:,}</td><td class=n>{t.points[REDEEMED]:,}</td>"
        f"<td class=n>{t.points[EXPIRED]:,}</td>"
        f"<td class=n>{_e(major(t.owed_by_partners_minor, t.currency))}</td>"
        f"<td class=n>{_e(major(t.owed_by_hub_minor, t.currency))}</td>"
        f"<td class=n>{_e(_net_of_group(t))}</td></tr>"
        for t in group_totals([d["body"] for d in documents])
    )
    title = f"Group settlement summary {period_label}"
    return _page(
        title,
        f"""<h1>{_e(title)}</h1>
<h2>Totals per currency</h2>
<table><tr><th>currency</th><th>partners</th><th>points issued</th><th>points redeemed</th>
<th>points expired</th><th>owed by partners</th><th>owed by the hub</th><th>net</th></tr>
{currency_rows}</table>
<h2>Statements</h2>
<table><tr><th>partner</th><th>statement</th><th>currency</th><th>owed by the partner</th>
<th>owed by the hub</th><th>net</th><th>statement hash</th></tr>{statement_rows}</table>
<p class=truth>Each statement's signed <code>statement.json</code> is the truth; this page
sums them per currency and never across currencies.</p>""",
    )


def _statement_row(document: dict[str, Any], names: dict[str, str]) -> str:
    body = document["body"]
    currency = body["currency"]
    name = names.get(body["partner_id"], body["partner_id"])
    return (
        f"<tr><td>{_e(name)}</td><td>{_e(body['statement_id'])}</td><td>{_e(currency)}</td>"
        f"<td class=n>{_e(major(int(body['money']['owed_by_partner_minor']), currency))}</td>"
        f"<td class=n>{_e(major(int(body['money']['owed_by_hub_minor']), currency))}</td>"
        f"<td>{_e(net_sentence(body, name))}</td>"
        f"<td><code>{_e(document['statement_hash'])}</code></td></tr>"
    )


def _net_of_group(totals: CurrencyTotals) -> str:
    net = totals.net_to_hub_minor
    if net > 0:
        return f"partners pay the hub {major(net, totals.currency)}"
    if net < 0:
        return f"the hub pays partners {major(-net, totals.currency)}"
    return "even"


def _page(title: str, content: str) -> str:
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
p.net {{ font-size: 1.3em; font-weight: 600; }}
p.truth {{ color: #555; border-left: 3px solid #999; padding-left: .8em; }}
</style></head><body>
{content}
</body></html>
"""


def _e(value: object) -> str:
    return html.escape(str(value))

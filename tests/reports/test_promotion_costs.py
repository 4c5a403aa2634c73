"""What promotions cost and returned, in the report: a small ledger worked out by hand."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from coalition import cli, operations
from coalition.operations import promotion_admin
from coalition.operations.points import ReverseCommand
from coalition.operations.promotion_admin import Actor
from coalition.store.unit_of_work import UnitOfWork
from tests.programme.conftest import PLAIN, earn, enroll, new_id, now

pytestmark = pytest.mark.integration

WINDOW = {
    "starts_at": datetime(2020, 1, 1, tzinfo=UTC),
    "ends_at": datetime(2100, 1, 1, tzinfo=UTC),
}


def rows(directory: Path, name: str) -> list[dict[str, str]]:
    with (directory / f"{name}.csv").open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_cost_roi_budget_and_funders(engine: Engine, database_url: str, tmp_path: Path) -> None:
    for actor, entry in (
        (
            Actor("test-air", "test-air"),
            {"promotion_id": "test-air.double", "multiplier": "2", "budget_points": 150},
        ),
        (
            Actor("marketing", None),
            {
                "promotion_id": "welcome",
                "bonus_points": 10,
                "funded_by": "coalition",
                "first_purchase": "coalition",
            },
        ),
    ):
        promotion_admin.create_promotion(
            UnitOfWork(engine), actor, {**WINDOW, **entry}, None, PLAIN, now()
        )
    alice, bob, carol = enroll(engine), enroll(engine), enroll(engine)
    # test-air: 1 point per euro, issuance price 1.2 cents a point.
    assert earn(engine, alice, 10_000).points == 100 + 100 + 10
    assert earn(engine, bob, 8_000).points == 80 + 50 + 10  # the budget's last 50
    assert earn(engine, alice, 2_000).points == 20  # budget spent, not a first purchase
    assert earn(engine, carol, 4_000).points == 40 + 10
    out = tmp_path / "report"
    period = now().strftime("%Y-%m")
    assert cli.main(["report", "--db", database_url, "--period", period, "--out", str(out)]) == 0

    costs = {row["promotion_id"]: row for row in rows(out, "promotion_costs")}
    # air-double: 150 points x 1.2 = 180 cents. Its visits spent 100 + 80 euros; the other
    # visits at test-air (20 and 40 euros) 30 a visit, so the increment is 180 - 2 x 30 = 120
    # euros and ROI = (12,000 - 180) / 180.
    assert costs["test-air.double"] == {
        "promotion_id": "test-air.double",
        "funded_by": "test-air",
        "partner_id": "test-air",
        "members_reached": "2",
        "promoted_visits": "2",
        "points_granted": "150",
        "cost": "1.80",
        "participant_spend": "180.00",
        "spend_per_promoted_visit": "90.00",
        "spend_per_other_visit": "30.00",
        "incremental_spend": "120.00",
        "roi": "65.6667",
        "currency": "EUR",
        "budget_points": "150",
        "budget_left_points": "0",
        "budget_money": "",
        "budget_money_spent": "",
        "budget_money_left": "",
        "budget_currency": "",
    }
    # welcome: 30 points x 1.2 = 36 cents; 220 euros on 3 visits against 20 on the other one.
    assert costs["welcome"]["funded_by"] == "coalition (group)"
    assert (costs["welcome"]["cost"], costs["welcome"]["incremental_spend"]) == ("0.36", "160.00")
    assert costs["welcome"]["roi"] == "443.4444"
    assert costs["welcome"]["budget_points"] == ""
    funders = [tuple(row.values()) for row in rows(out, "promotion_funders")]
    assert funders == [
        ("coalition (group)", "EUR", "30", "0.36"),
        ("test-air", "EUR", "150", "1.80"),
    ]
    (spend,) = rows(out, "member_spend")
    assert (spend["visits"], spend["spend"], spend["spend_per_visit"]) == ("4", "240.00", "60.00")
    html = (out / "report.html").read_text()
    assert "Promotions: what they cost and returned" in html and "Budget left (points)" in html
    assert "owes 30 coalition-funded points" in html


def test_a_money_budget_in_money(engine: Engine, database_url: str, tmp_path: Path) -> None:
    promotion_admin.create_promotion(
        UnitOfWork(engine),
        Actor("test-air", "test-air"),
        {
            **WINDOW,
            "promotion_id": "test-air.launch",
            "bonus_points": 100,
            "budget_amount_minor": 301,
            "budget_currency": "EUR",
        },
        None,
        PLAIN,
        now(),
    )
    alice = enroll(engine)
    # 1.2 cents a point: 100 points spend 120 cents, then 100 more; 61 cents buy 50 points.
    earned = [earn(engine, alice, 1_000) for _ in range(4)]
    assert [result.points for result in earned] == [110, 110, 60, 10]
    # Reversing half the third earn gives back half its grant: 25 points, 30 cents.
    operations.reverse(
        UnitOfWork(engine),
        "test-air",
        ReverseCommand(new_id(), earned[2].transaction.transaction_id, 30),
        now(),
    )
    out = tmp_path / "report"
    period = now().strftime("%Y-%m")
    assert cli.main(["report", "--db", database_url, "--period", period, "--out", str(out)]) == 0
    (row,) = rows(out, "promotion_costs")
    assert (row["points_granted"], row["cost"], row["budget_points"]) == ("250", "3.00", "")
    assert (
        row["budget_money"],
        row["budget_money_spent"],
        row["budget_money_left"],
        row["budget_currency"],
    ) == ("3.01", "2.70", "0.31", "EUR")
    html = (out / "report.html").read_text()
    assert "Budget left (money)" in html

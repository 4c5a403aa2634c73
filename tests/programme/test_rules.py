"""Pure rules: tier ladder, promotion matching and rounding, programme files."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.domain.promotions import EarnFacts, applies, bonuses_for_earn
from coalition.domain.tiers import Tier, calendar_month, qualifying_months, tier_bonus_points
from coalition.programme.config import ProgrammeConfigError, load_programme
from tests.programme.conftest import LADDER, promotion

pytestmark = pytest.mark.unit

REPOSITORY = Path(__file__).resolve().parents[2]


def facts(**fields: object) -> EarnFacts:
    values: dict[str, object] = {
        "partner_id": "test-air",
        "occurred_at": datetime(2026, 5, 8, 12, tzinfo=UTC),
        "tier_id": "member",
        "birthday": None,
        "base_points": 100,
        **fields,
    }
    return EarnFacts(**values)  # type: ignore[arg-type]


def test_ladder_places_points_on_the_highest_reached_tier() -> None:
    assert [LADDER.qualified_for(p).tier_id for p in (0, 999, 1_000, 4_999, 5_000, 10**9)] == [
        "member",
        "member",
        "silver",
        "silver",
        "gold",
        "gold",
    ]
    assert LADDER.get("retired-tier") == LADDER.base


def test_rolling_window_is_twelve_calendar_months() -> None:
    first, last = qualifying_months(datetime(2026, 3, 31, 23, tzinfo=UTC))
    assert last == calendar_month(datetime(2026, 3, 1, tzinfo=UTC))
    assert first == calendar_month(datetime(2025, 4, 1, tzinfo=UTC))


def test_promotion_filters() -> None:
    window = promotion("w", bonus_points=1, starts_at=datetime(2026, 5, 8, 12, tzinfo=UTC))
    assert applies(window, facts())
    assert not applies(window, facts(occurred_at=datetime(2026, 5, 8, 11, tzinfo=UTC)))
    assert not applies(promotion("p", bonus_points=1, partner_ids={"x"}), facts())
    assert not applies(promotion("t", bonus_points=1, tier_ids={"gold"}), facts())
    assert applies(promotion("t", bonus_points=1, tier_ids={"gold"}), facts(tier_id="gold"))
    assert applies(promotion("d", bonus_points=1, member_day=8), facts())
    assert not applies(promotion("d", bonus_points=1, member_day=9), facts())
    birthday = promotion("b", bonus_points=1, birthday_month=True)
    assert not applies(birthday, facts())
    assert applies(birthday, facts(birthday=date(1990, 5, 30)))


@given(
    base_points=st.integers(0, 10**12),
    multiplier=st.decimals(min_value=1, max_value=10, places=3),
    promotion_multiplier=st.decimals(min_value="1.001", max_value=10, places=3),
)
def test_every_extra_rounds_down_on_its_own(
    base_points: int, multiplier: Decimal, promotion_multiplier: Decimal
) -> None:
    tier = Tier("t", "T", 0, multiplier)
    bonuses, _ = bonuses_for_earn(
        tier, (promotion("p", multiplier=promotion_multiplier),), facts(base_points=base_points)
    )
    exact_extra = base_points * (multiplier - 1) + base_points * (promotion_multiplier - 1)
    total_extra = sum(bonus.points for bonus in bonuses)
    assert all(bonus.points > 0 for bonus in bonuses)
    assert total_extra <= exact_extra < total_extra + 2
    assert tier_bonus_points(base_points, tier) == math.floor(base_points * (multiplier - 1))


def test_the_shipped_programme_files_load() -> None:
    programme = load_programme(REPOSITORY / "config")
    assert [tier.tier_id for tier in programme.ladder.tiers] == [
        "member",
        "silver",
        "gold",
        "diamond",
    ]
    assert {p.promotion_id for p in programme.promotions} >= {"member-day", "birthday-month"}


@pytest.mark.parametrize(
    ("tiers", "promotions", "message"),
    [
        (
            '[[tier]]\ntier_id = "a"\nthreshold_points = 5\nearn_multiplier = "1"\n',
            "",
            "start at 0",
        ),
        (
            '[[tier]]\ntier_id = "a"\nthreshold_points = 0\nearn_multiplier = 1.5\n',
            "",
            "decimal text",
        ),
        (
            '[[tier]]\ntier_id = "a"\nthreshold_points = 0\nearn_multiplier = "0.5"\n',
            "",
            "at least 1",
        ),
        (
            '[[tier]]\ntier_id = "a"\nthreshold_points = 0\nearn_multiplier = "1"\n',
            '[[promotion]]\npromotion_id = "p"\nstarts_at = 2026-01-01T00:00:00Z\n'
            'ends_at = 2027-01-01T00:00:00Z\nfunded_by = "someone"\nbonus_points = 5\n',
            "funded_by",
        ),
        (
            '[[tier]]\ntier_id = "a"\nthreshold_points = 0\nearn_multiplier = "1"\n',
            '[[promotion]]\npromotion_id = "p"\nstarts_at = 2026-01-01T00:00:00\n'
            'ends_at = 2027-01-01T00:00:00Z\nfunded_by = "coalition"\nbonus_points = 5\n',
            "offset",
        ),
        (
            '[[tier]]\ntier_id = "a"\nthreshold_points = 0\nearn_multiplier = "1"\n',
            '[[promotion]]\npromotion_id = "p"\nstarts_at = 2026-01-01T00:00:00Z\n'
            'ends_at = 2027-01-01T00:00:00Z\nfunded_by = "coalition"\nbonus_points = 5\n'
            'tier_ids = ["gold"]\n',
            "tier_ids",
        ),
    ],
)
def test_invalid_programme_files_are_refused(
    tmp_path: Path, tiers: str, promotions: str, message: str
) -> None:
    (tmp_path / "tiers.toml").write_text(tiers)
    if promotions:
        (tmp_path / "promotions.toml").write_text(promotions)
    with pytest.raises(ProgrammeConfigError, match=message):
        load_programme(tmp_path)


def test_a_job_instant_beyond_the_calendar_in_utc_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from coalition import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["jobs", "expire", "--as-of", "0001-01-01T00:00:00+14:00"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "outside years 1 to 9999 in UTC" in error and "Traceback" not in error

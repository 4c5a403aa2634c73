"""Tier ladder rules: which tier qualifying points reach, and the extra points a tier gives.

Pure rules, no I/O. Qualifying points are summed per calendar month (UTC), so "the rolling
12 months at instant t" is the calendar month of t and the 11 before it: a month's points
count in full or not at all, which keeps the sum a read of at most 12 small rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

QUALIFYING_WINDOW_MONTHS = 12


@dataclass(frozen=True)
class Tier:
    tier_id: str
    name: str
    threshold_points: int  # qualifying points over the rolling window needed to reach it
    earn_multiplier: Decimal  # applied to the base points of an earn; 1 means no bonus

    def __post_init__(self) -> None:
        assert self.threshold_points >= 0
        assert self.earn_multiplier >= 1, "a tier never takes points away"


@dataclass(frozen=True)
class TierLadder:
    """Tiers by ascending threshold; the first one (threshold 0) is where every member starts."""

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        assert self.tiers, "a ladder has at least the base tier"
        assert self.tiers[0].threshold_points == 0, "the base tier needs no points"
        thresholds = [tier.threshold_points for tier in self.tiers]
        assert thresholds == sorted(set(thresholds)), "thresholds strictly ascend"
        assert len({tier.tier_id for tier in self.tiers}) == len(self.tiers), "unique ids"

    @property
    def base(self) -> Tier:
        return self.tiers[0]

    @property
    def top(self) -> Tier:
        return self.tiers[-1]

    def get(self, tier_id: str) -> Tier:
        """The tier of that id; a tier no longer configured counts as the base tier."""
        return next((tier for tier in self.tiers if tier.tier_id == tier_id), self.base)

    def rank(self, tier_id: str) -> int:
        return self.tiers.index(self.get(tier_id))

    def qualified_for(self, qualifying_points: int) -> Tier:
        """The highest tier whose threshold `qualifying_points` reaches."""
        reached = [tier for tier in self.tiers if tier.threshold_points <= qualifying_points]
        return reached[-1]


def calendar_month(moment: datetime) -> int:
    """The UTC calendar month of `moment` as one integer (year * 12 + month - 1)."""
    moment = moment.astimezone(UTC)
    return moment.year * 12 + moment.month - 1


def qualifying_months(moment: datetime) -> tuple[int, int]:
    """First and last calendar month (inclusive) of the rolling window at `moment`."""
    last = calendar_month(moment)
    return last - QUALIFYING_WINDOW_MONTHS + 1, last


def tier_bonus_points(base_points: int, tier: Tier) -> int:
    """Extra points a tier adds to an earn of `base_points`, rounded down."""
    assert base_points >= 0
    return math.floor(base_points * (Fraction(tier.earn_multiplier) - 1))

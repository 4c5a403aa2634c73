"""Promotion rules: which promotions apply to an earn and how many extra points each gives.

Pure rules, no I/O. Each rule's extra points are computed on the earn's base points and
rounded down on their own, so the recorded share of every rule is a whole number and the
total (base + every extra) is never rounded up. Multipliers add, they do not compound: two
"x2" promotions on 100 base points give 100 + 100 + 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from coalition.domain.tiers import Tier, tier_bonus_points

FUNDED_BY_PARTNER = "partner"  # the partner the member earns with pays for the extra points
FUNDED_BY_COALITION = "coalition"  # the programme pays: posted to coalition:promotions


@dataclass(frozen=True)
class Promotion:
    promotion_id: str
    starts_at: datetime  # inclusive
    ends_at: datetime  # exclusive
    funded_by: str
    time_zone: str  # in which member days and birthday months are counted
    partner_ids: frozenset[str] | None = None  # None: every partner
    member_day: int | None = None  # day of the month (1-31) the promotion runs on
    birthday_month: bool = False  # only in the member's birthday month
    tier_ids: frozenset[str] | None = None  # None: every tier
    multiplier: Decimal | None = None  # extra = base * (multiplier - 1)
    bonus_points: int | None = None  # a fixed extra per earn

    def __post_init__(self) -> None:
        assert self.starts_at.tzinfo is not None and self.ends_at.tzinfo is not None
        assert self.starts_at < self.ends_at
        assert self.funded_by in (FUNDED_BY_PARTNER, FUNDED_BY_COALITION)
        assert (self.multiplier is None) != (self.bonus_points is None), "one kind of reward"
        assert self.multiplier is None or self.multiplier > 1
        assert self.bonus_points is None or self.bonus_points > 0
        assert self.member_day is None or 1 <= self.member_day <= 31
        ZoneInfo(self.time_zone)  # fails loudly on an unknown zone

    @property
    def rule_id(self) -> str:
        return f"promotion:{self.promotion_id}"


@dataclass(frozen=True)
class EarnFacts:
    """What promotions may look at about one earn."""

    partner_id: str
    occurred_at: datetime
    tier_id: str
    birthday: date | None
    base_points: int


@dataclass(frozen=True)
class Bonus:
    rule_id: str
    points: int
    funded_by: str


def applies(promotion: Promotion, facts: EarnFacts) -> bool:
    local = facts.occurred_at.astimezone(ZoneInfo(promotion.time_zone))
    return (
        promotion.starts_at <= facts.occurred_at < promotion.ends_at
        and (promotion.partner_ids is None or facts.partner_id in promotion.partner_ids)
        and (promotion.tier_ids is None or facts.tier_id in promotion.tier_ids)
        and (promotion.member_day is None or local.day == promotion.member_day)
        and (
            not promotion.birthday_month
            or (facts.birthday is not None and facts.birthday.month == local.month)
        )
    )


def promotion_bonus_points(promotion: Promotion, base_points: int) -> int:
    if promotion.bonus_points is not None:
        return promotion.bonus_points
    assert promotion.multiplier is not None
    return math.floor(base_points * (Fraction(promotion.multiplier) - 1))


def bonuses_for_earn(
    tier: Tier, promotions: tuple[Promotion, ...], facts: EarnFacts
) -> tuple[Bonus, ...]:
    """Every extra of this earn, tier first then promotions by id; rules giving 0 are left out.

    The tier bonus is the programme's: the coalition funds it.
    """
    tier_points = tier_bonus_points(facts.base_points, tier)
    bonuses = [Bonus(f"tier:{tier.tier_id}", tier_points, FUNDED_BY_COALITION)]
    for promotion in sorted(promotions, key=lambda p: p.promotion_id):
        if applies(promotion, facts):
            points = promotion_bonus_points(promotion, facts.base_points)
            bonuses.append(Bonus(promotion.rule_id, points, promotion.funded_by))
    return tuple(bonus for bonus in bonuses if bonus.points > 0)

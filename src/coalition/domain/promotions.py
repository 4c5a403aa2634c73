"""Promotion rules: which promotions apply to an earn and how many extra points each gives.

Pure rules, no I/O. Each rule's extra points are computed on the earn's base points and
rounded down on their own, so the recorded share of every rule is a whole number and the
total (base + every extra) is never rounded up. Multipliers add, they do not compound: two
"x2" promotions on 100 base points give 100 + 100 + 100.

What a promotion may look at about an earn is in `EarnFacts`; what depends on the ledger's
state (grants so far in the member's cap period, the budget left) is given to `bonuses_for_earn`
by the caller, read under the member's lock and the promotion budget's lock
(operations/promotions.py), so the rules stay pure and exact under concurrency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from coalition.domain.tiers import Tier, tier_bonus_points

FUNDED_BY_PARTNER = "partner"  # the partner the member earns with pays for the extra points
FUNDED_BY_COALITION = "coalition"  # the programme pays: posted to coalition:promotions

FIRST_PURCHASE_AT_PARTNER = "partner"  # the member's first earn at the earning partner
FIRST_PURCHASE_IN_COALITION = "coalition"  # the member's first earn anywhere
FIRST_PURCHASE_SCOPES = (FIRST_PURCHASE_AT_PARTNER, FIRST_PURCHASE_IN_COALITION)

# A cap counts a member's grants per period, in the promotion's time zone.
CAP_PERIODS = ("promotion", "year", "month", "week", "day")

STATE_ACTIVE = "active"
STATE_PAUSED = "paused"


@dataclass(frozen=True)
class Promotion:
    promotion_id: str
    starts_at: datetime  # inclusive
    ends_at: datetime  # exclusive
    funded_by: str
    time_zone: str  # in which days, weekdays, birthdays and cap periods are counted
    partner_ids: frozenset[str] | None = None  # None: every partner
    member_day: int | None = None  # day of the month (1-31) the promotion runs on
    weekdays: frozenset[int] | None = None  # ISO weekdays (1 Monday .. 7 Sunday); None: all
    birthday_month: bool = False  # only in the member's birthday month
    birthday_day: bool = False  # only on the member's birthday
    tier_ids: frozenset[str] | None = None  # None: every tier
    multiplier: Decimal | None = None  # extra = base * (multiplier - 1)
    bonus_points: int | None = None  # a fixed extra per earn
    spend_amount_minor_min: int | None = None  # with spend_currency: the least purchase
    spend_currency: str | None = None
    first_purchase: str | None = None  # one of FIRST_PURCHASE_SCOPES
    grants_per_member_max: int | None = None  # in each cap_period
    cap_period: str = "promotion"
    budget_points: int | None = None  # None: no budget
    # A budget in money at the funder's issuance price (with budget_currency, the funder's):
    # each grant spends ceil(points x the issuance price of the earn's rate version).
    budget_amount_minor: int | None = None  # None: no money budget
    budget_currency: str | None = None
    # A referral campaign instead of an earn bonus: what each side of a referral gets at the
    # referred member's first qualifying earn in the window (coalition-funded, hub-initiated).
    referral_referred_points: int | None = None
    referral_referrer_points: int | None = None
    owner_partner_id: str | None = None  # None: the coalition's own
    version: int = 1
    state: str = STATE_ACTIVE

    def __post_init__(self) -> None:
        assert self.starts_at.tzinfo is not None and self.ends_at.tzinfo is not None
        assert self.starts_at < self.ends_at
        assert self.funded_by in (FUNDED_BY_PARTNER, FUNDED_BY_COALITION)
        rewards = (self.multiplier, self.bonus_points, self.referral_referred_points)
        assert sum(reward is not None for reward in rewards) == 1, "one kind of reward"
        assert (self.referral_referred_points is None) == (self.referral_referrer_points is None)
        if self.is_referral_campaign:
            assert self.funded_by == FUNDED_BY_COALITION, "a referral bonus is hub-initiated"
            assert self.budget_points is None and self.grants_per_member_max is None
            assert self.budget_amount_minor is None
        assert self.multiplier is None or self.multiplier > 1
        assert self.bonus_points is None or self.bonus_points > 0
        assert self.member_day is None or 1 <= self.member_day <= 31
        assert self.weekdays is None or (self.weekdays and self.weekdays <= set(range(1, 8)))
        assert (self.spend_amount_minor_min is None) == (self.spend_currency is None)
        assert self.first_purchase is None or self.first_purchase in FIRST_PURCHASE_SCOPES
        assert self.grants_per_member_max is None or self.grants_per_member_max > 0
        assert self.cap_period in CAP_PERIODS
        assert self.budget_points is None or self.budget_points > 0
        assert (self.budget_amount_minor is None) == (self.budget_currency is None)
        assert self.budget_amount_minor is None or self.budget_amount_minor > 0
        if self.budget_amount_minor is not None:
            # The funder's money: a partner's own issuance price, at its one partner.
            assert self.funded_by == FUNDED_BY_PARTNER
            assert self.partner_ids is not None and len(self.partner_ids) == 1
        assert self.state in (STATE_ACTIVE, STATE_PAUSED)
        # A partner's own promotion is funded by it and runs only at it (its autonomy); the
        # coalition's runs anywhere but never bills a partner for its points.
        if self.owner_partner_id is not None:
            assert self.funded_by == FUNDED_BY_PARTNER
            assert self.partner_ids == frozenset({self.owner_partner_id})
        ZoneInfo(self.time_zone)  # fails loudly on an unknown zone

    @property
    def budgeted(self) -> bool:
        """It has a budget (in points, in money or both) that its grants spend."""
        return self.budget_points is not None or self.budget_amount_minor is not None

    @property
    def rule_id(self) -> str:
        return f"promotion:{self.promotion_id}"

    @property
    def is_referral_campaign(self) -> bool:
        return self.referral_referred_points is not None

    @property
    def needs_birthday(self) -> bool:
        return self.birthday_month or self.birthday_day

    def cap_period_of(self, occurred_at: datetime) -> str:
        """The cap period an earn at `occurred_at` counts in, as text ('' for the promotion's
        whole life): '2026', '2026-12', '2026-W49', '2026-12-02'."""
        local = occurred_at.astimezone(ZoneInfo(self.time_zone))
        if self.cap_period == "year":
            return f"{local.year:04d}"
        if self.cap_period == "month":
            return f"{local.year:04d}-{local.month:02d}"
        if self.cap_period == "week":
            iso = local.isocalendar()
            return f"{iso.year:04d}-W{iso.week:02d}"
        if self.cap_period == "day":
            return local.date().isoformat()
        return ""


@dataclass(frozen=True)
class EarnFacts:
    """What promotions may look at about one earn."""

    partner_id: str
    occurred_at: datetime
    tier_id: str
    birthday: date | None
    base_points: int
    spend_amount_minor: int | None = None  # None: an earn of native points
    spend_currency: str | None = None
    first_at_partner: bool = False  # the member has no earlier earn at this partner
    first_in_coalition: bool = False  # nor anywhere


@dataclass(frozen=True)
class Bonus:
    rule_id: str
    points: int
    funded_by: str


@dataclass(frozen=True)
class PromotionGrant:
    """What a bonus of a promotion uses up: one grant of its member cap, points (and money)
    of its budget."""

    promotion_id: str
    cap_period: str | None  # None: the promotion has no member cap
    points: int
    budgeted: bool
    amount_minor: int = 0  # of a money budget: ceil(points x issuance price)
    spends_budget_points: bool = False  # the promotion has a points budget

    @property
    def budget_points(self) -> int:
        """The points it spends of the points budget (none without one)."""
        return self.points if self.spends_budget_points else 0


def budget_amount_minor_of(points: int, issuance_price_minor_per_point: Decimal) -> int:
    """What `points` spend of a money budget: their issuance cost, rounded up, so that the
    money a budget has paid for never exceeds the budget."""
    assert points >= 0
    return math.ceil(points * Fraction(issuance_price_minor_per_point))


def points_within_amount_minor(amount_minor: int, issuance_price_minor_per_point: Decimal) -> int:
    """The most points whose cost (`budget_amount_minor_of`) fits in `amount_minor`."""
    assert issuance_price_minor_per_point > 0
    return math.floor(max(amount_minor, 0) / Fraction(issuance_price_minor_per_point))


def in_force(promotion: Promotion, partner_id: str, occurred_at: datetime) -> bool:
    return (
        promotion.state == STATE_ACTIVE
        and promotion.starts_at <= occurred_at < promotion.ends_at
        and (promotion.partner_ids is None or partner_id in promotion.partner_ids)
    )


def referral_campaign(
    promotions: tuple[Promotion, ...], partner_id: str, occurred_at: datetime
) -> Promotion | None:
    """The referral campaign in force for a first qualifying earn (the first by id when
    several overlap), or None."""
    campaigns = sorted(
        (p for p in promotions if p.is_referral_campaign and in_force(p, partner_id, occurred_at)),
        key=lambda p: p.promotion_id,
    )
    return campaigns[0] if campaigns else None


def applies(promotion: Promotion, facts: EarnFacts) -> bool:
    """Whether the promotion's earn bonus applies (a referral campaign gives none)."""
    local = facts.occurred_at.astimezone(ZoneInfo(promotion.time_zone))
    return (
        not promotion.is_referral_campaign
        and promotion.state == STATE_ACTIVE
        and promotion.starts_at <= facts.occurred_at < promotion.ends_at
        and (promotion.partner_ids is None or facts.partner_id in promotion.partner_ids)
        and (promotion.tier_ids is None or facts.tier_id in promotion.tier_ids)
        and (promotion.member_day is None or local.day == promotion.member_day)
        and (promotion.weekdays is None or local.isoweekday() in promotion.weekdays)
        and _birthday_matches(promotion, facts.birthday, local.date())
        and _spend_reaches(promotion, facts)
        and _first_purchase_matches(promotion, facts)
    )


def _birthday_matches(promotion: Promotion, birthday: date | None, local_day: date) -> bool:
    if not promotion.needs_birthday:
        return True
    if birthday is None:
        return False
    if promotion.birthday_day:
        # A member born on 29 February has the birthday on 28 February in common years.
        day = birthday.day
        if birthday.month == 2 and day == 29 and not _leap(local_day.year):
            day = 28
        return (birthday.month, day) == (local_day.month, local_day.day)
    return birthday.month == local_day.month


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _spend_reaches(promotion: Promotion, facts: EarnFacts) -> bool:
    if promotion.spend_amount_minor_min is None:
        return True
    return (
        facts.spend_currency == promotion.spend_currency
        and facts.spend_amount_minor is not None
        and facts.spend_amount_minor >= promotion.spend_amount_minor_min
    )


def _first_purchase_matches(promotion: Promotion, facts: EarnFacts) -> bool:
    if promotion.first_purchase == FIRST_PURCHASE_AT_PARTNER:
        return facts.first_at_partner
    if promotion.first_purchase == FIRST_PURCHASE_IN_COALITION:
        return facts.first_in_coalition
    return True


def promotion_bonus_points(promotion: Promotion, base_points: int) -> int:
    if promotion.bonus_points is not None:
        return promotion.bonus_points
    assert promotion.multiplier is not None
    return math.floor(base_points * (Fraction(promotion.multiplier) - 1))


def bonuses_for_earn(
    tier: Tier,
    promotions: tuple[Promotion, ...],
    facts: EarnFacts,
    grants_so_far: Mapping[str, int] | None = None,
    budget_left_points: Mapping[str, int] | None = None,
    budget_left_minor: Mapping[str, int] | None = None,
    issuance_price_minor_per_point: Decimal = Decimal(0),
) -> tuple[tuple[Bonus, ...], tuple[PromotionGrant, ...]]:
    """Every extra of this earn, tier first then promotions by id (rules giving 0 are left
    out), and what each promotion's bonus uses up.

    `grants_so_far`: by promotion id, the member's grants in the earn's cap period (promotions
    with a cap); `budget_left_points`: by promotion id, the points left of its budget
    (promotions with one); `budget_left_minor`: by promotion id, the money left of its money
    budget, spent at `issuance_price_minor_per_point` (the earn's rate version). A bonus never
    exceeds the budget left: the last grant of a budget is cut to what is left, so a budget is
    spent exactly and never overspent. The tier bonus is the programme's: the coalition funds
    it.
    """
    grants_so_far = grants_so_far or {}
    budget_left_points = budget_left_points or {}
    budget_left_minor = budget_left_minor or {}
    tier_points = tier_bonus_points(facts.base_points, tier)
    bonuses = [Bonus(f"tier:{tier.tier_id}", tier_points, FUNDED_BY_COALITION)]
    grants: list[PromotionGrant] = []
    for promotion in sorted(promotions, key=lambda p: p.promotion_id):
        if not applies(promotion, facts):
            continue
        capped = promotion.grants_per_member_max is not None
        if capped and grants_so_far.get(promotion.promotion_id, 0) >= (
            promotion.grants_per_member_max or 0
        ):
            continue
        points = promotion_bonus_points(promotion, facts.base_points)
        if promotion.budget_points is not None:
            points = min(points, budget_left_points.get(promotion.promotion_id, 0))
        amount_minor = 0
        if promotion.budget_amount_minor is not None:
            left_minor = budget_left_minor.get(promotion.promotion_id, 0)
            if issuance_price_minor_per_point > 0:  # points that cost nothing spend nothing
                points = min(
                    points, points_within_amount_minor(left_minor, issuance_price_minor_per_point)
                )
            amount_minor = budget_amount_minor_of(points, issuance_price_minor_per_point)
        if points <= 0:
            continue
        bonuses.append(Bonus(promotion.rule_id, points, promotion.funded_by))
        period = promotion.cap_period_of(facts.occurred_at) if capped else None
        grants.append(
            PromotionGrant(
                promotion.promotion_id,
                period,
                points,
                promotion.budgeted,
                amount_minor,
                spends_budget_points=promotion.budget_points is not None,
            )
        )
    return tuple(bonus for bonus in bonuses if bonus.points > 0), tuple(grants)

"""Tier multiplier and promotions at earn: the extra points, who funds them, and the record.

An earn of `base` points with extras posts, in its one journal transaction:

    member:<id>                 + (base + every extra)
    partner:<p>:issuance        - (base + extras funded by the partner)
    coalition:promotions        - (extras funded by the coalition, the tier bonus included)

so settlement, which bills a partner for what is posted to its issuance account, never bills
a coalition-funded extra to the partner. `earn_bonuses` records which rule gave how many
points. A reversal of the earn hands back the coalition's share of the reversed points to
coalition:promotions, so that the partner is only ever credited with what it paid for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction

from sqlalchemy import select

from coalition.domain.promotions import (
    FUNDED_BY_COALITION,
    Bonus,
    EarnFacts,
    bonuses_for_earn,
)
from coalition.ledger.accounts import member_account_id, partner_issuance_account_id
from coalition.ledger.funding import coalition_funded_points
from coalition.ledger.journal import Posting, TransactionRecord
from coalition.ledger.system_accounts import (
    COALITION_PROMOTIONS_ACCOUNT_ID,
    ensure_coalition_promotions_account,
)
from coalition.ledger.writer import Bonus as LedgerBonus
from coalition.programme import tiers
from coalition.programme.config import Programme
from coalition.store.schema import metadata
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class EarnAward:
    member_id: str
    partner_id: str
    base_points: int
    bonuses: tuple[Bonus, ...]

    @property
    def points_total(self) -> int:
        return self.base_points + sum(bonus.points for bonus in self.bonuses)

    @property
    def points_coalition_funded(self) -> int:
        return sum(b.points for b in self.bonuses if b.funded_by == FUNDED_BY_COALITION)

    def ledger_bonuses(self) -> tuple[LedgerBonus, ...]:
        """The bonuses as the earn's journal entry records them (None: coalition-funded)."""
        return tuple(
            LedgerBonus(
                bonus.rule_id,
                bonus.points,
                None if bonus.funded_by == FUNDED_BY_COALITION else self.partner_id,
            )
            for bonus in self.bonuses
        )

    def postings(self) -> tuple[Posting, ...]:
        coalition_points = self.points_coalition_funded
        partner_points = self.points_total - coalition_points
        postings = [
            Posting(member_account_id(self.member_id), self.points_total),
            Posting(partner_issuance_account_id(self.partner_id), -partner_points),
        ]
        if coalition_points:
            postings.append(Posting(COALITION_PROMOTIONS_ACCOUNT_ID, -coalition_points))
        return tuple(postings)


def award_for_earn(
    uow: UnitOfWork,
    programme: Programme,
    partner_id: str,
    member_id: str,
    occurred_at: datetime,
    base_points: int,
) -> EarnAward:
    """The earn's extras under the member's tier now and the promotions in force at
    `occurred_at` (the member lock is held, so the tier cannot change underneath)."""
    tier = tiers.current_tier(uow, member_id, programme.ladder).tier
    candidates = programme.promotions_for(partner_id)
    needs_birthday = any(promotion.birthday_month for promotion in candidates)
    facts = EarnFacts(
        partner_id=partner_id,
        occurred_at=occurred_at,
        tier_id=tier.tier_id,
        birthday=member_birthday(uow, member_id) if needs_birthday else None,
        base_points=base_points,
    )
    award = EarnAward(member_id, partner_id, base_points, bonuses_for_earn(tier, candidates, facts))
    if award.points_coalition_funded:
        ensure_coalition_promotions_account(uow)
    return award


def member_birthday(uow: UnitOfWork, member_id: str) -> date | None:
    """The member's birthday, from the identity profile (member_profiles, migration 0004 of
    the identity work). Without that table or column birthday promotions never apply."""
    profiles = metadata.tables.get("member_profiles")
    if profiles is None or "birthday" not in profiles.c:
        return None
    birthday = uow.connection.execute(
        select(profiles.c.birthday).where(profiles.c.member_id == member_id)
    ).scalar_one_or_none()
    return birthday if isinstance(birthday, date) else None


def coalition_share(
    points_total: int, points_coalition_funded: int, points_before: int, points_now: int
) -> int:
    """The coalition's part of points `points_before`..`points_now` of an earn, taken in
    order: cumulative and rounded down, so every partial step sums to the exact whole."""
    assert 0 <= points_before <= points_now <= points_total
    share = Fraction(points_coalition_funded, points_total)
    return math.floor(points_now * share) - math.floor(points_before * share)


def earn_reversal_postings(
    uow: UnitOfWork, parent: TransactionRecord, points_reversed: int
) -> tuple[Posting, ...]:
    """Counter postings of reversing `points_reversed` of earn `parent`: the partner's share
    back to its issuance account, the coalition's back to coalition:promotions."""
    assert parent.kind == "earn"
    coalition_points = coalition_share(
        parent.points_delta,
        coalition_funded_points(uow, parent.transaction_id),
        parent.points_reversed,
        parent.points_reversed + points_reversed,
    )
    postings = [
        Posting(partner_issuance_account_id(parent.partner_id), points_reversed - coalition_points)
    ]
    if coalition_points:
        postings.append(Posting(COALITION_PROMOTIONS_ACCOUNT_ID, coalition_points))
    return tuple(posting for posting in postings if posting.points != 0)


def upgrade_after_earn(
    uow: UnitOfWork,
    programme: Programme,
    award: EarnAward,
    record: TransactionRecord,
    now: datetime,
) -> None:
    """Upgrade the member's tier when the earn (already counted) reached a higher one."""
    assert record.points_delta == award.points_total, "the journal credited the award"
    tiers.upgrade_after_earn(
        uow, award.member_id, award.partner_id, record.transaction_id, programme.ladder, now
    )

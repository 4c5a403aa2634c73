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
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import select

from coalition.domain.hub_partner import HUB_PARTNER_ID
from coalition.domain.points import Money
from coalition.domain.promotions import (
    FUNDED_BY_COALITION,
    Bonus,
    EarnFacts,
    Promotion,
    PromotionGrant,
    applies,
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
from coalition.programme import promotion_catalogue as catalogue
from coalition.programme import tiers
from coalition.programme.config import Programme
from coalition.programme.promotion_catalogue import CATALOGUE
from coalition.store import driver
from coalition.store.driver import IN_BIGINT_LIST, IN_LIST, Statement
from coalition.store.schema import member_profiles
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class EarnAward:
    member_id: str
    partner_id: str
    base_points: int
    bonuses: tuple[Bonus, ...]
    grants: tuple[PromotionGrant, ...] = ()

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


def candidates(
    uow: UnitOfWork, programme: Programme, partner_id: str, now: datetime
) -> tuple[Promotion, ...]:
    """The promotions whose earn bonus may apply to an earn with this partner (referral
    campaigns give none: referrals/rewards.py pays them): from this process's
    catalogue (one primary-key read at most every few seconds), never a read per earn."""
    return tuple(
        promotion
        for promotion in CATALOGUE.promotions(uow, programme, now)
        if not promotion.is_referral_campaign
        and (promotion.partner_ids is None or partner_id in promotion.partner_ids)
    )


def lock_budgets(uow: UnitOfWork, promotions: tuple[Promotion, ...]) -> None:
    """Lock the budget rows of `promotions` in promotion id order, after the members' locks:
    a group of earns takes them once, up front, in one order, so two groups never wait on
    each other in a circle."""
    catalogue.lock_budgets(uow, (p.promotion_id for p in promotions if p.budgeted))


def award_for_earn(
    uow: UnitOfWork,
    programme: Programme,
    partner_id: str,
    member_id: str,
    occurred_at: datetime,
    base_points: int,
    spend: Money | None = None,
    now: datetime | None = None,
    *,
    issuance_price_minor_per_point: Decimal,
) -> EarnAward:
    """The earn's extras under the member's tier now and the promotions in force at
    `occurred_at`, within each promotion's member cap and budget (the member lock is held, so
    the tier, the first purchase and the caps cannot change underneath; the budgets are
    locked by `lock_budgets`; a money budget spends at `issuance_price_minor_per_point`, the
    earn's rate version's)."""
    tier = tiers.current_tier(uow, member_id, programme.ladder).tier
    promotions = candidates(uow, programme, partner_id, now or occurred_at)
    first_at_partner, first_in_coalition = (
        first_purchases(uow, member_id, partner_id)
        if any(promotion.first_purchase for promotion in promotions)
        else (False, False)
    )
    facts = EarnFacts(
        partner_id=partner_id,
        occurred_at=occurred_at,
        tier_id=tier.tier_id,
        birthday=(
            member_birthday(uow, member_id)
            if any(promotion.needs_birthday for promotion in promotions)
            else None
        ),
        base_points=base_points,
        spend_amount_minor=spend.amount_minor if spend else None,
        spend_currency=spend.currency if spend else None,
        first_at_partner=first_at_partner,
        first_in_coalition=first_in_coalition,
    )
    matching = tuple(promotion for promotion in promotions if applies(promotion, facts))
    capped = [p for p in matching if p.grants_per_member_max is not None]
    grants = catalogue.grants_of_member(uow, member_id, (p.promotion_id for p in capped))
    grants_so_far = {
        p.promotion_id: grants.get((p.promotion_id, p.cap_period_of(occurred_at)), 0)
        for p in capped
    }
    budget_left = catalogue.lock_budgets(uow, (p.promotion_id for p in matching if p.budgeted))
    bonuses, promotion_grants = bonuses_for_earn(
        tier,
        matching,
        facts,
        grants_so_far,
        {key: left.points for key, left in budget_left.items() if left.points is not None},
        {
            key: left.amount_minor
            for key, left in budget_left.items()
            if left.amount_minor is not None
        },
        issuance_price_minor_per_point,
    )
    award = EarnAward(member_id, partner_id, base_points, bonuses, promotion_grants)
    if award.points_coalition_funded:
        ensure_coalition_promotions_account(uow)
    return award


FIRST_PURCHASES = Statement(
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM journal_transactions WHERE member_id = %s"
    " AND kind = 'earn' AND partner_id = %s LIMIT 1) AS here),"
    " (SELECT count(*) FROM (SELECT 1 FROM journal_transactions WHERE member_id = %s"
    " AND kind = 'earn' AND partner_id <> %s LIMIT 1) AS anywhere)"
)


def first_purchases(uow: UnitOfWork, member_id: str, partner_id: str) -> tuple[bool, bool]:
    """Whether an earn now is the member's first at this partner, and first anywhere in the
    coalition (hub-initiated referral bonuses are no purchase)."""
    here, anywhere = driver.execute(
        uow, FIRST_PURCHASES, (member_id, partner_id, member_id, HUB_PARTNER_ID)
    ).fetchone()
    return here == 0, anywhere == 0


def member_birthday(uow: UnitOfWork, member_id: str) -> date | None:
    """The member's birthday, from the identity profile (None: no profile, or none given)."""
    birthday: date | None = uow.connection.execute(
        select(member_profiles.c.birthday).where(member_profiles.c.member_id == member_id)
    ).scalar_one_or_none()
    return birthday


def part_reversed(points_total: int, part: int, points_before: int, points_now: int) -> int:
    """The share of `part` (of an earn of `points_total`) that reversing its points
    `points_before`..`points_now` takes back: cumulative and rounded down, so every partial
    step sums to the exact whole, and a reversal in full takes back all of it."""
    assert 0 <= points_before <= points_now <= points_total
    share = Fraction(part, points_total)
    return math.floor(points_now * share) - math.floor(points_before * share)


def coalition_share(
    points_total: int, points_coalition_funded: int, points_before: int, points_now: int
) -> int:
    """The coalition's part of points `points_before`..`points_now` of an earn, taken in
    order (`part_reversed`)."""
    return part_reversed(points_total, points_coalition_funded, points_before, points_now)


def give_back_grants(uow: UnitOfWork, parent: TransactionRecord, points_reversed: int) -> None:
    """Reversing `points_reversed` of earn `parent` gives back, of each promotion grant the
    earn received, the same share of what the grant used (`part_reversed` of its points
    budget spend, its money budget spend, and its bonus points on the member's cap row), and
    the cap grant itself when the earn is reversed in full (docs/promotions.md,
    "Reversals"). Under the member's lock, which every reversal of the earn holds."""
    assert parent.kind == "earn"
    grants = catalogue.earn_grants(uow, parent.member_id, parent.transaction_id)
    if not grants:
        return
    before, now = parent.points_reversed, parent.points_reversed + points_reversed
    total = parent.points_delta
    catalogue.give_back(
        uow,
        parent.member_id,
        [
            catalogue.GiveBack(
                grant,
                points=part_reversed(total, grant.points, before, now),
                budget_points=part_reversed(total, grant.budget_points, before, now),
                budget_amount_minor=part_reversed(total, grant.budget_amount_minor, before, now),
                cap_grant=now == total,
            )
            for grant in grants
        ],
    )


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


def after_earn(
    uow: UnitOfWork,
    programme: Programme,
    award: EarnAward,
    record: TransactionRecord,
    now: datetime,
) -> None:
    """Count the promotions' grants (caps, budgets) and upgrade the member's tier when the
    earn (already counted) reached a higher one."""
    assert record.points_delta == award.points_total, "the journal credited the award"
    catalogue.record_grants(uow, award.member_id, record.transaction_id, award.grants)
    tiers.upgrade_after_earn(
        uow, award.member_id, award.partner_id, record.transaction_id, programme.ladder, now
    )


@dataclass(frozen=True)
class EarnExplanation:
    """What an earn credited, as its answer tells it: the base, every bonus (the referral
    bonus it paid the member included), the tier change, the balance after all of it."""

    base_points: int
    bonuses: tuple[LedgerBonus, ...]  # funding partner None: the coalition's
    tier_change: tuple[str, str] | None  # (before, after)
    balance_points_after: int


def plain_explanation(record: TransactionRecord) -> EarnExplanation:
    """An earn the programme added nothing to (no bonus, no tier change, no referral)."""
    return EarnExplanation(record.points_delta, (), None, record.balance_points_after)


# Read only for earns the programme may have added to (and replays): three statements per
# group, each by transaction ids of the group's members.
EXPLAINED_BONUSES = Statement(
    "SELECT transaction_id, rule_id, points, funding_partner_id FROM earn_bonuses"
    f" WHERE member_id {IN_LIST} %s AND transaction_id {IN_BIGINT_LIST} %s"
    " ORDER BY transaction_id, rule_id"
)
EXPLAINED_TIER_CHANGES = Statement(
    "SELECT transaction_id, tier_id_before, tier_id_after FROM tier_changes"
    f" WHERE member_id {IN_LIST} %s AND transaction_id {IN_BIGINT_LIST} %s"
)
EXPLAINED_REFERRALS = Statement(
    "SELECT r.qualifying_transaction_id, r.bonus_points, j.balance_points_after"
    " FROM referrals r JOIN journal_transactions j"
    " ON j.member_id = r.referred_member_id AND j.transaction_id = r.referred_transaction_id"
    f" WHERE r.referred_member_id {IN_LIST} %s AND r.qualifying_transaction_id {IN_BIGINT_LIST} %s"
)
REFERRED_RULE_ID = "referral:referred"


def explanations(uow: UnitOfWork, records: list[TransactionRecord]) -> dict[int, EarnExplanation]:
    """The explanation of each earn of `records`, from what the ledger recorded for it."""
    if not records:
        return {}
    member_ids = sorted({record.member_id for record in records})
    ids = sorted(record.transaction_id for record in records)
    bonuses: dict[int, list[LedgerBonus]] = {}
    for transaction_id, rule_id, points, funder in driver.execute(
        uow, EXPLAINED_BONUSES, (member_ids, ids)
    ).fetchall():
        bonuses.setdefault(int(transaction_id), []).append(
            LedgerBonus(rule_id, int(points), funder)
        )
    changes = {
        int(transaction_id): (before, after)
        for transaction_id, before, after in driver.execute(
            uow, EXPLAINED_TIER_CHANGES, (member_ids, ids)
        ).fetchall()
    }
    referrals = {
        int(transaction_id): (int(points), int(balance))
        for transaction_id, points, balance in driver.execute(
            uow, EXPLAINED_REFERRALS, (member_ids, ids)
        ).fetchall()
    }
    explained = {}
    for record in records:
        own = tuple(bonuses.get(record.transaction_id, ()))
        balance = record.balance_points_after
        referral = referrals.get(record.transaction_id)
        if referral is not None:
            own += (LedgerBonus(REFERRED_RULE_ID, referral[0], None),)
            balance = referral[1]
        explained[record.transaction_id] = EarnExplanation(
            base_points=record.points_delta
            - sum(b.points for b in own if b.rule_id != REFERRED_RULE_ID),
            bonuses=own,
            tier_change=changes.get(record.transaction_id),
            balance_points_after=balance,
        )
    return explained

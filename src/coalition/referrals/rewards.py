"""The dual referral reward, paid when a referred member's first qualifying earn posts.

On the earn path this costs one primary-key lookup (`referrals` by referred member, pending
only). When a referral is pending and the earn qualifies, both members get the bonus of the
referral campaign in force (a promotion with referral rewards: window, partners, each side's
points; `referral_reward`), or without any campaign the programme's referral defaults
(COALITION_REFERRAL_BONUS_POINTS, read at start: settings.py), in two journal transactions
of kind `earn` (one per member), each

    member:<id>              + bonus
    coalition:promotions     - bonus

A bonus is a **hub-initiated** transaction (domain/hub_partner.py): recorded under the hub's
pseudo-partner with the request id `hub/referral/<referred member>/<role>`, so it is in no
partner's idempotency namespace, transaction list, event stream (the referrer may be no
customer of the earning partner), reconciliation or statement, and no partner can reverse
it. Its lot is issued under the earning partner (where the points were earned, for the
issuer reports) with an `earn_bonuses` row with no funding partner (`referral:referred` /
`referral:referrer`), so its breakage is the coalition's (ledger/expiry.py).

Locks: the referred member is locked by the earn; the referrer is locked here. Referral edges
only point from a member to its referrer and loops are refused, so locks are always taken up
the chain and two earns can never wait on each other in a circle.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import update

from coalition.domain import points as rules
from coalition.domain.hub_partner import hub_request_id
from coalition.domain.promotions import referral_campaign
from coalition.ledger import journal
from coalition.ledger.accounts import member_account_id
from coalition.ledger.journal import JournalEntry, Posting, TransactionRecord
from coalition.ledger.system_accounts import (
    COALITION_PROMOTIONS_ACCOUNT_ID,
    ensure_coalition_promotions_account,
    ensure_hub_partner,
)
from coalition.ledger.writer import Bonus, NewLot
from coalition.partners.catalog import partner_terms
from coalition.programme.config import Programme
from coalition.programme.promotion_catalogue import CATALOGUE
from coalition.store import driver
from coalition.store.driver import IN_LIST, Statement
from coalition.store.schema import referrals
from coalition.store.unit_of_work import UnitOfWork


def referral_reward(
    uow: UnitOfWork, programme: Programme, earn: TransactionRecord, now: datetime
) -> tuple[int, int, str | None] | None:
    """(referred's points, referrer's points, campaign id) for a first qualifying earn: the
    referral campaign in force at the earn's partner and occurred_at (promotions as data,
    docs/promotions.md); without any referral campaign, the programme's default for both
    sides (campaign None); None when nothing is paid (no campaign in force, or 0)."""
    promotions = CATALOGUE.promotions(uow, programme, now)
    campaign = referral_campaign(promotions, earn.partner_id, earn.occurred_at)
    if campaign is not None:
        assert campaign.referral_referred_points and campaign.referral_referrer_points
        return (
            campaign.referral_referred_points,
            campaign.referral_referrer_points,
            campaign.promotion_id,
        )
    if any(promotion.is_referral_campaign for promotion in promotions):
        return None  # campaigns run the programme's referrals, and none is in force now
    points = programme.referral.bonus_points
    return None if points == 0 else (points, points, None)


def pending_referrers(uow: UnitOfWork, member_ids: Iterable[str]) -> dict[str, str]:
    """Referred member -> referrer, for those of `member_ids` whose reward is still unpaid:
    the members a batch of earns may also lock and credit (one statement per batch)."""
    referred = sorted(set(member_ids))
    if not referred:
        return {}
    return dict(driver.execute(uow, PENDING_REFERRERS, (referred,)).fetchall())


# On every earn's path: statements built once, on the driver (store/driver.py).
# Those of the members neither merged nor forgotten, each with its referrer when its reward is
# still unpaid (`extra`): a group of earns reads both in its first statement
# (operations/batch_earn.py; on Citus the join stays on each member's shard: referrals are
# co-located with members).
USABLE_MEMBERS_AND_PENDING_REFERRERS = (
    "SELECT m.member_id AS member_id, r.referrer_member_id AS extra FROM members AS m"
    " LEFT JOIN referrals AS r"
    " ON r.referred_member_id = m.member_id AND r.reward_time IS NULL"
    f" WHERE m.member_id {IN_LIST} %s"
    " AND m.merged_into_member_id IS NULL AND m.forget_time IS NULL"
)
PENDING_REFERRERS = Statement(
    "SELECT referred_member_id, referrer_member_id FROM referrals"
    f" WHERE referred_member_id {IN_LIST} %s AND reward_time IS NULL"
)
PENDING_REFERRER = Statement(
    "SELECT referrer_member_id FROM referrals WHERE referred_member_id = %s AND reward_time IS NULL"
)


def reward_after_earn(
    uow: UnitOfWork, programme: Programme, earn: TransactionRecord, now: datetime
) -> None:
    """Pay the referral reward if `earn` is the referred member's first qualifying earn."""
    row = driver.execute(uow, PENDING_REFERRER, (earn.member_id,)).fetchone()
    referrer_member_id = None if row is None else row[0]
    if referrer_member_id is None or earn.points_delta < programme.referral.qualifying_points_min:
        return
    reward = referral_reward(uow, programme, earn, now)
    if reward is None:
        return
    referred_points, referrer_points, campaign_id = reward
    ensure_coalition_promotions_account(uow)
    referred = _credit(uow, earn, earn.member_id, "referred", referred_points, now)
    journal.lock_member_balance(uow, str(referrer_member_id))
    referrer = _credit(uow, earn, str(referrer_member_id), "referrer", referrer_points, now)
    claimed = uow.connection.execute(
        update(referrals)
        .where(referrals.c.referred_member_id == earn.member_id, referrals.c.reward_time.is_(None))
        .values(
            reward_time=now,
            qualifying_transaction_id=earn.transaction_id,
            referred_transaction_id=referred.transaction_id,
            referrer_transaction_id=referrer.transaction_id,
            bonus_points=referred_points,
            referrer_bonus_points=referrer_points,
            promotion_id=campaign_id,
        )
    )
    assert claimed.rowcount == 1, "the referral is paid once (the member lock is held)"


def _credit(
    uow: UnitOfWork,
    earn: TransactionRecord,
    member_id: str,
    role: str,
    bonus_points: int,
    now: datetime,
) -> TransactionRecord:
    validity_months = partner_terms(uow, earn.partner_id).partner.points_validity_months
    entry = JournalEntry(
        kind="earn",
        partner_id=ensure_hub_partner(uow, now),
        member_id=member_id,
        request_id=hub_request_id("referral", earn.member_id, role),
        occurred_at=earn.occurred_at,
        postings=(
            Posting(member_account_id(member_id), bonus_points),
            Posting(COALITION_PROMOTIONS_ACCOUNT_ID, -bonus_points),
        ),
        reason=f"referral bonus ({role}), coalition-funded",
        lot=NewLot(
            earn.partner_id, bonus_points, rules.lot_expiry(earn.occurred_at, validity_months)
        ),
        bonuses=(Bonus(f"referral:{role}", bonus_points, None),),
    )
    return journal.post(uow, entry, now)

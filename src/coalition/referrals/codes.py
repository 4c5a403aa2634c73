"""Referral codes and the referral recorded at enrolment. No ledger imports: identity uses it.

Refusals: a member cannot use its own code (SELF_REFERRAL) nor the code of a member it
referred, directly or through others (REFERRAL_LOOP); an unknown code is REFERRAL_CODE_NOT_FOUND.
A referral is recorded only for a member the enrolment created: an existing member found by
customer id or identifier is not a new member, and keeps whatever referral it had.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import insert, select

from coalition.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from coalition.store.schema import referral_codes, referrals
from coalition.store.unit_of_work import UnitOfWork

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read aloud
CODE_LENGTH = 10
REFERRAL_CHAIN_MAX = 10_000  # a bound on walking up the referrers (loops are refused anyway)


def normalise_code(code: str) -> str:
    return code.strip().upper()


def referral_code_of(uow: UnitOfWork, member_id: str, now: datetime) -> str:
    """The member's referral code, created on first request."""
    existing = _code_of(uow, member_id)
    if existing is not None:
        return existing
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    uow.connection.execute(
        insert(referral_codes).values(member_id=member_id, referral_code=code, create_time=now)
    )
    return code


def _code_of(uow: UnitOfWork, member_id: str) -> str | None:
    return uow.connection.execute(
        select(referral_codes.c.referral_code).where(referral_codes.c.member_id == member_id)
    ).scalar_one_or_none()


def referrer_of_code(uow: UnitOfWork, code: str) -> str:
    referrer_member_id = uow.connection.execute(
        select(referral_codes.c.member_id).where(
            referral_codes.c.referral_code == normalise_code(code)
        )
    ).scalar_one_or_none()
    if referrer_member_id is None:
        raise InvalidArgument(
            [FieldViolation("referral_code", "no member has this referral code")],
            reason="REFERRAL_CODE_NOT_FOUND",
        )
    return str(referrer_member_id)


def record_referral(
    uow: UnitOfWork, member_id: str, created: bool, code: str, now: datetime
) -> str | None:
    """Record that `member_id` was referred by the owner of `code`; the referrer's id, or None
    when the member was not new (nothing recorded)."""
    referrer_member_id = referrer_of_code(uow, code)
    if referrer_member_id == member_id:
        raise FailedPrecondition(
            "SELF_REFERRAL",
            f"member {member_id} cannot use its own referral code",
            {"member_id": member_id},
        )
    if _referred_by_chain(uow, referrer_member_id, member_id):
        raise FailedPrecondition(
            "REFERRAL_LOOP",
            f"member {referrer_member_id} was referred through member {member_id}",
            {"member_id": member_id, "referrer_member_id": referrer_member_id},
        )
    if not created:
        return None
    uow.connection.execute(
        insert(referrals).values(
            referred_member_id=member_id,
            referrer_member_id=referrer_member_id,
            referral_code=normalise_code(code),
            create_time=now,
        )
    )
    return referrer_member_id


def _referred_by_chain(uow: UnitOfWork, start_member_id: str, ancestor_member_id: str) -> bool:
    """Whether `ancestor_member_id` is among the referrers of `start_member_id`, up the chain."""
    current = start_member_id
    for _ in range(REFERRAL_CHAIN_MAX):
        referrer = uow.connection.execute(
            select(referrals.c.referrer_member_id).where(referrals.c.referred_member_id == current)
        ).scalar_one_or_none()
        if referrer is None:
            return False
        if referrer == ancestor_member_id:
            return True
        current = str(referrer)
    raise AssertionError("referral chain longer than REFERRAL_CHAIN_MAX: the graph has a loop")

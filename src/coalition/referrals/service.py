"""Referral service functions called by the gRPC layer."""

from __future__ import annotations

from datetime import datetime

from coalition.identity.members import MemberReference, resolve
from coalition.referrals.codes import referral_code_of
from coalition.store.unit_of_work import UnitOfWork


def get_referral_code(
    uow: UnitOfWork, partner_id: str, member: MemberReference, now: datetime
) -> tuple[str, str]:
    """(member id, its referral code), the code created on first request."""
    with uow:
        member_id = resolve(uow, partner_id, member)
        code = referral_code_of(uow, member_id, now)
        uow.commit()
        return member_id, code

"""The shared member profile, filtered by consent, with every read logged.

A reader (a partner's POS or a merchant's CRM) sees only the scopes the member granted to the
reader's partner. The response also names every withheld scope and why, so a merchant can
tell "not shared" from "empty". The read and what it returned are logged in the same database
transaction as the read itself: no profile leaves the hub unlogged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import insert, select

from coalition.domain.tiers import TierLadder
from coalition.identity import privacy
from coalition.identity.members import MemberReference, get_member
from coalition.identity.privacy import BALANCE, BASIC, BIRTHDAY, PREFERENCES, TIER, Withholding
from coalition.ledger.availability import available_points
from coalition.programme.tiers import current_tier
from coalition.store.schema import member_profiles, profile_reads
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Reader:
    """Who reads: the API key, its role, and the partner it belongs to."""

    partner_id: str
    key_id: str
    role: str


@dataclass(frozen=True)
class SharedProfile:
    member_id: str
    granted_scopes: tuple[str, ...]
    withheld_scopes: tuple[tuple[str, Withholding], ...]
    display_name: str | None = None
    create_time: datetime | None = None
    balance_points: int | None = None
    tier_id: str | None = None
    preferences: tuple[tuple[str, str], ...] | None = None
    birthday: date | None = None
    birthday_shared: bool = False


def read_profile(
    uow: UnitOfWork, reader: Reader, reference: MemberReference, ladder: TierLadder, now: datetime
) -> SharedProfile:
    """The member's profile as the reader's partner may see it, its tier on `ladder` (the
    programme's); refused (MEMBER_NOT_LINKED) for a member not linked to that partner
    (identity/privacy.py)."""
    with uow:
        sight = privacy.require(uow, reader.partner_id, reference, scope=None)
        member_id, granted, withheld = sight.member_id, sight.granted_scopes, sight.withheld_scopes
        profile = _profile(uow, member_id, granted, withheld, ladder, now)
        uow.connection.execute(
            insert(profile_reads).values(
                member_id=member_id,
                partner_id=reader.partner_id,
                key_id=reader.key_id,
                role=reader.role,
                scopes_returned=",".join(granted),
                scopes_withheld=",".join(scope for scope, _ in withheld),
                read_time=now,
            )
        )
        uow.commit()
        return profile


def _profile(
    uow: UnitOfWork,
    member_id: str,
    granted: tuple[str, ...],
    withheld: tuple[tuple[str, Withholding], ...],
    ladder: TierLadder,
    now: datetime,
) -> SharedProfile:
    # Each field is read only when its scope is granted: what is not shared is never loaded.
    member = get_member(uow, member_id) if BASIC in granted else None
    stored = (
        uow.connection.execute(
            select(member_profiles.c.birthday, member_profiles.c.preferences).where(
                member_profiles.c.member_id == member_id
            )
        ).one_or_none()
        if PREFERENCES in granted or BIRTHDAY in granted
        else None
    )
    preferences_text = stored.preferences if stored is not None else None
    return SharedProfile(
        member_id=member_id,
        granted_scopes=granted,
        withheld_scopes=withheld,
        display_name=member.display_name if member else None,
        create_time=member.create_time if member else None,
        balance_points=available_points(uow, member_id, now).spendable_points
        if BALANCE in granted
        else None,
        tier_id=current_tier(uow, member_id, ladder).tier.tier_id if TIER in granted else None,
        preferences=(
            tuple(sorted(json.loads(preferences_text).items()) if preferences_text else ())
            if PREFERENCES in granted
            else None
        ),
        birthday=stored.birthday if stored is not None and BIRTHDAY in granted else None,
        birthday_shared=BIRTHDAY in granted,
    )

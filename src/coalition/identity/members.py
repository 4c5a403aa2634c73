"""Members, partner links and contact identifiers: one member identity behind every partner's
customer ids, found by coalition id, by a partner's customer id or by a keyed identifier.

A merged member resolves to its survivor; a forgotten member resolves to nothing
(MEMBER_FORGOTTEN), although reversals of its past transactions still reach its account.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from coalition.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from coalition.identity.identifiers import ContactIdentifier, IdentifierHasher
from coalition.ledger.accounts import MEMBER, member_account_id
from coalition.ledger.idempotency import KeyedRequest, apply_once, record_result
from coalition.referrals import codes as referral_service
from coalition.store import driver
from coalition.store.driver import Statement
from coalition.store.schema import (
    identifier_keys,
    member_accounts,
    member_identifiers,
    member_profiles,
    member_requests,
    members,
    partner_links,
)
from coalition.store.unit_of_work import UnitOfWork

# Merges repoint every earlier duplicate at the newest survivor, so a chain is one hop long;
# more hops than this means the data is corrupt.
MERGE_HOPS_MAX = 4
# A concurrent enrolment may claim the same customer id or identifier between our read and our
# insert; each retry sees what it committed, so two attempts always suffice.
ENROLMENT_ATTEMPTS_MAX = 3


@dataclass(frozen=True)
class MemberReference:
    """A member by coalition id, or by the calling partner's own customer id."""

    member_id: str | None = None
    partner_customer_id: str | None = None

    def __post_init__(self) -> None:
        assert (self.member_id is None) != (self.partner_customer_id is None)


@dataclass(frozen=True)
class Member:
    member_id: str
    display_name: str
    create_time: datetime


@dataclass(frozen=True)
class Enrolment:
    member: Member
    created: bool
    replayed: bool


@dataclass(frozen=True)
class EnrolmentDetails:
    """What an enrolment may carry beyond customer id and name. Identifiers are normalised."""

    identifiers: tuple[ContactIdentifier, ...] = ()
    birthday: date | None = None
    preferences: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Unlinking:
    member_id: str
    replayed: bool


def resolve(uow: UnitOfWork, partner_id: str, reference: MemberReference) -> str:
    """The member id behind a reference, or NOT_FOUND / MEMBER_NOT_FOUND (MEMBER_FORGOTTEN)."""
    # One read answers the common case: the member exists, is not merged and not forgotten.
    state = select(members.c.member_id, members.c.merged_into_member_id, members.c.forget_time)
    if reference.member_id is not None:
        state = state.where(members.c.member_id == reference.member_id)
    else:
        # A subquery, not a join: links and members are distributed by different columns on
        # Citus, which runs the link lookup on its shard first (docs/scaling.md).
        linked = select(partner_links.c.member_id).where(
            partner_links.c.partner_id == partner_id,
            partner_links.c.partner_customer_id == reference.partner_customer_id,
        )
        state = state.where(members.c.member_id == linked.scalar_subquery())
    row = uow.connection.execute(state).one_or_none()
    if row is None:
        described = (
            f"member {reference.member_id!r}"
            if reference.member_id is not None
            else f"partner customer {reference.partner_customer_id!r} of {partner_id!r}"
        )
        raise NotFound(
            "MEMBER_NOT_FOUND",
            f"{described} does not exist",
            {
                "member_id": reference.member_id,
                "partner_customer_id": reference.partner_customer_id,
                "partner_id": partner_id if reference.member_id is None else None,
            },
        )
    if row.merged_into_member_id is None and row.forget_time is None:
        return str(row.member_id)
    return usable_member_id(uow, row.member_id)


MERGED_INTO = Statement("SELECT merged_into_member_id FROM members WHERE member_id = %s")


def surviving_member_id(uow: UnitOfWork, member_id: str) -> str:
    """The member that now holds `member_id`'s points and links: itself unless merged."""
    current_member_id = member_id
    for _ in range(MERGE_HOPS_MAX):
        row = driver.execute(uow, MERGED_INTO, (current_member_id,)).fetchone()
        assert row is not None, f"member {current_member_id} exists"
        merged_into_member_id = row[0]
        if merged_into_member_id is None:
            return str(current_member_id)
        current_member_id = merged_into_member_id
    raise AssertionError(f"member {member_id} merges through more than {MERGE_HOPS_MAX} hops")


def usable_member_id(uow: UnitOfWork, member_id: str) -> str:
    """The surviving member, refused with MEMBER_FORGOTTEN when it was erased."""
    survivor_member_id = surviving_member_id(uow, member_id)
    forget_time = uow.connection.execute(
        select(members.c.forget_time).where(members.c.member_id == survivor_member_id)
    ).scalar_one()
    if forget_time is not None:
        raise NotFound(
            "MEMBER_FORGOTTEN",
            f"member {survivor_member_id} was forgotten at its request",
            {"member_id": survivor_member_id},
        )
    return survivor_member_id


def enroll(
    uow: UnitOfWork,
    partner_id: str,
    request_id: str,
    partner_customer_id: str,
    display_name: str,
    now: datetime,
    *,
    details: EnrolmentDetails | None = None,
    hasher: IdentifierHasher | None = None,
    referral_code: str | None = None,
) -> Enrolment:
    """Enrol a member for the caller's customer id, or return the member that the customer id
    or one of the identifiers already belongs to (and link the customer id to it). A new
    member enrolled with `referral_code` is recorded as referred (referrals/codes.py)."""
    details = details or EnrolmentDetails()
    assert hasher is not None or not details.identifiers, "identifiers need the hub's key"
    digests = _digests(hasher, details.identifiers)
    fingerprint = {
        "partner_customer_id": partner_customer_id,
        "display_name": display_name,
        **_details_fingerprint(details, digests),
        **({"referral_code": referral_code} if referral_code else {}),
    }
    request = KeyedRequest(partner_id, request_id, "enroll_member", fingerprint, now)

    def apply() -> Enrolment:
        if hasher is not None and digests:
            check_identifier_key(uow, hasher, now, register=True)
        member_id, created = _enrol_with_retries(
            uow, partner_id, partner_customer_id, display_name, details, digests, hasher, now
        )
        if referral_code:
            referral_service.record_referral(uow, member_id, created, referral_code, now)
        remember_request(uow, partner_id, request_id, member_id)
        outcome = "created" if created else "existing"
        record_result(uow, partner_id, request_id, f"{outcome}:{member_id}")
        uow.commit()
        return Enrolment(member=get_member(uow, member_id), created=created, replayed=False)

    def replay(result_id: str) -> Enrolment:
        # The result records whether the first answer created the member, so that a replay
        # repeats that answer exactly.
        outcome, _, member_id = result_id.partition(":")
        return Enrolment(
            member=get_member(uow, member_id), created=outcome == "created", replayed=True
        )

    return apply_once(uow, request, apply, replay)


def _enrol_with_retries(
    uow: UnitOfWork,
    partner_id: str,
    partner_customer_id: str,
    display_name: str,
    details: EnrolmentDetails,
    digests: tuple[tuple[str, str], ...],
    hasher: IdentifierHasher | None,
    now: datetime,
) -> tuple[str, bool]:
    for _ in range(ENROLMENT_ATTEMPTS_MAX):
        linked_member_id = _linked_member_id(uow, partner_id, partner_customer_id)
        if linked_member_id is not None:
            linked_member_id = usable_member_id(uow, linked_member_id)
        matched_member_id = _member_matching(uow, [digest for _, digest in digests])
        member_id = _chosen_member(linked_member_id, matched_member_id, partner_customer_id)
        try:
            # A savepoint, so that losing a race undoes only this attempt.
            with uow.connection.begin_nested():
                if member_id is None:
                    member_id = _create_member(uow, display_name, now).member_id
                if linked_member_id is None:
                    _insert_link(uow, partner_id, partner_customer_id, member_id, now)
                key_id = hasher.key_id if hasher is not None else ""
                _attach_identifiers(uow, member_id, digests, key_id, now)
                _fill_profile(uow, member_id, details, now)
            return member_id, linked_member_id is None and matched_member_id is None
        except IntegrityError:  # a concurrent enrolment committed first: decide again
            continue
    raise AssertionError("enrolment kept losing races; the unique keys are inconsistent")


def _chosen_member(
    linked_member_id: str | None, matched_member_id: str | None, partner_customer_id: str
) -> str | None:
    if linked_member_id and matched_member_id and linked_member_id != matched_member_id:
        raise FailedPrecondition(
            "IDENTIFIER_BELONGS_TO_OTHER_MEMBER",
            f"customer {partner_customer_id!r} is linked to member {linked_member_id}, but the "
            "identifiers given belong to another member; an administrator can merge the two",
            {"partner_customer_id": partner_customer_id, "member_id": linked_member_id},
        )
    return linked_member_id or matched_member_id


def link_partner_account(
    uow: UnitOfWork,
    partner_id: str,
    request_id: str,
    member_id: str,
    partner_customer_id: str,
    now: datetime,
) -> bool:
    """Link the caller's customer id to a member; returns whether this was a replay."""
    fingerprint = {"member_id": member_id, "partner_customer_id": partner_customer_id}
    request = KeyedRequest(partner_id, request_id, "link_partner_account", fingerprint, now)

    def apply() -> bool:
        target_member_id = resolve(uow, partner_id, MemberReference(member_id=member_id))
        linked_member_id = _linked_member_id(uow, partner_id, partner_customer_id)
        if linked_member_id is None:
            try:
                with uow.connection.begin_nested():
                    _insert_link(uow, partner_id, partner_customer_id, target_member_id, now)
                linked_member_id = target_member_id
            except IntegrityError:  # a concurrent request linked the customer id first
                linked_member_id = _linked_member_id(uow, partner_id, partner_customer_id)
        if linked_member_id != target_member_id:
            raise AlreadyExists(
                "PARTNER_CUSTOMER_ALREADY_LINKED",
                f"customer {partner_customer_id!r} is already linked to another member",
                {"partner_customer_id": partner_customer_id},
            )
        remember_request(uow, partner_id, request_id, target_member_id)
        record_result(uow, partner_id, request_id, target_member_id)
        uow.commit()
        return False

    return apply_once(uow, request, apply, lambda result_id: True)


def unlink_partner_account(
    uow: UnitOfWork, partner_id: str, request_id: str, partner_customer_id: str, now: datetime
) -> Unlinking:
    """Remove the link of the caller's customer id. The member keeps its points and other links."""
    fingerprint = {"partner_customer_id": partner_customer_id}
    request = KeyedRequest(partner_id, request_id, "unlink_partner_account", fingerprint, now)

    def apply() -> Unlinking:
        member_id = uow.connection.execute(
            delete(partner_links)
            .where(
                partner_links.c.partner_id == partner_id,
                partner_links.c.partner_customer_id == partner_customer_id,
            )
            .returning(partner_links.c.member_id)
        ).scalar_one_or_none()
        if member_id is None:
            raise NotFound(
                "PARTNER_CUSTOMER_NOT_LINKED",
                f"customer {partner_customer_id!r} of {partner_id!r} is linked to no member",
                {"partner_customer_id": partner_customer_id, "partner_id": partner_id},
            )
        remember_request(uow, partner_id, request_id, member_id)
        record_result(uow, partner_id, request_id, member_id)
        uow.commit()
        return Unlinking(member_id, replayed=False)

    return apply_once(uow, request, apply, lambda result_id: Unlinking(result_id, replayed=True))


def resolve_member(
    uow: UnitOfWork,
    partner_id: str,
    partner_customer_id: str | None = None,
    *,
    identifier: ContactIdentifier | None = None,
    hasher: IdentifierHasher | None = None,
) -> str:
    """The member behind the caller's customer id, or behind a contact identifier of a member
    linked to the caller: another partner's member is not found, exactly as when nobody has
    the identifier (docs/identity.md, "Privacy between partners"). A new brand finds an
    existing member by enrolling the customer, who is then present and linked."""
    with uow:
        if partner_customer_id is not None:
            reference = MemberReference(partner_customer_id=partner_customer_id)
            return resolve(uow, partner_id, reference)
        assert identifier is not None and hasher is not None
        check_identifier_key(uow, hasher, None, register=False)
        member_id = _member_matching(uow, [hasher.digest(identifier)])
        if member_id is None or not is_linked(uow, partner_id, member_id):
            kind = identifier.kind.value
            raise NotFound(
                "MEMBER_NOT_FOUND", f"no member has this {kind}", {"identifier_kind": kind}
            )
        return usable_member_id(uow, member_id)


def is_linked(uow: UnitOfWork, partner_id: str, member_id: str) -> bool:
    """Whether the partner has a customer id linked to the member (merges move links)."""
    return (
        uow.connection.execute(
            select(partner_links.c.partner_customer_id)
            .where(partner_links.c.member_id == member_id, partner_links.c.partner_id == partner_id)
            .limit(1)
        ).first()
        is not None
    )


def check_identifier_key(
    uow: UnitOfWork, hasher: IdentifierHasher, now: datetime | None, register: bool
) -> None:
    """Refuse to match identifiers under a secret other than the one they were stored with:
    every lookup would miss, and enrolment would quietly create duplicates."""
    key_ids = uow.connection.execute(select(identifier_keys.c.key_id).limit(2)).scalars().all()
    if not key_ids and register:
        assert now is not None
        insert_ignoring_conflict(
            uow, identifier_keys, {"key_id": hasher.key_id, "create_time": now}
        )
        return
    if key_ids and hasher.key_id not in key_ids:
        raise FailedPrecondition(
            "IDENTIFIER_KEY_MISMATCH",
            f"the hub's identity secret (key id {hasher.key_id}) is not the one the stored "
            "identifiers were keyed with; restore the original secret",
            {"key_id": hasher.key_id},
        )


def get_member(uow: UnitOfWork, member_id: str) -> Member:
    row = uow.connection.execute(
        select(members.c.member_id, members.c.display_name, members.c.create_time).where(
            members.c.member_id == member_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound(
            "MEMBER_NOT_FOUND", f"member {member_id!r} does not exist", {"member_id": member_id}
        )
    return Member(row.member_id, row.display_name, row.create_time)


def remember_request(uow: UnitOfWork, partner_id: str, request_id: str, member_id: str) -> None:
    """Note that this request's fingerprint holds the member's data, for erasure."""
    uow.connection.execute(
        insert(member_requests).values(
            partner_id=partner_id, request_id=request_id, member_id=member_id
        )
    )


def insert_ignoring_conflict(uow: UnitOfWork, table: Table, values: dict[str, Any]) -> None:
    insert_module = postgresql if uow.dialect_name == "postgresql" else sqlite
    uow.connection.execute(insert_module.insert(table).values(**values).on_conflict_do_nothing())


def preferences_text(preferences: Sequence[tuple[str, str]]) -> str | None:
    """Canonical JSON, so equal preferences are equal text."""
    return json.dumps(dict(preferences), sort_keys=True) if preferences else None


def _linked_member_id(uow: UnitOfWork, partner_id: str, partner_customer_id: str) -> str | None:
    return uow.connection.execute(
        select(partner_links.c.member_id).where(
            partner_links.c.partner_id == partner_id,
            partner_links.c.partner_customer_id == partner_customer_id,
        )
    ).scalar_one_or_none()


def _digests(
    hasher: IdentifierHasher | None, identifiers: Sequence[ContactIdentifier]
) -> tuple[tuple[str, str], ...]:
    if hasher is None:
        return ()
    return tuple(sorted((i.kind.value, hasher.digest(i)) for i in identifiers))


def _details_fingerprint(
    details: EnrolmentDetails, digests: tuple[tuple[str, str], ...]
) -> dict[str, str]:
    # Keyed digests, never the identifiers: the fingerprint is stored.
    fingerprint = {f"{kind}_hmac": digest for kind, digest in digests}
    if details.birthday is not None:
        fingerprint["birthday"] = details.birthday.isoformat()
    preferences = preferences_text(details.preferences)
    if preferences is not None:
        fingerprint["preferences"] = preferences
    return fingerprint


def _member_matching(uow: UnitOfWork, digests: Sequence[str]) -> str | None:
    """The one member the identifiers belong to, None if none; refused if several."""
    if not digests:
        return None
    rows = uow.connection.execute(
        select(member_identifiers.c.member_id).where(
            member_identifiers.c.identifier_hmac.in_(digests)
        )
    ).scalars()
    member_ids = {surviving_member_id(uow, member_id) for member_id in rows}
    if len(member_ids) > 1:
        raise FailedPrecondition(
            "IDENTIFIERS_MATCH_SEVERAL_MEMBERS",
            f"the identifiers given belong to {len(member_ids)} different members; an "
            "administrator can merge them",
            {"members_matched": len(member_ids)},
        )
    return next(iter(member_ids), None)


def _attach_identifiers(
    uow: UnitOfWork,
    member_id: str,
    digests: Sequence[tuple[str, str]],
    key_id: str,
    now: datetime,
) -> None:
    known = set(
        uow.connection.execute(
            select(member_identifiers.c.identifier_hmac).where(
                member_identifiers.c.member_id == member_id
            )
        ).scalars()
    )
    rows = [
        {
            "identifier_hmac": digest,
            "kind": kind,
            "member_id": member_id,
            "key_id": key_id,
            "create_time": now,
        }
        for kind, digest in digests
        if digest not in known
    ]
    if rows:
        uow.connection.execute(insert(member_identifiers), rows)


def _fill_profile(
    uow: UnitOfWork, member_id: str, details: EnrolmentDetails, now: datetime
) -> None:
    """Store birthday and preferences; an existing member's own values are never overwritten
    by what a later partner's enrolment says."""
    preferences = preferences_text(details.preferences)
    if details.birthday is None and preferences is None:
        return
    row = _profile_row(uow, member_id)
    if row is None:
        uow.connection.execute(
            insert(member_profiles).values(
                member_id=member_id,
                birthday=details.birthday,
                preferences=preferences,
                update_time=now,
            )
        )
        return
    blanks = {
        "birthday": details.birthday if row.birthday is None else row.birthday,
        "preferences": preferences if row.preferences is None else row.preferences,
    }
    if blanks != {"birthday": row.birthday, "preferences": row.preferences}:
        uow.connection.execute(
            update(member_profiles)
            .where(member_profiles.c.member_id == member_id)
            .values(update_time=now, **blanks)
        )


def _profile_row(uow: UnitOfWork, member_id: str) -> Row[Any] | None:
    return uow.connection.execute(
        select(member_profiles).where(member_profiles.c.member_id == member_id)
    ).one_or_none()


def _create_member(uow: UnitOfWork, display_name: str, now: datetime) -> Member:
    member = Member(f"mem_{uuid.uuid4().hex}", display_name, now)
    uow.connection.execute(insert(members).values(**member.__dict__))
    uow.connection.execute(
        insert(member_accounts).values(
            account_id=member_account_id(member.member_id),
            kind=MEMBER,
            member_id=member.member_id,
            balance_points=0,
        )
    )
    return member


def _insert_link(
    uow: UnitOfWork, partner_id: str, partner_customer_id: str, member_id: str, now: datetime
) -> None:
    uow.connection.execute(
        insert(partner_links).values(
            partner_id=partner_id,
            partner_customer_id=partner_customer_id,
            member_id=member_id,
            create_time=now,
        )
    )

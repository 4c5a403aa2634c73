"""Members and partner links: one member identity behind every partner's customer ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from coalition.domain.errors import AlreadyExists, NotFound
from coalition.ledger.accounts import MEMBER, member_account_id
from coalition.ledger.idempotency import claim_request, record_result
from coalition.ledger.journal import member_balance
from coalition.store.schema import accounts, members, partner_links
from coalition.store.unit_of_work import UnitOfWork


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
class MemberProfile:
    member: Member
    balance_points: int
    linked_partner_ids: tuple[str, ...]


def resolve(uow: UnitOfWork, partner_id: str, reference: MemberReference) -> str:
    """The member id behind a reference, or NOT_FOUND / MEMBER_NOT_FOUND."""
    if reference.member_id is not None:
        member_id = uow.connection.execute(
            select(members.c.member_id).where(members.c.member_id == reference.member_id)
        ).scalar_one_or_none()
    else:
        assert reference.partner_customer_id is not None
        member_id = _linked_member_id(uow, partner_id, reference.partner_customer_id)
    if member_id is None:
        described = (
            f"member {reference.member_id!r}"
            if reference.member_id is not None
            else f"partner customer {reference.partner_customer_id!r} of {partner_id!r}"
        )
        raise NotFound(
            "MEMBER_NOT_FOUND",
            f"{described} does not exist",
            {
                "member_id": reference.member_id or "",
                "partner_customer_id": reference.partner_customer_id or "",
            },
        )
    return str(member_id)


def enroll(
    uow: UnitOfWork,
    partner_id: str,
    request_id: str,
    partner_customer_id: str,
    display_name: str,
    now: datetime,
) -> Enrolment:
    """Enrol a member for the caller's customer id, or return the member already linked."""
    with uow:
        fingerprint = {"partner_customer_id": partner_customer_id, "display_name": display_name}
        claim = claim_request(uow, partner_id, request_id, "enroll_member", fingerprint, now)
        if not claim.is_new:
            member = _get_member(uow, str(claim.replayed_result_id))
            return Enrolment(member=member, created=False, replayed=True)
        linked_member_id = _linked_member_id(uow, partner_id, partner_customer_id)
        created = False
        if linked_member_id is None:
            try:
                # A savepoint, so that losing a race for the customer id undoes only this part.
                with uow.connection.begin_nested():
                    linked_member_id = _create_member(uow, display_name, now).member_id
                    _insert_link(uow, partner_id, partner_customer_id, linked_member_id, now)
                created = True
            except IntegrityError:  # a concurrent enrolment linked the customer id first
                linked_member_id = _linked_member_id(uow, partner_id, partner_customer_id)
                assert linked_member_id is not None
        member = _get_member(uow, linked_member_id)
        record_result(uow, partner_id, request_id, member.member_id)
        uow.commit()
        return Enrolment(member=member, created=created, replayed=False)


def link_partner_account(
    uow: UnitOfWork,
    partner_id: str,
    request_id: str,
    member_id: str,
    partner_customer_id: str,
    now: datetime,
) -> bool:
    """Link the caller's customer id to a member; returns whether this was a replay."""
    with uow:
        fingerprint = {"member_id": member_id, "partner_customer_id": partner_customer_id}
        claim = claim_request(uow, partner_id, request_id, "link_partner_account", fingerprint, now)
        if not claim.is_new:
            return True
        _get_member(uow, member_id)
        linked_member_id = _linked_member_id(uow, partner_id, partner_customer_id)
        if linked_member_id is None:
            try:
                with uow.connection.begin_nested():
                    _insert_link(uow, partner_id, partner_customer_id, member_id, now)
                linked_member_id = member_id
            except IntegrityError:  # a concurrent request linked the customer id first
                linked_member_id = _linked_member_id(uow, partner_id, partner_customer_id)
        if linked_member_id != member_id:
            raise AlreadyExists(
                "PARTNER_CUSTOMER_ALREADY_LINKED",
                f"customer {partner_customer_id!r} is already linked to another member",
                {"partner_customer_id": partner_customer_id},
            )
        record_result(uow, partner_id, request_id, member_id)
        uow.commit()
        return False


def resolve_member(uow: UnitOfWork, partner_id: str, partner_customer_id: str) -> str:
    with uow:
        return resolve(uow, partner_id, MemberReference(partner_customer_id=partner_customer_id))


def get_profile(uow: UnitOfWork, partner_id: str, reference: MemberReference) -> MemberProfile:
    with uow:
        member = _get_member(uow, resolve(uow, partner_id, reference))
        balance_points = member_balance(uow, member.member_id)
        linked_partner_ids = uow.connection.execute(
            select(partner_links.c.partner_id)
            .where(partner_links.c.member_id == member.member_id)
            .distinct()
            .order_by(partner_links.c.partner_id)
        ).scalars()
        return MemberProfile(member, int(balance_points), tuple(linked_partner_ids))


def _linked_member_id(uow: UnitOfWork, partner_id: str, partner_customer_id: str) -> str | None:
    return uow.connection.execute(
        select(partner_links.c.member_id).where(
            partner_links.c.partner_id == partner_id,
            partner_links.c.partner_customer_id == partner_customer_id,
        )
    ).scalar_one_or_none()


def _get_member(uow: UnitOfWork, member_id: str) -> Member:
    row = uow.connection.execute(
        select(members).where(members.c.member_id == member_id)
    ).one_or_none()
    if row is None:
        raise NotFound(
            "MEMBER_NOT_FOUND", f"member {member_id!r} does not exist", {"member_id": member_id}
        )
    return Member(row.member_id, row.display_name, row.create_time)


def _create_member(uow: UnitOfWork, display_name: str, now: datetime) -> Member:
    member = Member(f"mem_{uuid.uuid4().hex}", display_name, now)
    uow.connection.execute(insert(members).values(**member.__dict__))
    uow.connection.execute(
        insert(accounts).values(
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

"""Member rights: export everything the hub holds about a member; forget a member.

Forgetting erases the profile (name, birthday, preferences), the identifier hashes, the partner
links and the consents in force, and blanks the idempotency fingerprints of the requests that
carried them. What stays is the ledger under the member id, which points at nobody once
nothing else does: journal transactions, lots, the consent history and the profile-read log
(accountability records that hold no personal data). The remaining balance stays on the
pseudonymous account, where refunds of past purchases can still reach it and its lots expire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, Select, delete, insert, select, tuple_, update

from coalition.domain.errors import FailedPrecondition, NotFound
from coalition.identity import audit_claims
from coalition.identity.consent import Consent, consent_from_row
from coalition.identity.members import surviving_member_id
from coalition.ledger import journal
from coalition.ledger.idempotency import request_id_reused
from coalition.store.schema import (
    consent_events,
    idempotency_keys,
    journal_transactions,
    lots,
    member_audit_events,
    member_consents,
    member_identifiers,
    member_profiles,
    member_requests,
    members,
    partner_links,
    profile_reads,
)
from coalition.store.unit_of_work import UnitOfWork

# An export is one response; each history in it is capped so that it fits one message, and a
# capped history is named in `truncated_sections`.
EXPORT_ROWS_PER_SECTION_MAX = 10_000
# Erasing fingerprints goes through the member's requests in pages.
ERASE_PAGE_SIZE = 500
ERASED_FINGERPRINT = json.dumps({"erased": True})


@dataclass(frozen=True)
class ForgetResult:
    member_id: str
    forget_time: datetime
    identifiers_erased: int
    links_erased: int
    balance_points: int
    replayed: bool


@dataclass(frozen=True)
class ExportedMember:
    member_id: str
    display_name: str
    create_time: datetime
    forget_time: datetime | None


@dataclass(frozen=True)
class ExportedIdentifier:
    kind: str
    identifier_hmac: str
    create_time: datetime


@dataclass(frozen=True)
class ExportedLink:
    partner_id: str
    partner_customer_id: str
    create_time: datetime


@dataclass(frozen=True)
class ExportedProfileRead:
    member_id: str
    partner_id: str
    role: str
    scopes_returned: tuple[str, ...]
    scopes_withheld: tuple[str, ...]
    read_time: datetime


@dataclass(frozen=True)
class ExportedAuditEvent:
    kind: str
    member_id: str
    related_member_id: str | None
    transaction_id: int | None
    points: int | None
    principal_id: str
    create_time: datetime


@dataclass(frozen=True)
class ExportedLot:
    lot_id: int
    partner_id: str
    points: int
    remaining_points: int
    create_time: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class ExportedTransaction:
    transaction_id: int
    kind: str
    partner_id: str
    member_id: str
    points_delta: int
    occurred_at: datetime
    partner_reference: str | None


@dataclass(frozen=True)
class MemberExport:
    """Everything the hub holds about a member, as values (each history oldest first and
    capped at EXPORT_ROWS_PER_SECTION_MAX; a capped one is named in `truncated_sections`)."""

    member: ExportedMember
    merged_member_ids: tuple[str, ...]
    birthday: date | None
    preferences: tuple[tuple[str, str], ...]
    balance_points: int
    identifiers: tuple[ExportedIdentifier, ...] = ()
    links: tuple[ExportedLink, ...] = ()
    consents: tuple[Consent, ...] = ()
    consent_history: tuple[Consent, ...] = ()
    profile_reads: tuple[ExportedProfileRead, ...] = ()
    audit_events: tuple[ExportedAuditEvent, ...] = ()
    lots: tuple[ExportedLot, ...] = ()
    transactions: tuple[ExportedTransaction, ...] = ()
    truncated_sections: tuple[str, ...] = ()


def forget_member(
    uow: UnitOfWork, principal_id: str, request_id: str, member_id: str, now: datetime
) -> ForgetResult:
    with uow:
        row = _member_row(uow, member_id)
        first = audit_claims.claim(uow, "forget", principal_id, request_id, member_id, now)
        if first is not None:
            return _replay_of_request(first, request_id, member_id)
        if row.merged_into_member_id is not None:
            raise FailedPrecondition(
                "MEMBER_MERGED",
                f"member {member_id} was merged into member {row.merged_into_member_id}; "
                "forget that member",
                {"member_id": member_id, "survivor_member_id": row.merged_into_member_id},
            )
        balance_points = journal.lock_member_balance(uow, member_id)
        earlier = _earlier_forget(uow, member_id)
        if earlier is not None:  # forgotten under another request id: that answer, unclaimed
            return _forget_result(earlier)
        member_ids = (member_id, *_merged_member_ids(uow, member_id))
        identifiers_erased = _delete(uow, member_identifiers.c.member_id, member_ids)
        links_erased = _delete(uow, partner_links.c.member_id, member_ids)
        _delete(uow, member_profiles.c.member_id, member_ids)
        _delete(uow, member_consents.c.member_id, member_ids)
        _erase_fingerprints(uow, member_ids)
        uow.connection.execute(
            update(members)
            .where(members.c.member_id.in_(member_ids))
            .values(display_name="", forget_time=now)
        )
        detail = {"identifiers_erased": identifiers_erased, "links_erased": links_erased}
        audit_claims.complete(uow, principal_id, request_id, detail, points=balance_points)
        uow.commit()
        return ForgetResult(
            member_id, now, identifiers_erased, links_erased, balance_points, replayed=False
        )


def export_member_data(
    uow: UnitOfWork, principal_id: str, member_id: str, now: datetime
) -> MemberExport:
    """Everything about the member (a merged id exports its survivor), and an audit event."""
    with uow:
        _member_row(uow, member_id)
        survivor_member_id = surviving_member_id(uow, member_id)
        member = _member_row(uow, survivor_member_id)
        merged_member_ids = _merged_member_ids(uow, survivor_member_id)
        member_ids = (survivor_member_id, *merged_member_ids)
        sections: dict[str, tuple[Any, ...]] = {}
        truncated: list[str] = []
        for name, statement in _section_queries(member_ids).items():
            rows = uow.connection.execute(statement.limit(EXPORT_ROWS_PER_SECTION_MAX + 1)).all()
            if len(rows) > EXPORT_ROWS_PER_SECTION_MAX:
                truncated.append(name)
            of_row = SECTION_VALUES[name]
            sections[name] = tuple(of_row(row) for row in rows[:EXPORT_ROWS_PER_SECTION_MAX])
        profile = uow.connection.execute(
            select(member_profiles).where(member_profiles.c.member_id == survivor_member_id)
        ).one_or_none()
        balance_points = journal.member_balance(uow, survivor_member_id)
        _record_export(uow, survivor_member_id, principal_id, now)
        uow.commit()
    preferences = json.loads(profile.preferences) if profile and profile.preferences else {}
    return MemberExport(
        member=ExportedMember(
            member.member_id, member.display_name, member.create_time, member.forget_time
        ),
        merged_member_ids=merged_member_ids,
        birthday=profile.birthday if profile else None,
        preferences=tuple(sorted(preferences.items())),
        balance_points=balance_points,
        **sections,
        truncated_sections=tuple(truncated),
    )


def _section_queries(member_ids: tuple[str, ...]) -> dict[str, Select[Any]]:
    """Each history, oldest first."""
    return {
        "identifiers": select(member_identifiers)
        .where(member_identifiers.c.member_id.in_(member_ids))
        .order_by(member_identifiers.c.create_time, member_identifiers.c.identifier_hmac),
        "links": select(partner_links)
        .where(partner_links.c.member_id.in_(member_ids))
        .order_by(partner_links.c.create_time, partner_links.c.partner_id),
        "consents": select(member_consents)
        .where(member_consents.c.member_id.in_(member_ids))
        .order_by(member_consents.c.partner_id, member_consents.c.scope),
        "consent_history": select(consent_events)
        .where(consent_events.c.member_id.in_(member_ids))
        .order_by(consent_events.c.event_id),
        "profile_reads": select(profile_reads)
        .where(profile_reads.c.member_id.in_(member_ids))
        .order_by(profile_reads.c.read_id),
        "audit_events": select(member_audit_events)
        .where(
            member_audit_events.c.member_id.in_(member_ids)
            | member_audit_events.c.related_member_id.in_(member_ids)
        )
        .order_by(member_audit_events.c.event_id),
        "lots": select(lots).where(lots.c.member_id.in_(member_ids)).order_by(lots.c.lot_id),
        "transactions": select(journal_transactions)
        .where(journal_transactions.c.member_id.in_(member_ids))
        .order_by(journal_transactions.c.transaction_id),
    }


def _scopes(text: str) -> tuple[str, ...]:
    return tuple(scope for scope in text.split(",") if scope)


# Each section's row as the value the export carries (keys: the fields of MemberExport).
SECTION_VALUES: dict[str, Callable[[Row[Any]], Any]] = {
    "identifiers": lambda row: ExportedIdentifier(row.kind, row.identifier_hmac, row.create_time),
    "links": lambda row: ExportedLink(row.partner_id, row.partner_customer_id, row.create_time),
    "consents": consent_from_row,
    "consent_history": consent_from_row,
    "profile_reads": lambda row: ExportedProfileRead(
        row.member_id,
        row.partner_id,
        row.role,
        _scopes(row.scopes_returned),
        _scopes(row.scopes_withheld),
        row.read_time,
    ),
    "audit_events": lambda row: ExportedAuditEvent(
        row.kind,
        row.member_id,
        row.related_member_id,
        row.transaction_id,
        row.points,
        row.principal_id,
        row.create_time,
    ),
    "lots": lambda row: ExportedLot(
        int(row.lot_id),
        row.partner_id,
        int(row.points),
        int(row.remaining_points),
        row.create_time,
        row.expires_at,
    ),
    "transactions": lambda row: ExportedTransaction(
        int(row.transaction_id),
        row.kind,
        row.partner_id,
        row.member_id,
        int(row.points_delta),
        row.occurred_at,
        row.partner_reference,
    ),
}


def _replay_of_request(first: Row[Any], request_id: str, member_id: str) -> ForgetResult:
    """The answer of the attempt that claimed the request id, or REQUEST_ID_REUSED."""
    if (first.kind, first.member_id) != ("forget", member_id):
        differing = ["member_id"] if first.kind == "forget" else ["member_id", "operation"]
        raise request_id_reused(request_id, differing)
    return _forget_result(first)


def _earlier_forget(uow: UnitOfWork, member_id: str) -> Row[Any] | None:
    return uow.connection.execute(
        select(member_audit_events)
        .where(
            member_audit_events.c.kind == "forget",
            member_audit_events.c.member_id == member_id,
            member_audit_events.c.detail != audit_claims.PENDING_DETAIL,
        )
        .order_by(member_audit_events.c.event_id)
        .limit(1)
    ).one_or_none()


def _forget_result(event: Row[Any]) -> ForgetResult:
    detail = json.loads(event.detail)
    return ForgetResult(
        event.member_id, event.create_time, detail["identifiers_erased"], detail["links_erased"],
        int(event.points), replayed=True,
    )  # fmt: skip


def _member_row(uow: UnitOfWork, member_id: str) -> Row[Any]:
    row = uow.connection.execute(
        select(members).where(members.c.member_id == member_id)
    ).one_or_none()
    if row is None:
        raise NotFound(
            "MEMBER_NOT_FOUND", f"member {member_id!r} does not exist", {"member_id": member_id}
        )
    return row


def _merged_member_ids(uow: UnitOfWork, member_id: str) -> tuple[str, ...]:
    # Merges point every earlier duplicate straight at the survivor: one level is all of them.
    return tuple(
        uow.connection.execute(
            select(members.c.member_id)
            .where(members.c.merged_into_member_id == member_id)
            .order_by(members.c.member_id)
        ).scalars()
    )


def _delete(uow: UnitOfWork, column: Any, member_ids: tuple[str, ...]) -> int:
    return int(uow.connection.execute(delete(column.table).where(column.in_(member_ids))).rowcount)


def _erase_fingerprints(uow: UnitOfWork, member_ids: tuple[str, ...]) -> None:
    """Blank the stored fingerprints of the requests that carried the member's data (names,
    customer ids, birthday, preferences, identifier hashes). A retry of one of them after the
    erasure is refused as a reused request id instead of being replayed."""
    requests = member_requests.c
    while True:
        page = uow.connection.execute(
            select(requests.partner_id, requests.request_id)
            .where(requests.member_id.in_(member_ids))
            .limit(ERASE_PAGE_SIZE)
        ).all()
        if not page:
            return
        keys = [(row.partner_id, row.request_id) for row in page]
        uow.connection.execute(
            update(idempotency_keys)
            .where(tuple_(idempotency_keys.c.partner_id, idempotency_keys.c.request_id).in_(keys))
            .values(fingerprint=ERASED_FINGERPRINT)
        )
        uow.connection.execute(
            delete(member_requests).where(
                tuple_(requests.partner_id, requests.request_id).in_(keys)
            )
        )


def _record_export(uow: UnitOfWork, member_id: str, principal_id: str, now: datetime) -> None:
    # An export is a read: it carries no request id and claims nothing.
    uow.connection.execute(
        insert(member_audit_events).values(
            kind="export",
            member_id=member_id,
            principal_id=principal_id,
            detail=json.dumps({}),
            create_time=now,
        )
    )

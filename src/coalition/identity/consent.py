"""Consent: what a member shares with each partner, scope by scope, with its history.

The decision in force per (member, partner, scope) lives in `member_consents`; every decision
ever recorded, in force or not, is in `consent_events`. Decisions are ordered by when the
member made them (`occurred_at`), not by when they reached the hub: an offline till that syncs
an old grant after the member revoked it in the app must not undo the revocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update

from coalition.domain.occurrence import occurred_at_not_ahead
from coalition.identity import privacy
from coalition.identity.members import MemberReference, remember_request
from coalition.ledger import journal
from coalition.ledger.idempotency import KeyedRequest, apply_once, record_result
from coalition.store.schema import CONSENT_SCOPES, consent_events, member_consents
from coalition.store.unit_of_work import UnitOfWork

SOURCE_LENGTH_MAX = 128  # consent_events.source, member_consents.source


@dataclass(frozen=True)
class ConsentChange:
    scope: str
    granted: bool


@dataclass(frozen=True)
class ConsentUpdate:
    request_id: str
    member: MemberReference
    changes: tuple[ConsentChange, ...]
    source: str
    occurred_at: datetime | None = None

    def __post_init__(self) -> None:
        scopes = [change.scope for change in self.changes]
        assert scopes and len(set(scopes)) == len(scopes), "each scope once, at least one"
        assert set(scopes) <= set(CONSENT_SCOPES), scopes


@dataclass(frozen=True)
class Consent:
    partner_id: str
    scope: str
    granted: bool
    occurred_at: datetime
    source: str
    applied: bool = True


@dataclass(frozen=True)
class ConsentResult:
    member_id: str
    changes: tuple[Consent, ...]
    replayed: bool


def update_consent(
    uow: UnitOfWork, partner_id: str, update_: ConsentUpdate, now: datetime
) -> ConsentResult:
    occurred_at = occurred_at_not_ahead(update_.occurred_at, now)
    request = KeyedRequest(
        partner_id, update_.request_id, "update_consent", _fingerprint(update_), now
    )

    def apply() -> ConsentResult:
        # Only a partner the member deals with records the member's decisions for itself: a
        # grant recorded by an unlinked partner would open what privacy.py keeps closed.
        member_id = privacy.require(uow, partner_id, update_.member, scope=None).member_id
        # Consent changes of one member serialise on the member's lock, as merges do.
        journal.lock_member_balance(uow, member_id)
        for change in update_.changes:
            _record(uow, member_id, partner_id, change, occurred_at, update_, now)
        remember_request(uow, partner_id, update_.request_id, member_id)
        record_result(uow, partner_id, update_.request_id, member_id)
        uow.commit()
        return ConsentResult(member_id, _recorded(uow, partner_id, update_.request_id), False)

    def replay(member_id: str) -> ConsentResult:
        return ConsentResult(member_id, _recorded(uow, partner_id, update_.request_id), True)

    return apply_once(uow, request, apply, replay)


def record_decision(
    uow: UnitOfWork,
    member_id: str,
    decision: Consent,
    request_id: str | None,
    now: datetime,
) -> bool:
    """Record one decision in the history; make it the one in force unless a later decision
    is. Returns whether it is now in force. The caller holds the member's lock."""
    current = uow.connection.execute(
        select(member_consents.c.occurred_at).where(
            member_consents.c.member_id == member_id,
            member_consents.c.partner_id == decision.partner_id,
            member_consents.c.scope == decision.scope,
        )
    ).one_or_none()
    applied = current is None or decision.occurred_at >= current.occurred_at
    uow.connection.execute(
        insert(consent_events).values(
            member_id=member_id,
            partner_id=decision.partner_id,
            scope=decision.scope,
            granted=decision.granted,
            occurred_at=decision.occurred_at,
            source=decision.source,
            request_id=request_id,
            create_time=now,
        )
    )
    if not applied:
        return False
    values = {
        "granted": decision.granted,
        "occurred_at": decision.occurred_at,
        "source": decision.source,
        "update_time": now,
    }
    if current is None:
        uow.connection.execute(
            insert(member_consents).values(
                member_id=member_id, partner_id=decision.partner_id, scope=decision.scope, **values
            )
        )
    else:
        uow.connection.execute(
            update(member_consents)
            .where(
                member_consents.c.member_id == member_id,
                member_consents.c.partner_id == decision.partner_id,
                member_consents.c.scope == decision.scope,
            )
            .values(**values)
        )
    return True


def _record(
    uow: UnitOfWork,
    member_id: str,
    partner_id: str,
    change: ConsentChange,
    occurred_at: datetime,
    update_: ConsentUpdate,
    now: datetime,
) -> None:
    decision = Consent(partner_id, change.scope, change.granted, occurred_at, update_.source)
    record_decision(uow, member_id, decision, update_.request_id, now)


def _recorded(uow: UnitOfWork, partner_id: str, request_id: str) -> tuple[Consent, ...]:
    """The decisions a request recorded, and whether each is (still) the one in force."""
    rows = uow.connection.execute(
        select(consent_events, member_consents.c.occurred_at.label("occurred_at_in_force"))
        .join(
            member_consents,
            (member_consents.c.member_id == consent_events.c.member_id)
            & (member_consents.c.partner_id == consent_events.c.partner_id)
            & (member_consents.c.scope == consent_events.c.scope),
            isouter=True,
        )
        .where(consent_events.c.partner_id == partner_id, consent_events.c.request_id == request_id)
        .order_by(consent_events.c.event_id)
    )
    return tuple(
        Consent(
            row.partner_id,
            row.scope,
            row.granted,
            row.occurred_at,
            row.source,
            applied=row.occurred_at_in_force is not None
            and row.occurred_at >= row.occurred_at_in_force,
        )
        for row in rows
    )


def consent_from_row(row: Row[Any]) -> Consent:
    return Consent(row.partner_id, row.scope, row.granted, row.occurred_at, row.source)


def _fingerprint(update_: ConsentUpdate) -> dict[str, str | int | None]:
    changes = sorted(f"{c.scope}={'grant' if c.granted else 'revoke'}" for c in update_.changes)
    return {
        "member.member_id": update_.member.member_id,
        "member.partner_customer_id": update_.member.partner_customer_id,
        "changes": ",".join(changes),
        "source": update_.source,
        "occurred_at": update_.occurred_at.isoformat() if update_.occurred_at else None,
    }

"""Merging a duplicate member into a survivor, with a full audit trail.

One unit of work: lock both members (in member id order, whichever survives, so that two merges
of the same pair can never deadlock), move the duplicate's whole balance in ONE journal
transaction of kind `merge` (member:<duplicate> -B, member:<survivor> +B), move its lots (same
lot ids, so consumption history stays valid), links, identifiers, profile and consents, point
the duplicate (and members merged into it earlier) at the survivor, record the audit event.

A duplicate with no points is merged without a journal transaction: a posting of zero points is
not a posting (postings CHECK points <> 0) and a transaction without postings would break the
invariant that every transaction has postings; the audit event records that merge alone.

Journal transactions belong to a partner, and a merge belongs to none: merges are recorded under
the reserved partner `coalition-hub` (no currency, no roles, no accounts, so it can never earn,
burn, hold an API key, or owe anything in a settlement).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Row, delete, insert, literal, select, update

from coalition.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from coalition.domain.hub_partner import hub_request_id
from coalition.identity import audit_claims, consent
from coalition.identity.members import usable_member_id
from coalition.ledger import journal
from coalition.ledger.accounts import member_account_id
from coalition.ledger.idempotency import request_id_reused
from coalition.ledger.journal import JournalEntry, Posting
from coalition.ledger.system_accounts import ensure_hub_partner
from coalition.store import citus
from coalition.store.schema import (
    holds,
    idempotency_keys,
    lots,
    member_audit_events,
    member_consents,
    member_identifiers,
    member_profiles,
    member_requests,
    members,
    partner_links,
)
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class MergeResult:
    survivor_member_id: str
    duplicate_member_id: str
    transaction_id: int | None
    points_moved: int
    lots_moved: int
    links_moved: int
    identifiers_moved: int
    consents_moved: int
    create_time: datetime
    replayed: bool


def merge_members(
    uow: UnitOfWork,
    principal_id: str,
    request_id: str,
    survivor_member_id: str,
    duplicate_member_id: str,
    now: datetime,
) -> MergeResult:
    if survivor_member_id == duplicate_member_id:
        raise InvalidArgument(
            [FieldViolation("duplicate_member_id", "must differ from survivor_member_id")],
            reason="MERGE_INTO_ITSELF",
        )
    with uow:
        for member_id in sorted((survivor_member_id, duplicate_member_id)):
            _require_member(uow, member_id)
        first = audit_claims.claim(
            uow, "merge", principal_id, request_id, survivor_member_id, now, duplicate_member_id
        )
        if first is not None:
            return _replay_of_request(first, request_id, survivor_member_id, duplicate_member_id)
        earlier = _earlier_merge_of_pair(uow, survivor_member_id, duplicate_member_id)
        if earlier is not None:  # merged under another request id: that answer, unclaimed
            return _result_from_event(earlier)
        # Locks in member id order; the lock refuses a member merged meanwhile (MEMBER_MERGED).
        balances_points = {
            member_id: journal.lock_member_balance(uow, member_id)
            for member_id in sorted((survivor_member_id, duplicate_member_id))
        }
        for member_id in (survivor_member_id, duplicate_member_id):
            usable_member_id(uow, member_id)  # a forgotten member cannot take part
        _refuse_open_holds(uow, duplicate_member_id)
        points = balances_points[duplicate_member_id]
        transaction_id = _move_balance(uow, survivor_member_id, duplicate_member_id, points, now)
        counts = _move_member_data(uow, survivor_member_id, duplicate_member_id, now)
        _point_at_survivor(uow, survivor_member_id, duplicate_member_id)
        audit_claims.complete(uow, principal_id, request_id, counts, points, transaction_id)
        uow.commit()
        return MergeResult(
            survivor_member_id, duplicate_member_id, transaction_id, points,
            counts["lots_moved"], counts["links_moved"], counts["identifiers_moved"],
            counts["consents_moved"], now, replayed=False,
        )  # fmt: skip


def _replay_of_request(
    first: Row[Any], request_id: str, survivor_member_id: str, duplicate_member_id: str
) -> MergeResult:
    """The answer of the attempt that claimed the request id, or REQUEST_ID_REUSED."""
    asked = {
        "operation": "merge",
        "survivor_member_id": survivor_member_id,
        "duplicate_member_id": duplicate_member_id,
    }
    recorded = {
        "operation": first.kind,
        "survivor_member_id": first.member_id,
        "duplicate_member_id": first.related_member_id,
    }
    differing = sorted(key for key in asked if asked[key] != recorded[key])
    if differing:
        raise request_id_reused(request_id, differing)
    return _result_from_event(first)


def _earlier_merge_of_pair(
    uow: UnitOfWork, survivor_member_id: str, duplicate_member_id: str
) -> Row[Any] | None:
    # A member is merged at most once, so at most one completed event names the pair.
    return uow.connection.execute(
        select(member_audit_events).where(
            member_audit_events.c.kind == "merge",
            member_audit_events.c.member_id == survivor_member_id,
            member_audit_events.c.related_member_id == duplicate_member_id,
            member_audit_events.c.detail != audit_claims.PENDING_DETAIL,
        )
    ).one_or_none()


def _result_from_event(row: Row[Any]) -> MergeResult:
    detail = json.loads(row.detail)
    return MergeResult(
        row.member_id, row.related_member_id, row.transaction_id, int(row.points),
        detail["lots_moved"], detail["links_moved"], detail["identifiers_moved"],
        detail["consents_moved"], row.create_time, replayed=True,
    )  # fmt: skip


def _require_member(uow: UnitOfWork, member_id: str) -> None:
    exists = uow.connection.execute(
        select(members.c.member_id).where(members.c.member_id == member_id)
    ).first()
    if exists is None:
        raise NotFound(
            "MEMBER_NOT_FOUND", f"member {member_id!r} does not exist", {"member_id": member_id}
        )


def _refuse_open_holds(uow: UnitOfWork, duplicate_member_id: str) -> None:
    # Held points sit in the duplicate's hold account, and capturing, voiding or releasing a hold
    # takes the duplicate's lock, which a merged member refuses: the hold could never close.
    # Holds open under the member lock we hold, so none can appear before commit.
    open_hold = uow.connection.execute(
        select(holds.c.hold_transaction_id)
        .where(holds.c.member_id == duplicate_member_id, holds.c.status == "open")
        .limit(1)
    ).first()
    if open_hold is not None:
        raise FailedPrecondition(
            "MEMBER_HAS_OPEN_HOLDS",
            f"member {duplicate_member_id} has open holds; capture or void them, or let them "
            "expire, before merging it",
            {"member_id": duplicate_member_id},
        )


def _move_balance(
    uow: UnitOfWork, survivor_member_id: str, duplicate_member_id: str, points: int, now: datetime
) -> int | None:
    if points == 0:
        return None
    entry = JournalEntry(
        kind="merge",
        partner_id=ensure_hub_partner(uow, now),
        member_id=survivor_member_id,
        # A member is merged at most once, so this is unique under the hub partner.
        request_id=hub_request_id("merge", duplicate_member_id),
        occurred_at=now,
        postings=(
            Posting(member_account_id(duplicate_member_id), -points),
            Posting(member_account_id(survivor_member_id), points),
        ),
        reason=f"merge of member {duplicate_member_id} into member {survivor_member_id}",
    )
    record = journal.post(uow, entry, now)
    return record.transaction_id


def _move_member_data(
    uow: UnitOfWork, survivor_member_id: str, duplicate_member_id: str, now: datetime
) -> dict[str, int]:
    """Everything member-scoped moves in set-based statements; histories stay where they were
    written (journal, consent history, profile reads) and exports follow the merge."""
    counts = {
        name: _repoint(uow, table.c.member_id, survivor_member_id, duplicate_member_id)
        for name, table in (
            ("lots_moved", lots),
            ("links_moved", partner_links),
            ("identifiers_moved", member_identifiers),
        )
    }
    _repoint(uow, member_requests.c.member_id, survivor_member_id, duplicate_member_id)
    # The duplicate's request ids follow it, so that a retry naming the duplicate finds its
    # claim with the survivor's rows (on Citus, on the survivor's shard).
    _repoint(uow, idempotency_keys.c.member_id, survivor_member_id, duplicate_member_id)
    _merge_profiles(uow, survivor_member_id, duplicate_member_id, now)
    counts["consents_moved"] = _merge_consents(uow, survivor_member_id, duplicate_member_id, now)
    return counts


def _repoint(
    uow: UnitOfWork, column: Column[Any], survivor_member_id: str, duplicate_member_id: str
) -> int:
    table = column.table
    if uow.is_citus and citus.MEMBER_TABLES.get(table.name) == column.name:
        # Citus never changes a row's distribution column: the rows are copied to the
        # survivor's shard and removed from the duplicate's (keys include member_id there).
        columns = [c for c in table.c if c is not column]
        uow.connection.execute(
            insert(table).from_select(
                [column, *columns],
                select(literal(survivor_member_id, column.type), *columns).where(
                    column == duplicate_member_id
                ),
            )
        )
        result = uow.connection.execute(delete(table).where(column == duplicate_member_id))
        return int(result.rowcount)
    result = uow.connection.execute(
        update(table).where(column == duplicate_member_id).values({column.name: survivor_member_id})
    )
    return int(result.rowcount)


def _merge_profiles(
    uow: UnitOfWork, survivor_member_id: str, duplicate_member_id: str, now: datetime
) -> None:
    """The survivor keeps its own values and takes the duplicate's where it has none."""
    rows = {
        row.member_id: row
        for row in uow.connection.execute(
            select(member_profiles).where(
                member_profiles.c.member_id.in_((survivor_member_id, duplicate_member_id))
            )
        )
    }
    duplicate = rows.get(duplicate_member_id)
    if duplicate is None:
        return
    survivor = rows.get(survivor_member_id)
    if survivor is None:
        _repoint(uow, member_profiles.c.member_id, survivor_member_id, duplicate_member_id)
        return
    uow.connection.execute(
        update(member_profiles)
        .where(member_profiles.c.member_id == survivor_member_id)
        .values(
            birthday=survivor.birthday or duplicate.birthday,
            preferences=survivor.preferences or duplicate.preferences,
            update_time=now,
        )
    )
    uow.connection.execute(
        delete(member_profiles).where(member_profiles.c.member_id == duplicate_member_id)
    )


def _merge_consents(
    uow: UnitOfWork, survivor_member_id: str, duplicate_member_id: str, now: datetime
) -> int:
    """Per partner and scope, the later of the two decisions is the person's decision. Carried
    decisions enter the survivor's history with no request id (see consent_events)."""
    decisions = uow.connection.execute(
        select(member_consents).where(member_consents.c.member_id == duplicate_member_id)
    ).all()
    moved = 0
    for row in decisions:
        decision = consent.Consent(
            row.partner_id, row.scope, row.granted, row.occurred_at, row.source
        )
        moved += consent.record_decision(uow, survivor_member_id, decision, None, now)
    uow.connection.execute(
        delete(member_consents).where(member_consents.c.member_id == duplicate_member_id)
    )
    return moved


def _point_at_survivor(uow: UnitOfWork, survivor_member_id: str, duplicate_member_id: str) -> None:
    # Members merged into the duplicate earlier now point straight at the survivor, so that
    # resolving any old id takes one hop.
    uow.connection.execute(
        update(members)
        .where(
            (members.c.member_id == duplicate_member_id)
            | (members.c.merged_into_member_id == duplicate_member_id)
        )
        .values(merged_into_member_id=survivor_member_id)
    )

"""Request ids of the administrators' acts on members (merge, forget), claimed first.

An administrator is no partner, so these requests have no row in `idempotency_keys` (keyed by
partner); their audit event is their claim instead, unique on (principal_id, request_id). It is
the first write of the act's unit of work, as a ledger claim is: a concurrent attempt with the
same id blocks on that unique key until the first commits, then finds its event and replays
it; if the first rolled back (it was refused), the attempt takes the claim itself and runs.
Until the act completes the event holds no counts; nothing reads it before its commit.

A refusal is not kept under the id (an administrator's retry after fixing, say, an open hold is
meant to apply), unlike a partner's: partner requests are the ones a queued first attempt could
apply behind a refused retry.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.dialects import postgresql, sqlite

from coalition.store.schema import member_audit_events
from coalition.store.unit_of_work import UnitOfWork

PENDING_DETAIL = json.dumps({})


def claim(
    uow: UnitOfWork,
    kind: str,
    principal_id: str,
    request_id: str,
    member_id: str,
    now: datetime,
    related_member_id: str | None = None,
) -> Row[Any] | None:
    """Claim the request id with the act's audit event: None when the claim is new, else the
    committed event of the attempt that claimed it first (the caller compares and replays).

    The members named must exist (the event references them)."""
    insert_module = postgresql if uow.dialect_name == "postgresql" else sqlite
    claimed = uow.connection.execute(
        insert_module.insert(member_audit_events)
        .values(
            kind=kind,
            member_id=member_id,
            related_member_id=related_member_id,
            principal_id=principal_id,
            request_id=request_id,
            detail=PENDING_DETAIL,
            create_time=now,
        )
        # No conflict target: the unique key is (principal_id, request_id), and on Citus
        # (member_id, principal_id, request_id) (store/citus.py).
        .on_conflict_do_nothing()
        .returning(member_audit_events.c.event_id)
    ).first()
    if claimed is not None:
        return None
    return uow.connection.execute(
        select(member_audit_events).where(
            member_audit_events.c.principal_id == principal_id,
            member_audit_events.c.request_id == request_id,
        )
    ).one()


def complete(
    uow: UnitOfWork,
    principal_id: str,
    request_id: str,
    detail: dict[str, int],
    points: int | None,
    transaction_id: int | None = None,
) -> None:
    """Record the act's outcome on the event that claimed its request id."""
    result = uow.connection.execute(
        update(member_audit_events)
        .where(
            member_audit_events.c.principal_id == principal_id,
            member_audit_events.c.request_id == request_id,
            member_audit_events.c.detail == PENDING_DETAIL,
        )
        .values(
            detail=json.dumps(detail, sort_keys=True),
            points=points,
            transaction_id=transaction_id,
        )
    )
    assert result.rowcount == 1, "an act completes the claim it made, once"

"""AIP-155 request ids, with Stripe's semantics, claimed inside the request's own transaction.

The claim is the first write of a unit of work: a concurrent request with the same
(partner, request_id) blocks on the primary key until the first one commits or rolls back, then
either sees the committed claim (and replays it) or takes the key itself. A failed request
rolls its claim back, so only applied requests are remembered; a retry of a refused one is
evaluated afresh.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from coalition.domain.errors import AlreadyExists
from coalition.store.schema import idempotency_keys
from coalition.store.unit_of_work import UnitOfWork

Fingerprint = Mapping[str, str | int | None]


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a request id: new, or the id of the result it already has."""

    replayed_result_id: str | None

    @property
    def is_new(self) -> bool:
        return self.replayed_result_id is None


def claim_request(
    uow: UnitOfWork,
    partner_id: str,
    request_id: str,
    operation: str,
    fingerprint: Fingerprint,
    now: datetime,
) -> Claim:
    """Claim `request_id` for this operation, or return the result of its first application.

    Raises ALREADY_EXISTS / REQUEST_ID_REUSED when the id was used with another payload.
    """
    canonical = _canonical(operation, fingerprint)
    insert_module = postgresql if uow.dialect_name == "postgresql" else sqlite
    statement = (
        insert_module.insert(idempotency_keys)
        .values(
            partner_id=partner_id,
            request_id=request_id,
            operation=operation,
            fingerprint=canonical,
            create_time=now,
        )
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.request_id)
    )
    if uow.connection.execute(statement).first() is not None:
        return Claim(replayed_result_id=None)
    existing = uow.connection.execute(
        select(idempotency_keys.c.fingerprint, idempotency_keys.c.result_id).where(
            idempotency_keys.c.partner_id == partner_id,
            idempotency_keys.c.request_id == request_id,
        )
    ).one()
    differing_fields = _differing_fields(json.loads(existing.fingerprint), json.loads(canonical))
    if differing_fields:
        raise AlreadyExists(
            "REQUEST_ID_REUSED",
            f"request_id {request_id!r} was already used with a different request; "
            f"differing fields: {', '.join(differing_fields)}",
            {"request_id": request_id, "differing_fields": ",".join(differing_fields)},
        )
    assert existing.result_id is not None, "a committed claim always records its result"
    return Claim(replayed_result_id=existing.result_id)


def record_result(uow: UnitOfWork, partner_id: str, request_id: str, result_id: str) -> None:
    result = uow.connection.execute(
        update(idempotency_keys)
        .where(
            idempotency_keys.c.partner_id == partner_id,
            idempotency_keys.c.request_id == request_id,
            idempotency_keys.c.result_id.is_(None),
        )
        .values(result_id=result_id)
    )
    assert result.rowcount == 1, "the result is recorded once, on the claim of this request"


def _canonical(operation: str, fingerprint: Fingerprint) -> str:
    return json.dumps({"operation": operation, **fingerprint}, sort_keys=True)


def _differing_fields(first: dict[str, object], second: dict[str, object]) -> list[str]:
    return sorted(key for key in first.keys() | second.keys() if first.get(key) != second.get(key))

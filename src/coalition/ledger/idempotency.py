"""AIP-155 request ids, with Stripe's semantics, claimed inside the request's own transaction.

The claim is the first write of a unit of work: a concurrent request with the same
(partner, request_id) blocks on the primary key until the first one commits or rolls back, then
either sees the committed claim (and replays it) or takes the key itself.

A request id names one attempt at one operation, and its first definitive answer is final,
refusals included: a refused request rolls back and then records its refusal under the id in
a transaction of its own. Without that, a client whose first attempt timed out while still
queued on a hub, and whose retry was refused (say INSUFFICIENT_POINTS), could see the queued
attempt apply afterwards. Now that attempt finds the refusal and repeats it. Requests the
servicer refuses before the ledger sees them (malformed fields) claim nothing, and passing
faults and refusals that tell the client to retry (`is_final`) are never kept.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from coalition.domain.errors import (
    AlreadyExists,
    CoalitionError,
    ErrorCode,
    FieldViolation,
    restored_error,
)
from coalition.ledger import journal
from coalition.ledger.accounts import member_account_id
from coalition.store import driver
from coalition.store.arrays import TextArray, TimestamptzArray
from coalition.store.driver import IN_LIST, Statement
from coalition.store.unit_of_work import UnitOfWork

Fingerprint = Mapping[str, str | int | None]
Result = TypeVar("Result")


@dataclass(frozen=True)
class KeyedRequest:
    """One request under its request id: who sent it, which operation, with what payload."""

    partner_id: str
    request_id: str
    operation: str
    fingerprint: Fingerprint
    now: datetime
    # The member whose rows the request writes, when known before it applies ('' otherwise):
    # the claim lives with that member's rows (one shard on Citus, docs/scaling.md).
    member_id: str = ""

    @cached_property
    def canonical_fingerprint(self) -> str:
        return canonical_fingerprint(self.operation, self.fingerprint)

    def with_member(self, member_id: str) -> KeyedRequest:
        """This request, its claim kept with `member_id`. Not `dataclasses.replace`: that
        costs three times as much, and every item of every group comes here."""
        if member_id == self.member_id:
            return self
        return KeyedRequest(
            self.partner_id, self.request_id, self.operation, self.fingerprint, self.now, member_id
        )


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a request id: new, or the id of the result it already has."""

    replayed_result_id: str | None  # None: the claim is new


def apply_once(
    uow: UnitOfWork,
    request: KeyedRequest,
    apply: Callable[[], Result],
    replay: Callable[[str], Result],
    member_of: Callable[[], str] | None = None,
) -> Result:
    """Run `apply` (which records its result and commits) in one unit of work under the
    request's claim, or `replay` the result of the attempt that applied it first.

    `member_of` names the member the request writes to, read in the same unit of work before
    the claim, which is kept with that member's rows; a refusal it raises is raised again by
    `apply`, and kept as the answer like any other.
    A refusal from `apply` becomes the request's final answer (see the module docstring).
    """
    with uow:
        if member_of is not None:
            with suppress(CoalitionError):
                request = request.with_member(member_of())
        claim = claim_request(uow, request)
        if claim.replayed_result_id is not None:
            return replay(claim.replayed_result_id)
        try:
            return apply()
        except CoalitionError as error:
            if not is_final(error):
                raise
            refusal = error
    with uow:
        claim = remember_refusal(uow, request, refusal)
        if claim.replayed_result_id is not None:  # another attempt applied it meanwhile
            return replay(claim.replayed_result_id)
        uow.commit()
    raise refusal


def claim_request(uow: UnitOfWork, request: KeyedRequest) -> Claim:
    """Claim the request id, or return the result of its first application.

    Raises the refusal it was first answered with, or ALREADY_EXISTS / REQUEST_ID_REUSED
    when the id was used with another payload.
    """
    return _claim(uow, request, refusal=None)


def remember_refusal(uow: UnitOfWork, request: KeyedRequest, refusal: CoalitionError) -> Claim:
    """Record `refusal` as the final answer to `request`, whose own writes were rolled back.

    A new claim: recorded (the caller commits and raises it). Otherwise another attempt answered
    first: its result id is returned, or its refusal (or REQUEST_ID_REUSED) raised.
    """
    assert is_final(refusal), "a transient failure is never an answer"
    return _claim(uow, request, refusal)


# Failures of the moment, not answers: the same request may apply when retried.
PASSING_CODES = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED})
# Refusals that say the hub is misconfigured, not that the request is wrong: an operator
# fixes them, and the request must then apply.
HUB_FAULT_REASONS = frozenset({"IDENTIFIER_KEY_MISMATCH"})


def is_final(error: CoalitionError) -> bool:
    """Whether an error raised while applying a request is its answer (not a passing fault of
    the database or of the hub's configuration, nor a race the client is told to retry)."""
    return (
        error.code not in PASSING_CODES
        and error.reason not in HUB_FAULT_REASONS
        and not error.retry_resolves
    )


RECORD_RESULT = Statement(
    "UPDATE idempotency_keys SET result_id = %s WHERE member_id = %s"
    " AND partner_id = %s AND request_id = %s AND result_id IS NULL AND refusal IS NULL"
)


# A refusal found after the claim, under the member's lock (a burn's INSUFFICIENT_POINTS in a
# group): the claim of this transaction records it as its final answer.
RECORD_REFUSAL = Statement(
    "UPDATE idempotency_keys SET refusal = %s WHERE member_id = %s"
    " AND partner_id = %s AND request_id = %s AND result_id IS NULL AND refusal IS NULL"
)


CLAIM_MANY = (
    "INSERT INTO idempotency_keys"
    " (partner_id, request_id, operation, fingerprint, refusal, create_time, member_id)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::timestamptz[], %b::text[]) ON CONFLICT DO NOTHING RETURNING partner_id, request_id"
)


@functools.lru_cache(maxsize=256)
def _claim_many_values(count: int) -> str:
    """CLAIM_MANY for Citus, as `count` rows of VALUES: routed to the members' shards, where an
    INSERT ... SELECT from `unnest` goes through COPY and two-phase commit (ledger/writer.py)."""
    row = "(%s, %s, %s, %s, %s, %s::timestamptz, %s)"
    return (
        "INSERT INTO idempotency_keys"
        " (partner_id, request_id, operation, fingerprint, refusal, create_time, member_id)"
        f" VALUES {', '.join([row] * count)}"
        " ON CONFLICT DO NOTHING RETURNING partner_id, request_id"
    )


RELEASE = Statement(
    "DELETE FROM idempotency_keys WHERE member_id = %s AND partner_id = %s AND request_id = %s"
    " AND result_id IS NULL AND refusal IS NULL"
)


# The claims and the member locks of a group in one round trip (PostgreSQL): a UNION ALL
# runs its branches in order, so the claims come first, as when they were apart: a claim
# waits for a concurrent transaction's claim of the same id before any member lock is held.
CLAIM_MANY_AND_LOCK = (
    f"WITH claimed AS ({CLAIM_MANY}), locked AS ({journal.LOCK_BALANCES.postgresql})"
    " SELECT partner_id, request_id, NULL::bigint FROM claimed"
    " UNION ALL SELECT NULL, account_id, balance_points FROM locked"
)


def claim_many(
    uow: UnitOfWork,
    claims: Sequence[tuple[KeyedRequest, CoalitionError | None]],
    locking: Collection[str] = (),
) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """Claim several request ids in one statement (in (partner, request id) order, so
    concurrent groups take key locks in one order), each with its refusal when it has one,
    then lock the members `locking` (journal.lock_member_balances); return the (partner,
    request id) pairs claimed now and the locked balances by account id. Ids a committed
    request claimed are left alone (the caller reads their answers); an uncommitted claim is
    waited for."""
    rows = sorted(claim_row(request, refusal) for request, refusal in claims)
    if uow.dialect_name == "postgresql" and not uow.is_citus and locking:
        members = sorted(set(locking))
        accounts = sorted(member_account_id(member_id) for member_id in members)
        parameters = [*_claim_arrays(rows), TextArray(members), TextArray(accounts)]
        with driver.driver_errors(uow):
            cursor = driver.kept_cursor(uow)
            answered = cursor.execute(CLAIM_MANY_AND_LOCK, parameters).fetchall()
        claimed = {(partner_id, key) for partner_id, key, _ in answered if partner_id}
        balances = {key: balance for partner_id, key, balance in answered if not partner_id}
        return claimed, journal.checked_balances(balances, accounts)
    return _claim_rows(uow, rows), journal.lock_member_balances(uow, locking)


def _claim_rows(uow: UnitOfWork, rows: list[tuple[object, ...]]) -> set[tuple[str, str]]:
    """The (partner, request id) of each of `rows` claimed now: request ids are each
    partner's own, and a group may hold one partner's replay of an id another uses anew."""
    if uow.dialect_name == "postgresql":
        if uow.is_citus:
            statement, parameters = _claim_many_values(len(rows)), [v for r in rows for v in r]
        else:
            statement, parameters = CLAIM_MANY, _claim_arrays(rows)
        with driver.driver_errors(uow):
            cursor = driver.kept_cursor(uow)
            return {(p, r) for p, r in cursor.execute(statement, parameters).fetchall()}
    return {
        (str(row[0]), str(row[1]))
        for row in rows
        if driver.execute(uow, CLAIM, row).fetchone() is not None
    }


@dataclass(frozen=True)
class ExistingClaim:
    operation: str
    fingerprint: str
    result_id: str | None
    refusal: str | None


def existing_claims(
    uow: UnitOfWork, keys: Collection[tuple[str, str]]
) -> dict[tuple[str, str], ExistingClaim]:
    """The committed claims of (partner, request id) `keys`, in one statement whatever their
    number and partners."""
    rows = driver.execute(
        uow,
        EXISTING_CLAIMS,
        (sorted({request_id for _, request_id in keys}), sorted({p for p, _ in keys})),
    )
    wanted = set(keys)
    return {
        (partner_id, request_id): ExistingClaim(*claim)
        for partner_id, request_id, *claim in rows
        if (partner_id, request_id) in wanted
    }


def release_claim(uow: UnitOfWork, request: KeyedRequest) -> None:
    """Give up this unit of work's claim of `request` (a refusal that is no final answer)."""
    cursor = driver.execute(
        uow, RELEASE, (request.member_id, request.partner_id, request.request_id)
    )
    assert cursor.rowcount == 1, "only a claim of this unit of work, still open, is released"


def record_result(
    uow: UnitOfWork, partner_id: str, request_id: str, result_id: str, member_id: str = ""
) -> None:
    cursor = driver.execute(uow, RECORD_RESULT, (result_id, member_id, partner_id, request_id))
    assert cursor.rowcount == 1, "the result is recorded once, on the claim of this request"


def record_refusal(uow: UnitOfWork, request: KeyedRequest, refusal: CoalitionError) -> None:
    """Record `refusal` as the final answer on this unit of work's claim of `request` (its
    other writes go on: a group keeps every other item's)."""
    assert is_final(refusal), "a transient failure is never an answer"
    parameters = (_refusal_record(refusal), request.member_id, request.partner_id)
    cursor = driver.execute(uow, RECORD_REFUSAL, (*parameters, request.request_id))
    assert cursor.rowcount == 1, "the refusal is recorded once, on the claim of this request"


# The array of each column of a claim's row (`claim_row`), in CLAIM_MANY's order.
CLAIM_ARRAYS = (*[TextArray] * 5, TimestamptzArray, TextArray)


def _claim_arrays(rows: list[tuple[object, ...]]) -> list[Any]:
    """The claims' rows as CLAIM_MANY's arrays, one per column."""
    return [array(row[index] for row in rows) for index, array in enumerate(CLAIM_ARRAYS)]


def claim_row(request: KeyedRequest, refusal: CoalitionError | None) -> tuple[object, ...]:
    """The idempotency_keys row of a claim (with its refusal when it records one): partner_id,
    request_id, operation, fingerprint, refusal, create_time, member_id."""
    return (
        request.partner_id,
        request.request_id,
        request.operation,
        request.canonical_fingerprint,
        None if refusal is None else _refusal_record(refusal),
        request.now,
        request.member_id,
    )


def answer_of_existing_claim(
    request_id: str, existing_fingerprint: str, fingerprint: str, refusal: str | None
) -> None:
    """Raise what a committed claim answers a repeat of its request with when that is an error:
    REQUEST_ID_REUSED for another payload, else the refusal it recorded, if any."""
    differing_fields = _differing_fields(json.loads(existing_fingerprint), json.loads(fingerprint))
    if differing_fields:
        raise request_id_reused(request_id, differing_fields)
    if refusal is not None:
        raise _restored_refusal(refusal)


def request_id_reused(request_id: str, differing_fields: list[str]) -> AlreadyExists:
    """ALREADY_EXISTS / REQUEST_ID_REUSED, naming the fields that differ from the first use."""
    return AlreadyExists(
        "REQUEST_ID_REUSED",
        f"request_id {request_id!r} was already used with a different request; "
        f"differing fields: {', '.join(differing_fields)}",
        {"request_id": request_id, "differing_fields": ",".join(differing_fields)},
    )


def canonical_fingerprint(operation: str, fingerprint: Fingerprint) -> str:
    return _CANONICAL_JSON.encode({"operation": operation, **fingerprint})


# What `json.dumps(..., sort_keys=True)` writes, without building an encoder per call (every
# item of every group has its fingerprint written).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True)


CLAIM = Statement(
    "INSERT INTO idempotency_keys"
    " (partner_id, request_id, operation, fingerprint, refusal, create_time, member_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING request_id"
)
EXISTING_CLAIMS = Statement(
    "SELECT partner_id, request_id, operation, fingerprint, result_id, refusal"
    f" FROM idempotency_keys WHERE request_id {IN_LIST} %s AND partner_id {IN_LIST} %s"
)
# The claim of the same member first (on Citus, the only one a claim can conflict with, read
# on its shard); else, where request ids are unique per partner, another member's.
EXISTING_CLAIM = Statement(
    "SELECT fingerprint, result_id, refusal FROM idempotency_keys"
    " WHERE member_id = %s AND partner_id = %s AND request_id = %s"
)
EXISTING_CLAIM_OF_PARTNER = Statement(
    "SELECT fingerprint, result_id, refusal FROM idempotency_keys"
    " WHERE partner_id = %s AND request_id = %s"
)


def _claim(uow: UnitOfWork, request: KeyedRequest, refusal: CoalitionError | None) -> Claim:
    claimed = driver.execute(uow, CLAIM, claim_row(request, refusal)).fetchone()
    if claimed is not None:
        return Claim(replayed_result_id=None)
    key = (request.partner_id, request.request_id)
    existing = driver.execute(uow, EXISTING_CLAIM, (request.member_id, *key)).fetchone()
    if existing is None:
        existing = driver.execute(uow, EXISTING_CLAIM_OF_PARTNER, key).fetchone()
    assert existing is not None, "a conflicting claim exists once its writer committed"
    fingerprint, result_id, existing_refusal = existing
    answer_of_existing_claim(
        request.request_id, fingerprint, request.canonical_fingerprint, existing_refusal
    )
    assert result_id is not None, "a committed claim records its result or refusal"
    return Claim(replayed_result_id=result_id)


def _refusal_record(refusal: CoalitionError) -> str:
    return json.dumps(
        {
            "code": refusal.code.value,
            "reason": refusal.reason,
            "message": refusal.message,
            "metadata": refusal.metadata,
            "field_violations": [[v.field, v.description] for v in refusal.field_violations],
        },
        sort_keys=True,
    )


def _restored_refusal(record: str) -> CoalitionError:
    parts = json.loads(record)
    return restored_error(
        ErrorCode(parts["code"]),
        parts["reason"],
        parts["message"],
        parts["metadata"],
        [FieldViolation(field, description) for field, description in parts["field_violations"]],
    )


def _differing_fields(first: dict[str, object], second: dict[str, object]) -> list[str]:
    return sorted(key for key in first.keys() | second.keys() if first.get(key) != second.get(key))

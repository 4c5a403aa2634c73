"""Settlement service functions: run, read, stream, acknowledge. The API and CLI call these.

Concurrency: a run for one partner locks the partner's row (SELECT ... FOR NO KEY UPDATE on
PostgreSQL, which does not block the KEY SHARE locks earns and burns take through their
foreign keys; SQLite serialises writers anyway). Two runs for one partner therefore take
turns, and the second finds the first's statement. The unique constraints on
(partner_id, period_last_day), (partner_id, sequence_number) and (partner_id, transaction_id)
back the lock up.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Row, insert, select

from coalition.domain.errors import (
    AlreadyExists,
    CoalitionError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from coalition.domain.hub_partner import HUB_PARTNER_KIND
from coalition.settlement import entries, keys, signing
from coalition.settlement.canonical import canonical_bytes
from coalition.settlement.format import (
    GENESIS_HASH,
    Entry,
    Prices,
    StatementHeader,
    Tally,
    UnpricedEntryError,
    statement_body,
    summary,
)
from coalition.settlement.merkle import MerkleAccumulator
from coalition.store import citus
from coalition.store.schema import (
    partners,
    rate_versions,
    settlement_acknowledgements,
    settlement_statements,
)
from coalition.store.unit_of_work import UnitOfWork

PARTNERS_PER_RUN_MAX = 10_000


@dataclass(frozen=True)
class Signer:
    """The hub's private key and the id it is published under."""

    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        private_key = signing.load_private_key(path)
        return cls(private_key, signing.key_id_of(signing.raw_public_key(private_key)))


@dataclass(frozen=True)
class Statement:
    statement_id: str
    partner_id: str
    sequence_number: int
    period_last_day: date
    period_end_time: datetime
    generate_time: datetime
    entry_count: int
    merkle_root: str
    previous_statement_hash: str
    statement_hash: str
    signing_key_id: str
    signature: bytes
    body: bytes  # the canonical JSON that was hashed and signed

    def body_document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass(frozen=True)
class RunResult:
    statement: Statement
    created: bool  # False: the period was closed already and this is the existing statement


@dataclass(frozen=True)
class PartnerFailure:
    """A partner a run over every partner could not settle, and why."""

    partner_id: str
    error: CoalitionError


@dataclass(frozen=True)
class Acknowledgement:
    statement_id: str
    partner_public_key: bytes
    signature: bytes
    create_time: datetime


STATEMENTS_OF_PERIOD_MAX = 10_000  # one per partner: far above any group's partner count


def period_end_time(period_last_day: date) -> datetime:
    """A period named by its last day ends at 00:00 UTC the day after (exclusive)."""
    return datetime.combine(period_last_day + timedelta(days=1), time(0), tzinfo=UTC)


def statement_id_for(partner_id: str, period_last_day: date) -> str:
    return f"{partner_id}-{period_last_day:%Y%m%d}"


def run_settlement(
    unit_of_work: Callable[[], UnitOfWork],
    period_last_day: date,
    partner_id: str | None,
    signer: Signer,
    now: datetime,
) -> list[RunResult | PartnerFailure]:
    """One statement per partner (or for `partner_id` only) for the period ending with
    `period_last_day`; each partner settles in a transaction of its own.

    For one partner its refusal is raised. For every partner, one partner's refusal (a
    domain error: nothing of it was written) is reported in its place and the others are
    settled all the same: a partner that cannot be settled must not hold up the rest."""
    if period_end_time(period_last_day) > now:
        raise FailedPrecondition(
            "PERIOD_NOT_ENDED",
            f"the period ending {period_last_day.isoformat()} is not over yet",
            {"period": period_last_day.isoformat()},
        )
    if partner_id:
        return [settle_partner(unit_of_work(), partner_id, period_last_day, signer, now)]
    with unit_of_work() as uow:
        partner_ids = _all_partner_ids(uow)
    outcomes: list[RunResult | PartnerFailure] = []
    for one_partner_id in partner_ids:
        try:
            outcome: RunResult | PartnerFailure = settle_partner(
                unit_of_work(), one_partner_id, period_last_day, signer, now
            )
        except CoalitionError as error:
            outcome = PartnerFailure(one_partner_id, error)
        outcomes.append(outcome)
    return outcomes


def settle_partner(
    uow: UnitOfWork, partner_id: str, period_last_day: date, signer: Signer, now: datetime
) -> RunResult:
    with uow:
        if uow.is_citus:
            citus.one_connection_per_node(uow.connection)
        currency = _lock_partner(uow, partner_id)
        existing = _find(uow, partner_id, period_last_day)
        if existing is not None:
            return RunResult(existing, created=False)
        previous = _latest(uow, partner_id)
        if previous is not None and previous.period_last_day > period_last_day:
            raise FailedPrecondition(
                "PERIOD_BEFORE_LAST_STATEMENT",
                f"partner {partner_id} is settled up to {previous.period_last_day.isoformat()}; "
                f"a statement for {period_last_day.isoformat()} would come after it in the chain",
                {"partner_id": partner_id, "last_period": previous.period_last_day.isoformat()},
            )
        keys.require_active(uow, signer.key_id)
        header = StatementHeader(
            statement_id=statement_id_for(partner_id, period_last_day),
            partner_id=partner_id,
            currency=currency,
            sequence_number=1 if previous is None else previous.sequence_number + 1,
            period_last_day=period_last_day,
            period_end_time=period_end_time(period_last_day),
            generate_time=now,
            previous_statement_hash=GENESIS_HASH if previous is None else previous.statement_hash,
            signing_key_id=signer.key_id,
        )
        statement = _build(uow, header, signer)
        uow.commit()
    return RunResult(statement, created=True)


def _build(uow: UnitOfWork, header: StatementHeader, signer: Signer) -> Statement:
    entries.claim_unsettled(uow, header.partner_id, header.statement_id, header.period_end_time)
    merkle, tally = hash_entries(uow, header.partner_id, header.statement_id)
    # Both sides of the boundary: the set-based claim and the streamed entries must describe
    # the same entries, or the statement would contradict its own files.
    claimed = entries.count(uow, header.statement_id)
    assert claimed == merkle.leaf_count == tally.entry_count, (
        f"entry counts disagree: claimed {claimed}, hashed {merkle.leaf_count}"
    )
    try:
        totals = summary(tally, rate_version_prices(uow, tally))
    except UnpricedEntryError as error:
        raise FailedPrecondition(
            "ENTRY_WITHOUT_RATE_VERSION",
            f"partner {header.partner_id}: {error}; the statement cannot price it",
            {"partner_id": header.partner_id},
        ) from None
    body = canonical_bytes(statement_body(header, totals, merkle.root().hex()))
    signature = signing.sign_statement(signer.private_key, body)
    statement = Statement(
        statement_id=header.statement_id,
        partner_id=header.partner_id,
        sequence_number=header.sequence_number,
        period_last_day=header.period_last_day,
        period_end_time=header.period_end_time,
        generate_time=header.generate_time,
        entry_count=merkle.leaf_count,
        merkle_root=merkle.root().hex(),
        previous_statement_hash=header.previous_statement_hash,
        statement_hash=hashlib.sha256(body).hexdigest(),
        signing_key_id=signer.key_id,
        signature=signature,
        body=body,
    )
    uow.connection.execute(insert(settlement_statements).values(_row_of(statement)))
    return statement


def hash_entries(
    uow: UnitOfWork, partner_id: str, statement_id: str
) -> tuple[MerkleAccumulator, Tally]:
    """Stream the statement's entries once: their Merkle tree and their totals."""
    merkle = MerkleAccumulator()
    totals = Tally()
    for entry in entries.stream(uow, partner_id, statement_id):
        merkle.add_entry(entry.canonical_bytes())
        totals.add_entry(entry)
    return merkle, totals


def rate_version_prices(uow: UnitOfWork, totals: Tally) -> dict[str, Prices]:
    """The prices of the rate versions the tally names, as the rate_versions table holds them."""
    version_ids = [version for version in totals.rate_version_ids() if version is not None]
    rows = uow.connection.execute(
        select(
            rate_versions.c.rate_version_id,
            rate_versions.c.issuance_price_minor_per_point,
            rate_versions.c.redemption_price_minor_per_point,
        ).where(rate_versions.c.rate_version_id.in_(version_ids))
    )
    return {row[0]: Prices(row[1], row[2]) for row in rows}


def _lock_partner(uow: UnitOfWork, partner_id: str) -> str:
    row = uow.connection.execute(
        select(partners.c.currency)
        .where(partners.c.partner_id == partner_id)
        .with_for_update(key_share=True)
    ).one_or_none()
    if row is None:
        raise NotFound(
            "PARTNER_NOT_FOUND",
            f"partner {partner_id!r} does not exist",
            {"partner_id": partner_id},
        )
    return str(row.currency)


def _all_partner_ids(uow: UnitOfWork) -> list[str]:
    statement = (
        select(partners.c.partner_id)
        .where(partners.c.kind != HUB_PARTNER_KIND)
        .order_by(partners.c.partner_id)
    )
    partner_ids = list(uow.connection.execute(statement.limit(PARTNERS_PER_RUN_MAX + 1)).scalars())
    assert len(partner_ids) <= PARTNERS_PER_RUN_MAX, "more partners than one run settles"
    return partner_ids


def _find(uow: UnitOfWork, partner_id: str, period_last_day: date) -> Statement | None:
    row = uow.connection.execute(
        select(settlement_statements).where(
            settlement_statements.c.partner_id == partner_id,
            settlement_statements.c.period_last_day == period_last_day,
        )
    ).one_or_none()
    return None if row is None else _statement_of(row)


def _latest(uow: UnitOfWork, partner_id: str) -> Statement | None:
    row = uow.connection.execute(
        select(settlement_statements)
        .where(settlement_statements.c.partner_id == partner_id)
        .order_by(settlement_statements.c.sequence_number.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else _statement_of(row)


def _row_of(statement: Statement) -> dict[str, Any]:
    return {
        "statement_id": statement.statement_id,
        "partner_id": statement.partner_id,
        "sequence_number": statement.sequence_number,
        "period_last_day": statement.period_last_day,
        "period_end_time": statement.period_end_time,
        "generate_time": statement.generate_time,
        "entry_count": statement.entry_count,
        "merkle_root": statement.merkle_root,
        "previous_statement_hash": statement.previous_statement_hash,
        "statement_hash": statement.statement_hash,
        "signing_key_id": statement.signing_key_id,
        "signature": base64.b64encode(statement.signature).decode(),
        "body": statement.body.decode(),
    }


def _statement_of(row: Row[Any]) -> Statement:
    statement = Statement(
        statement_id=row.statement_id,
        partner_id=row.partner_id,
        sequence_number=int(row.sequence_number),
        period_last_day=row.period_last_day,
        period_end_time=row.period_end_time,
        generate_time=row.generate_time,
        entry_count=int(row.entry_count),
        merkle_root=row.merkle_root,
        previous_statement_hash=row.previous_statement_hash,
        statement_hash=row.statement_hash,
        signing_key_id=row.signing_key_id,
        signature=base64.b64decode(row.signature),
        body=row.body.encode(),
    )
    # After the read: a stored statement must still be the one that was signed.
    assert hashlib.sha256(statement.body).hexdigest() == statement.statement_hash, (
        f"statement {statement.statement_id} does not match its hash"
    )
    return statement


def get_statement(uow: UnitOfWork, statement_id: str, partner_id: str | None) -> Statement:
    """A statement; with `partner_id`, only that partner's (others' look absent)."""
    row = uow.connection.execute(
        select(settlement_statements).where(settlement_statements.c.statement_id == statement_id)
    ).one_or_none()
    if row is None or (partner_id is not None and row.partner_id != partner_id):
        raise NotFound(
            "STATEMENT_NOT_FOUND",
            f"statement {statement_id!r} does not exist",
            {"statement_id": statement_id},
        )
    return _statement_of(row)


def list_statements(
    uow: UnitOfWork, partner_id: str | None, after_statement_id: str | None, limit: int
) -> list[Statement]:
    """Statements ordered by id (partner, then period), strictly after the cursor."""
    assert 0 < limit <= 1001
    statement = select(settlement_statements).order_by(settlement_statements.c.statement_id)
    if partner_id is not None:
        statement = statement.where(settlement_statements.c.partner_id == partner_id)
    if after_statement_id is not None:
        statement = statement.where(settlement_statements.c.statement_id > after_statement_id)
    return [_statement_of(row) for row in uow.connection.execute(statement.limit(limit))]


def statements_of_period(uow: UnitOfWork, period_last_day: date, limit: int) -> list[Statement]:
    """Every partner's statement of the period ending `period_last_day`, by id; at most `limit`."""
    assert 0 < limit <= STATEMENTS_OF_PERIOD_MAX
    return [
        _statement_of(row)
        for row in uow.connection.execute(
            select(settlement_statements)
            .where(settlement_statements.c.period_last_day == period_last_day)
            .order_by(settlement_statements.c.statement_id)
            .limit(limit)
        )
    ]


def stream_entries(
    unit_of_work: Callable[[], UnitOfWork], statement_id: str, partner_id: str | None
) -> Iterator[Entry]:
    """The statement's entries in Merkle order; the unit of work stays open while streaming."""
    with unit_of_work() as uow:
        statement = get_statement(uow, statement_id, partner_id)
        yield from entries.stream(uow, statement.partner_id, statement.statement_id)


def acknowledge(
    uow: UnitOfWork, statement_id: str, partner_id: str, signature: bytes, now: datetime
) -> Acknowledgement:
    """Store the partner's countersignature over the statement hash, checked against the
    public key of its manifest. Repeating the same acknowledgement returns the stored one."""
    with uow:
        statement = get_statement(uow, statement_id, partner_id)
        public_key = _partner_public_key(uow, partner_id)
        if not signing.acknowledgement_valid(public_key, statement.statement_hash, signature):
            raise InvalidArgument(
                [
                    FieldViolation(
                        "signature",
                        "not an Ed25519 signature of this statement's hash by the key in "
                        f"partner {partner_id}'s manifest",
                    )
                ],
                reason="ACKNOWLEDGEMENT_SIGNATURE_INVALID",
            )
        # Concurrent acknowledgements of one statement take turns on its row.
        uow.connection.execute(
            select(settlement_statements.c.statement_id)
            .where(settlement_statements.c.statement_id == statement_id)
            .with_for_update()
        )
        existing = find_acknowledgement(uow, statement_id)
        if existing is not None:
            if existing.signature != signature:
                raise AlreadyExists(
                    "STATEMENT_ALREADY_ACKNOWLEDGED",
                    f"statement {statement_id} was acknowledged with another signature",
                    {"statement_id": statement_id},
                )
            return existing
        acknowledgement = Acknowledgement(statement_id, public_key, signature, now)
        uow.connection.execute(
            insert(settlement_acknowledgements).values(
                statement_id=statement_id,
                partner_public_key=base64.b64encode(public_key).decode(),
                signature=base64.b64encode(signature).decode(),
                create_time=now,
            )
        )
        uow.commit()
    return acknowledgement


def find_acknowledgement(uow: UnitOfWork, statement_id: str) -> Acknowledgement | None:
    statement = select(settlement_acknowledgements).where(
        settlement_acknowledgements.c.statement_id == statement_id
    )
    row = uow.connection.execute(statement).one_or_none()
    return None if row is None else _acknowledgement_of(row)


def _acknowledgement_of(row: Row[Any]) -> Acknowledgement:
    return Acknowledgement(
        row.statement_id,
        base64.b64decode(row.partner_public_key),
        base64.b64decode(row.signature),
        row.create_time,
    )


def _partner_public_key(uow: UnitOfWork, partner_id: str) -> bytes:
    encoded = uow.connection.execute(
        select(partners.c.settlement_public_key).where(partners.c.partner_id == partner_id)
    ).scalar_one_or_none()
    if encoded is None:
        raise FailedPrecondition(
            "ACKNOWLEDGEMENT_KEY_MISSING",
            f"partner {partner_id}'s manifest declares no settlement_public_key",
            {"partner_id": partner_id},
        )
    return base64.b64decode(encoded)


def acknowledgements(uow: UnitOfWork, statement_ids: list[str]) -> dict[str, Acknowledgement]:
    """The acknowledgements of these statements, for those that have one (one query)."""
    rows = uow.connection.execute(
        select(settlement_acknowledgements).where(
            settlement_acknowledgements.c.statement_id.in_(statement_ids)
        )
    )
    return {row.statement_id: _acknowledgement_of(row) for row in rows}

"""Verification of statements as the hub's database holds them (the integrity proof's hooks).

`verify_export` checks a statement from its files; `verify_stored_statements` checks the same
properties from the database: it rebuilds each statement's body with the hub's own code paths
(`service.hash_entries` streams the entries into the Merkle tree and the tally,
`format.statement_body` assembles the body) and names every field where the stored body
differs, then checks the hash, the signature under the published key and the chain.
`settled_totals_match_ledger` checks the other direction, with set-based SQL: every
transaction touching a partner up to its latest statement lands in exactly one of its
statements, and the signed points still equal what the ledger's postings say.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, exists, func, not_, or_, select, tuple_

from coalition.settlement import entries, service, signing
from coalition.settlement.canonical import CanonicalJsonError, canonical_bytes, parse_canonical
from coalition.settlement.format import (
    GENESIS_HASH,
    POINT_CATEGORIES,
    StatementHeader,
    UnpricedEntryError,
    statement_body,
    summary,
)
from coalition.store.schema import (
    accounts,
    partners,
    postings,
    settlement_entries,
    settlement_statements,
    signing_keys,
)
from coalition.store.unit_of_work import UnitOfWork

# Statement rows fetched per round trip; a body is a few kilobytes.
STATEMENT_BATCH_ROWS = 100
SAMPLE_SUBJECTS_MAX = 5
_TOTALS_FIELDS = ("entry_count", "points", "money", "rate_versions")

_statement = settlement_statements.c


@dataclass(frozen=True)
class _Previous:
    partner_id: str
    sequence_number: int
    body_hash: str  # SHA-256 of the stored body, which is what the next statement links to


def verify_stored_statements(
    uow: UnitOfWork, window_start: datetime, window_end: datetime
) -> Iterator[tuple[str, list[str]]]:
    """(statement_id, failures) for every statement generated in the window, streamed in
    chain order (partner, sequence) so that each link is usually the row just before."""
    published: dict[str, bytes | None] = {}  # a handful of keys, each looked up once
    previous: _Previous | None = None
    statements = (
        _in_window(select(settlement_statements, partners.c.currency), window_start, window_end)
        .join(partners, partners.c.partner_id == _statement.partner_id)
        .order_by(_statement.partner_id, _statement.sequence_number)
    )
    for row in _streamed(uow, statements):
        failures = _verify_one(uow, row, published, previous)
        previous = _Previous(
            row.partner_id, int(row.sequence_number), hashlib.sha256(row.body.encode()).hexdigest()
        )
        yield row.statement_id, failures


def _verify_one(
    uow: UnitOfWork, row: Row[Any], published: dict[str, bytes | None], previous: _Previous | None
) -> list[str]:
    body_bytes = row.body.encode()
    failures = _check_hash_and_signature(uow, row, body_bytes, published)
    try:
        body = parse_canonical(body_bytes, "body")
    except CanonicalJsonError as error:
        return [*failures, str(error)]
    if not isinstance(body, dict):
        return [*failures, "body: not a JSON object"]
    expected = _rebuilt_body(uow, row, _link_of(uow, row, previous), failures)
    if expected is not None:
        failures.extend(_differences(body, expected))
    return failures


def _check_hash_and_signature(
    uow: UnitOfWork, row: Row[Any], body_bytes: bytes, published: dict[str, bytes | None]
) -> list[str]:
    failures = []
    body_hash = hashlib.sha256(body_bytes).hexdigest()
    if body_hash != row.statement_hash:
        failures.append(
            f"statement hash: the body hashes to {body_hash}, the row says {row.statement_hash}"
        )
    if row.signing_key_id not in published:
        published[row.signing_key_id] = _published_key(uow, row.signing_key_id)
    public_key = published[row.signing_key_id]
    if public_key is None:
        failures.append(f"signing key: {row.signing_key_id} is not a published signing key")
        return failures
    signature = signing.decode_base64(row.signature, signing.SIGNATURE_BYTES)
    if signature is None or not signing.statement_signature_valid(
        public_key, body_bytes, signature
    ):
        failures.append(
            f"signature: does not verify over the body with published key {row.signing_key_id}"
        )
    return failures


def _published_key(uow: UnitOfWork, key_id: str) -> bytes | None:
    """The raw public key published under `key_id`, if it is one and really has that id."""
    encoded = uow.connection.execute(
        select(signing_keys.c.public_key).where(signing_keys.c.key_id == key_id)
    ).scalar_one_or_none()
    raw = None if encoded is None else signing.decode_base64(encoded, signing.PUBLIC_KEY_BYTES)
    if raw is None or signing.key_id_of(raw) != key_id:
        return None
    return raw


def _link_of(uow: UnitOfWork, row: Row[Any], previous: _Previous | None) -> str | None:
    """What `previous_statement_hash` must be: genesis for the first statement, else the hash
    of the partner's statement one sequence number earlier (None when there is none)."""
    sequence_number = int(row.sequence_number)
    if sequence_number == 1:
        return GENESIS_HASH
    if (
        previous is not None
        and previous.partner_id == row.partner_id
        and previous.sequence_number == sequence_number - 1
    ):
        return previous.body_hash
    # The first statement of a partner inside the window: its predecessor was not streamed.
    body = uow.connection.execute(
        select(_statement.body).where(
            _statement.partner_id == row.partner_id,
            _statement.sequence_number == sequence_number - 1,
        )
    ).scalar_one_or_none()
    return None if body is None else hashlib.sha256(body.encode()).hexdigest()


def _rebuilt_body(
    uow: UnitOfWork, row: Row[Any], link: str | None, failures: list[str]
) -> dict[str, Any] | None:
    """The body the hub would build for this row from the database as it is now."""
    merkle, tally = service.hash_entries(uow, row.partner_id, row.statement_id)
    try:
        totals = summary(tally, service.rate_version_prices(uow, tally))
    except UnpricedEntryError as error:
        failures.append(f"totals: cannot price the entries: {error}")
        return None
    if link is None:
        failures.append(
            f"chain: partner {row.partner_id} has no statement {int(row.sequence_number) - 1} "
            "to link to"
        )
    header = StatementHeader(
        statement_id=row.statement_id,
        partner_id=row.partner_id,
        currency=row.currency,
        sequence_number=int(row.sequence_number),
        period_last_day=row.period_last_day,
        period_end_time=row.period_end_time,
        generate_time=row.generate_time,
        previous_statement_hash=link or "",
        signing_key_id=row.signing_key_id,
    )
    expected = statement_body(header, totals, merkle.root().hex())
    expected["previous_statement_hash"] = link  # None: named above, nothing to compare with
    failures.extend(_row_differences(row, expected))
    return expected


def _row_differences(row: Row[Any], expected: dict[str, Any]) -> list[str]:
    """The columns that copy body fields (for queries) must still equal what they copy."""
    copies = (
        ("entry_count", str(row.entry_count)),
        ("merkle_root", row.merkle_root),
        ("previous_statement_hash", row.previous_statement_hash),
    )
    return [
        f"row: the {name} column is {stored}, the statement recomputed gives {expected[name]}"
        for name, stored in copies
        if expected[name] is not None and stored != expected[name]
    ]


def _differences(body: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Each field of the stored body that is not what the database recomputes, named the way
    `verify_export` names it."""
    failures = []
    for name in sorted(expected):
        stored, rebuilt = body.get(name), expected[name]
        if stored == rebuilt or rebuilt is None:
            continue
        if name == "merkle_root":
            failures.append(f"merkle root: the entries give {rebuilt}, the statement says {stored}")
        elif name in _TOTALS_FIELDS:
            failures.append(
                f"totals: {name} is {_text(stored)} in the statement, "
                f"{_text(rebuilt)} recomputed from the entries"
            )
        elif name == "previous_statement_hash":
            failures.append(
                f"chain: previous_statement_hash is {_text(stored)}, the previous statement "
                f"hashes to {rebuilt}"
            )
        else:
            failures.append(
                f"body: {name} is {_text(stored)}, the statement's row says {_text(rebuilt)}"
            )
    failures.extend(f"body: unexpected field {name}" for name in sorted(set(body) - set(expected)))
    return failures


def _text(value: Any) -> str:
    return "(missing)" if value is None else canonical_bytes(value).decode()


def settled_totals_match_ledger(
    uow: UnitOfWork, window_start: datetime, window_end: datetime
) -> tuple[int, list[str]]:
    """The statements generated in the window against the ledger: (statements_checked,
    failures). A partner's settled range ends at its latest such statement's period end."""
    in_window = _in_window(select(_statement.statement_id), window_start, window_end)
    failures = [
        *_unsettled_transactions(uow, window_start, window_end),
        *_misplaced_entries(uow, in_window),
    ]
    checked, mismatches = _points_against_ledger(uow, in_window)
    return checked, failures + mismatches


def _unsettled_transactions(
    uow: UnitOfWork, window_start: datetime, window_end: datetime
) -> list[str]:
    """Transactions touching a partner (a posting on its accounts, as `claim_unsettled`
    defines it) committed before its settled range ends, yet in none of its statements."""
    settled = (
        _in_window(
            select(_statement.partner_id, func.max(_statement.period_end_time).label("end_time")),
            window_start,
            window_end,
        )
        .group_by(_statement.partner_id)
        .subquery()
    )
    entry = settlement_entries.c
    # The entry must name a statement of the same partner; an entry pointing elsewhere
    # settles nothing. (The primary key (partner_id, transaction_id) rules out two entries.)
    in_a_statement: ColumnElement[bool] = exists().where(
        entry.partner_id == accounts.c.partner_id,
        entry.transaction_id == postings.c.transaction_id,
        _statement.statement_id == entry.statement_id,
        _statement.partner_id == entry.partner_id,
    )
    if uow.is_citus:
        # Citus cannot correlate member-distributed postings with the coordinator's entries:
        # the settled (partner, transaction) pairs are read once and sent to every shard.
        in_a_statement = tuple_(accounts.c.partner_id, postings.c.transaction_id).in_(
            select(entry.partner_id, entry.transaction_id).join(
                settlement_statements,
                and_(
                    _statement.statement_id == entry.statement_id,
                    _statement.partner_id == entry.partner_id,
                ),
            )
        )
    subjects = (
        select(accounts.c.partner_id, postings.c.transaction_id)
        .select_from(postings)
        .join(accounts, accounts.c.account_id == postings.c.account_id)
        .join(settled, settled.c.partner_id == accounts.c.partner_id)
        .where(postings.c.create_time < settled.c.end_time, not_(in_a_statement))
        .group_by(accounts.c.partner_id, postings.c.transaction_id)
    )
    return _named(
        uow,
        subjects,
        "unsettled: {count} transaction(s) touch a partner before its latest statement's "
        "period end but are in none of its statements",
    )


def _misplaced_entries(uow: UnitOfWork, in_window: Select[Any]) -> list[str]:
    """Entries of the window's statements that the statement could not have claimed: another
    partner's statement, or a transaction without postings on the partner's accounts
    committed before the statement's period end."""
    entry = settlement_entries.c
    claimable = exists().where(
        postings.c.transaction_id == entry.transaction_id,
        accounts.c.account_id == postings.c.account_id,
        accounts.c.partner_id == entry.partner_id,
        postings.c.create_time < _statement.period_end_time,
    )
    if uow.is_citus:
        # Citus cannot correlate the coordinator's entries with member-distributed postings:
        # the entries' first postings per partner are read once, from every shard.
        first_postings = (
            select(
                accounts.c.partner_id,
                postings.c.transaction_id,
                func.min(postings.c.create_time).label("create_time"),
            )
            .join(accounts, accounts.c.account_id == postings.c.account_id)
            .where(
                postings.c.transaction_id.in_(
                    select(entry.transaction_id).where(
                        entry.statement_id.in_(in_window.scalar_subquery())
                    )
                )
            )
            .group_by(accounts.c.partner_id, postings.c.transaction_id)
            .cte("first_postings")
            .prefix_with("MATERIALIZED")
        )
        first = first_postings.c
        claimable = exists().where(
            first.partner_id == entry.partner_id,
            first.transaction_id == entry.transaction_id,
            first.create_time < _statement.period_end_time,
        )
    subjects = (
        select(entry.partner_id, entry.transaction_id)
        .select_from(settlement_entries)
        .join(settlement_statements, _statement.statement_id == entry.statement_id)
        .where(entry.statement_id.in_(in_window.scalar_subquery()))
        .where(or_(_statement.partner_id != entry.partner_id, not_(claimable)))
    )
    return _named(
        uow,
        subjects,
        "misplaced: {count} entr(ies) name a transaction their statement could not claim "
        "(another partner's, or committed after the statement's period end)",
    )


def _named(uow: UnitOfWork, subjects: Select[Any], message: str) -> list[str]:
    """One failure naming how many (partner_id, transaction_id) subjects there are and a
    few of them, or none: the count and the sample stay in the database."""
    found = subjects.subquery()
    count = uow.connection.execute(select(func.count()).select_from(found)).scalar_one()
    if not count:
        return []
    sample = uow.connection.execute(
        select(found).order_by(found.c[0], found.c[1]).limit(SAMPLE_SUBJECTS_MAX)
    )
    names = ", ".join(
        f"{partner_id} transaction {transaction_id}" for partner_id, transaction_id in sample
    )
    return [f"{message.format(count=count)}, e.g. {names}"]


def _points_against_ledger(uow: UnitOfWork, in_window: Select[Any]) -> tuple[int, list[str]]:
    """Per statement, its signed points per category against the ledger's postings for its
    entries. Equal per statement implies equal summed over them, and names the statement."""
    ledger = entries.ledger_points(uow, in_window).subquery()
    rows = (
        select(_statement.statement_id, _statement.body, *(ledger.c[c] for c in POINT_CATEGORIES))
        .select_from(
            settlement_statements.outerjoin(
                ledger, ledger.c.statement_id == _statement.statement_id
            )
        )
        .where(_statement.statement_id.in_(in_window.scalar_subquery()))
        .order_by(_statement.statement_id)
    )
    checked, failures = 0, []
    for row in _streamed(uow, rows):
        checked += 1
        ledger_points = {c: int(row._mapping[ledger.c[c]] or 0) for c in POINT_CATEGORIES}
        failures.extend(_points_differences(row.statement_id, row.body, ledger_points))
    return checked, failures


def _points_differences(statement_id: str, body_text: str, ledger: dict[str, int]) -> list[str]:
    try:
        points = json.loads(body_text)["points"]
        signed = {category: int(points[category]) for category in POINT_CATEGORIES}
    except (ValueError, KeyError, TypeError):
        return [f"{statement_id}: points: the body holds no readable points per category"]
    return [
        f"{statement_id}: points {category} is {signed[category]} in the statement, "
        f"{ledger[category]} in the ledger's postings for its entries"
        for category in POINT_CATEGORIES
        if signed[category] != ledger[category]
    ]


def _in_window(statement: Select[Any], window_start: datetime, window_end: datetime) -> Select[Any]:
    return statement.where(
        _statement.generate_time >= window_start, _statement.generate_time < window_end
    )


def _streamed(uow: UnitOfWork, statement: Select[Any]) -> Iterator[Row[Any]]:
    # On the statement, not the connection (see entries.stream): later queries on this
    # connection must not run through a server-side cursor.
    streamed = statement.execution_options(stream_results=True, yield_per=STATEMENT_BATCH_ROWS)
    yield from uow.connection.execute(streamed)

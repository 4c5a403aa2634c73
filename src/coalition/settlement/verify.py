"""Offline verification of an exported statement: needs only the files and a public key.

Every check is made and every failure named, so a partner learns exactly what does not hold:
the signature, the statement hash, each entry's form and order, the Merkle root, the totals
and money recomputed from the entries at the statement's prices, and the chain link.

The same properties checked on the hub's own database (`coalition reconcile integrity`) live
in `stored.py`, re-exported here because the integrity proof looks for them in this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coalition.settlement import signing
from coalition.settlement.canonical import CanonicalJsonError, canonical_bytes, parse_canonical
from coalition.settlement.export import ENTRIES_FILE, STATEMENT_FILE
from coalition.settlement.format import (
    FORMAT,
    GENESIS_HASH,
    Tally,
    UnpricedEntryError,
    category_of,
    prices_of,
    summary,
)
from coalition.settlement.merkle import MerkleAccumulator
from coalition.settlement.stored import (
    settled_totals_match_ledger as settled_totals_match_ledger,
)
from coalition.settlement.stored import (
    verify_stored_statements as verify_stored_statements,
)

ENTRY_LINE_BYTES_MAX = 64 * 1024
STATEMENT_FILE_BYTES_MAX = 16 * 1024 * 1024
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset(
    (
        "transaction_id",
        "kind",
        "parent_transaction_id",
        "parent_kind",
        "occurred_at",
        "create_time",
        "member_id",
        "request_id",
        "rate_version_id",
        "partner_points",
    )
)
_BODY_KEYS = frozenset(
    (
        "format",
        "statement_id",
        "partner_id",
        "currency",
        "sequence_number",
        "period",
        "generate_time",
        "merkle_root",
        "previous_statement_hash",
        "signing_key_id",
        "entry_count",
        "points",
        "money",
        "rate_versions",
    )
)
_TOTALS_KEYS = ("entry_count", "points", "money", "rate_versions")


@dataclass
class Verification:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class _Signed:
    body: dict[str, Any]
    body_bytes: bytes
    signature_text: str
    statement_hash: str


def verify_export(
    directory: Path, public_key: bytes, previous_directory: Path | None = None
) -> Verification:
    result = Verification()
    signed = _load(directory / STATEMENT_FILE, result)
    if signed is None:
        return result
    _check_hash_and_signature(signed, public_key, result)
    tally, merkle = _read_entries(directory / ENTRIES_FILE, result)
    if tally is not None and merkle is not None:
        _check_merkle_root(signed.body, merkle, result)
        _check_totals(signed.body, tally, result)
    _check_chain(signed.body, previous_directory, result)
    return result


def _load(path: Path, result: Verification) -> _Signed | None:
    try:
        with path.open("rb") as file:
            document = parse_canonical(file.read(STATEMENT_FILE_BYTES_MAX), str(path))
    except OSError as error:
        result.failures.append(f"{path}: cannot read: {error.strerror or error}")
        return None
    except CanonicalJsonError as error:
        result.failures.append(str(error))
        return None
    if not isinstance(document, dict) or set(document) != {"body", "signature", "statement_hash"}:
        result.failures.append(f"{path}: must hold exactly body, signature and statement_hash")
        return None
    body = document["body"]
    if not isinstance(body, dict) or set(body) != _BODY_KEYS or body["format"] != FORMAT:
        result.failures.append(f"{path}: body is not a {FORMAT} statement body")
        return None
    return _Signed(body, canonical_bytes(body), document["signature"], document["statement_hash"])


def _check_hash_and_signature(signed: _Signed, public_key: bytes, result: Verification) -> None:
    statement_hash = hashlib.sha256(signed.body_bytes).hexdigest()
    if statement_hash != signed.statement_hash:
        result.failures.append(
            f"statement hash: the body hashes to {statement_hash}, "
            f"the file says {signed.statement_hash}"
        )
    key_id = signing.key_id_of(public_key)
    if signed.body["signing_key_id"] != key_id:
        result.failures.append(
            f"signing key: the statement names key {signed.body['signing_key_id']}, "
            f"the public key given is {key_id}"
        )
    signature = (
        signing.decode_base64(signed.signature_text, signing.SIGNATURE_BYTES)
        if isinstance(signed.signature_text, str)
        else None
    )
    if signature is None or not signing.statement_signature_valid(
        public_key, signed.body_bytes, signature
    ):
        result.failures.append("signature: does not verify over the body with the public key")


def _read_entries(
    path: Path, result: Verification
) -> tuple[Tally | None, MerkleAccumulator | None]:
    tally, merkle = Tally(), MerkleAccumulator()
    previous_transaction_id = -1
    try:
        for line_number, line in _lines(path):
            entry = _parse_entry(line, line_number, previous_transaction_id)
            previous_transaction_id = int(entry["transaction_id"])
            merkle.add_entry(line)
            category = category_of(entry["kind"], entry["parent_kind"])
            tally.add(category, entry["rate_version_id"], abs(int(entry["partner_points"])), 1)
    except OSError as error:
        result.failures.append(f"{path}: cannot read: {error.strerror or error}")
        return None, None
    except _EntryInvalid as error:
        result.failures.append(f"{path}: {error}")
        return None, None
    return tally, merkle


class _EntryInvalid(ValueError):
    pass


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as file:
        line_number = 0
        while line := file.readline(ENTRY_LINE_BYTES_MAX + 1):
            line_number += 1
            if not line.endswith(b"\n"):
                raise _EntryInvalid(
                    f"line {line_number}: longer than {ENTRY_LINE_BYTES_MAX} bytes or no "
                    "final newline"
                )
            yield line_number, line[:-1]


def _parse_entry(line: bytes, line_number: int, previous_transaction_id: int) -> dict[str, Any]:
    try:
        entry = parse_canonical(line, f"entry on line {line_number}")
    except CanonicalJsonError as error:
        raise _EntryInvalid(str(error)) from None
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise _EntryInvalid(f"line {line_number}: not a statement entry (wrong fields)")
    for name in ("transaction_id", "partner_points"):
        if not isinstance(entry[name], str) or not _INTEGER.fullmatch(entry[name]):
            raise _EntryInvalid(f"line {line_number}: {name} is not a decimal integer string")
    if not isinstance(entry["kind"], str) or not all(
        entry[name] is None or isinstance(entry[name], str)
        for name in ("parent_kind", "rate_version_id", "parent_transaction_id")
    ):
        raise _EntryInvalid(f"line {line_number}: kind and references must be strings")
    if int(entry["transaction_id"]) <= previous_transaction_id:
        raise _EntryInvalid(
            f"line {line_number}: transaction {entry['transaction_id']} is out of Merkle order "
            f"(not after {previous_transaction_id})"
        )
    return entry


def _check_merkle_root(
    body: dict[str, Any], merkle: MerkleAccumulator, result: Verification
) -> None:
    root = merkle.root().hex()
    if root != body["merkle_root"]:
        result.failures.append(
            f"merkle root: the {merkle.leaf_count} entries give {root}, "
            f"the statement says {body['merkle_root']}"
        )


def _check_totals(body: dict[str, Any], tally: Tally, result: Verification) -> None:
    try:
        expected = summary(tally, prices_of(body))
    except (UnpricedEntryError, KeyError, TypeError) as error:
        result.failures.append(f"totals: cannot price the entries: {error}")
        return
    for name in _TOTALS_KEYS:
        if body[name] != expected[name]:
            result.failures.append(
                f"totals: {name} is {canonical_bytes(body[name]).decode()} in the statement, "
                f"{canonical_bytes(expected[name]).decode()} recomputed from the entries"
            )


def _check_chain(
    body: dict[str, Any], previous_directory: Path | None, result: Verification
) -> None:
    link = body["previous_statement_hash"]
    if previous_directory is None:
        if body["sequence_number"] == "1":
            if link != GENESIS_HASH:
                result.failures.append(
                    f"chain: statement 1 must link to the genesis value {GENESIS_HASH}, not {link}"
                )
        else:
            result.notes.append("chain: not checked (give --previous DIR to check the link)")
        return
    previous = _load(previous_directory / STATEMENT_FILE, result)
    if previous is None:
        return
    previous_hash = hashlib.sha256(previous.body_bytes).hexdigest()
    if link != previous_hash or not _HEX_DIGEST.fullmatch(link):
        result.failures.append(
            f"chain: previous_statement_hash is {link}, the previous statement hashes to "
            f"{previous_hash}"
        )
    if previous.body["partner_id"] != body["partner_id"]:
        result.failures.append("chain: the previous statement belongs to another partner")
    if not _follows(previous.body["sequence_number"], body["sequence_number"]):
        result.failures.append(
            f"chain: sequence {body['sequence_number']} does not follow "
            f"{previous.body['sequence_number']}"
        )


def _follows(previous_sequence: Any, sequence: Any) -> bool:
    numbers = (previous_sequence, sequence)
    if not all(isinstance(n, str) and _INTEGER.fullmatch(n) for n in numbers):
        return False
    return int(sequence) == int(previous_sequence) + 1


def read_public_key(path: Path) -> bytes:
    try:
        return signing.parse_public_key(path.read_bytes())
    except OSError as error:
        raise signing.SigningKeyError(f"{path}: cannot read: {error.strerror or error}") from None
    except signing.SigningKeyError as error:
        raise signing.SigningKeyError(f"{path}: {error}") from None

"""Offline verification of an exported statement: needs only the files, a public key and,
optionally, the partner's manifest (docs/settlement.md, "Verifying").

A partner's verifier exists to catch a hub that signs the wrong thing, so nothing here uses
the code the hub builds statements with: the canonical JSON encoder, the Merkle tree, the
categories, the money and the period arithmetic are written again from the specification,
and every field's type and form is checked, not only what the signature covers. Every check
is made and every failure named, so a partner learns exactly what does not hold.

The same properties checked on the hub's own database (`coalition reconcile integrity`) live
in `stored.py`, re-exported here because the integrity proof looks for them in this module.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coalition.partners.manifest import PartnerManifest
from coalition.settlement import signing
from coalition.settlement.stored import (
    settled_totals_match_ledger as settled_totals_match_ledger,
)
from coalition.settlement.stored import (
    verify_stored_statements as verify_stored_statements,
)

# The constants of the format, as docs/settlement.md states them.
FORMAT = "coalition.settlement.statement.v1"
ACKNOWLEDGEMENT_FORMAT = "coalition.settlement.acknowledgement.v1"
STATEMENT_SIGNATURE_PREFIX = FORMAT.encode() + b"\x00"
ACKNOWLEDGEMENT_SIGNATURE_PREFIX = ACKNOWLEDGEMENT_FORMAT.encode() + b"\x00"
GENESIS = "0" * 64
STATEMENT_FILE = "statement.json"
ENTRIES_FILE = "entries.jsonl"
ACKNOWLEDGEMENT_FILE = "acknowledgement.json"
ENTRY_LINE_BYTES_MAX = 64 * 1024
STATEMENT_FILE_BYTES_MAX = 16 * 1024 * 1024
INT64_MAX = 2**63 - 1
# A partner may stamp an operation at most this far after the hub commits it (Earn's
# `occurred_at`: "at most 5 minutes in the future").
OCCURRED_AFTER_COMMIT_MAX = timedelta(minutes=5)

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_COUNT = re.compile(r"0|[1-9][0-9]*")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PRICE = re.compile(r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,12})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_PARTNER_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_PARTNER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_HUB_REQUEST_ID = re.compile(r"hub/[A-Za-z0-9._:\-/]{1,252}")
_RATE_VERSION_ID = re.compile(
    r"(?P<partner>[a-z0-9][a-z0-9-]{1,62})@(?P<effective_from>"
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)"
)

ISSUED, ISSUED_REVERSED = "issued", "issued_reversed"
REDEEMED, REDEEMED_REVERSED = "redeemed", "redeemed_reversed"
EXPIRED = "expired"
CATEGORIES = (ISSUED, ISSUED_REVERSED, REDEEMED, REDEEMED_REVERSED, EXPIRED)
PRICED = (ISSUED, ISSUED_REVERSED, REDEEMED, REDEEMED_REVERSED)
# (kind, parent_kind) -> category: every kind that can post to a partner's accounts.
_CATEGORY = {
    ("earn", None): ISSUED,
    ("burn", None): REDEEMED,
    ("capture", None): REDEEMED,
    ("reverse", "earn"): ISSUED_REVERSED,
    ("reverse", "burn"): REDEEMED_REVERSED,
    ("reverse", "capture"): REDEEMED_REVERSED,
    ("expire", None): EXPIRED,
}
# The sign of `partner_points` per category: issuing debits the partner's issuance account,
# a redemption or a breakage credits its redemption or breakage account.
_SIGN = {ISSUED: -1, ISSUED_REVERSED: 1, REDEEMED: 1, REDEEMED_REVERSED: -1, EXPIRED: 1}
# Kinds priced at the rate version in force at their own occurred_at (a reversal carries its
# parent's version, a capture its hold's).
_PRICED_AT_OCCURRED_AT = ("earn", "burn")

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
_RATE_VERSION_KEYS = frozenset(
    (
        "rate_version_id",
        "issuance_price_minor_per_point",
        "redemption_price_minor_per_point",
        "points",
        "owed_by_partner_minor",
        "owed_by_hub_minor",
    )
)
_MONEY_KEYS = frozenset(
    ("owed_by_partner_minor", "owed_by_hub_minor", "net_minor", "net_direction")
)
_ACKNOWLEDGEMENT_KEYS = frozenset(
    (
        "format",
        "statement_id",
        "statement_hash",
        "partner_public_key",
        "signature",
        "acknowledge_time",
    )
)


@dataclass
class Verification:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was verified, for the summary

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, check: str, message: str) -> None:
        self.failures.append(f"{check}: {message}")


class _NotCanonical(ValueError):
    pass


# --- canonical JSON (RFC 8785, the subset of docs/settlement.md) -------------------------


def _canonical(value: Any) -> bytes:
    return _encode(value).encode("utf-8", "strict")


def _encode(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, list):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(_encode_string(key) + ":" + _encode(value[key]) for key in keys) + "}"
    raise _NotCanonical(f"{type(value).__name__} values are outside the format")


def _encode_string(text: str) -> str:
    out = ['"']
    for character in text:
        code = ord(character)
        if character in '"\\':
            out.append("\\" + character)
        elif character in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[character])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        else:
            out.append(character)
    out.append('"')
    return "".join(out)


def _parse(document: bytes, what: str) -> Any:
    """The value `document` holds, which must be byte for byte its canonical form."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate keys")
        return dict(pairs)

    def no_number(text: str) -> Any:
        raise ValueError(f"the JSON number {text} (integers are decimal strings)")

    try:
        value = json.loads(
            document.decode("utf-8"),
            object_pairs_hook=no_duplicates,
            parse_int=no_number,
            parse_float=no_number,
            parse_constant=no_number,
        )
        canonical = _canonical(value)
    except (UnicodeError, ValueError, RecursionError) as error:
        raise _NotCanonical(f"{what}: not JSON of the statement format: {error}") from None
    if canonical != document:
        raise _NotCanonical(f"{what}: not in RFC 8785 canonical form")
    return value


# --- Merkle tree (RFC 6962 2.1) --------------------------------------------------------


class _MerkleStack:
    """Roots of complete subtrees, largest first; memory logarithmic in the leaf count."""

    def __init__(self) -> None:
        self.subtrees: list[tuple[int, bytes]] = []
        self.leaves = 0

    def add(self, entry_bytes: bytes) -> None:
        size, digest = 1, hashlib.sha256(b"\x00" + entry_bytes).digest()
        while self.subtrees and self.subtrees[-1][0] == size:
            _, left = self.subtrees.pop()
            size, digest = 2 * size, hashlib.sha256(b"\x01" + left + digest).digest()
        self.subtrees.append((size, digest))
        self.leaves += 1

    def root_hex(self) -> str:
        if not self.subtrees:
            return hashlib.sha256(b"").hexdigest()
        digest = self.subtrees[-1][1]
        for _, left in reversed(self.subtrees[:-1]):
            digest = hashlib.sha256(b"\x01" + left + digest).digest()
        return digest.hex()


# --- forms --------------------------------------------------------------------------------


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _integer(value: Any, minimum: int = -INT64_MAX) -> int | None:
    if not isinstance(value, str) or not _INTEGER.fullmatch(value) or value == "-0":
        return None
    number = int(value)
    return number if minimum <= number <= INT64_MAX else None


def _rate_version_effective_from(rate_version_id: str) -> datetime:
    match = _RATE_VERSION_ID.fullmatch(rate_version_id)
    assert match is not None
    return datetime.strptime(match["effective_from"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _rate_version_id_of(partner_id: str, effective_from: datetime) -> str:
    return f"{partner_id}@{effective_from.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


# --- the statement -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Signed:
    body: dict[str, Any]
    body_bytes: bytes
    signature_text: Any
    statement_hash: Any


@dataclass(frozen=True)
class _Period:
    last_day: date
    end_time: datetime


@dataclass
class _Totals:
    entry_count: int = 0
    points: dict[tuple[str, str | None], int] = field(default_factory=lambda: defaultdict(int))

    def points_of(self, category: str) -> int:
        return sum(points for (c, _), points in self.points.items() if c == category)

    def versions(self) -> list[str]:
        return sorted({v for (c, v) in self.points if c in PRICED and v is not None})


def verify_export(
    directory: Path,
    public_key: bytes,
    previous_directory: Path | None = None,
    manifest: PartnerManifest | None = None,
) -> Verification:
    result = Verification()
    signed = _load(directory / STATEMENT_FILE, result)
    if signed is None:
        return result
    _check_hash_and_signature(signed, public_key, result)
    body = signed.body
    period = _check_header(body, result)
    prices = _check_rate_version_rows(body, result)
    if manifest is not None:
        _check_manifest(body, prices, manifest, result)
    totals = _read_entries(directory / ENTRIES_FILE, body, period, manifest, result)
    if totals is not None:
        _check_totals(body, totals, prices, result)
    _check_chain(body, period, previous_directory, result)
    _check_acknowledgement(directory / ACKNOWLEDGEMENT_FILE, signed, manifest, result)
    return result


def _load(path: Path, result: Verification) -> _Signed | None:
    try:
        with path.open("rb") as file:
            document = _parse(file.read(STATEMENT_FILE_BYTES_MAX + 1), str(path))
    except OSError as error:
        result.fail("file", f"{path}: cannot read: {error.strerror or error}")
        return None
    except _NotCanonical as error:
        result.failures.append(str(error))
        return None
    if not isinstance(document, dict) or set(document) != {"body", "signature", "statement_hash"}:
        result.fail("file", f"{path}: must hold exactly body, signature and statement_hash")
        return None
    body = document["body"]
    if not isinstance(body, dict) or set(body) != _BODY_KEYS or body["format"] != FORMAT:
        result.fail("body", f"{path}: not a {FORMAT} statement body (its fields differ)")
        return None
    return _Signed(body, _canonical(body), document["signature"], document["statement_hash"])


def _check_hash_and_signature(signed: _Signed, public_key: bytes, result: Verification) -> None:
    statement_hash = hashlib.sha256(signed.body_bytes).hexdigest()
    if statement_hash != signed.statement_hash:
        result.fail(
            "statement hash",
            f"the body hashes to {statement_hash}, the file says {signed.statement_hash}",
        )
    key_id = hashlib.sha256(public_key).hexdigest()
    if signed.body["signing_key_id"] != key_id:
        result.fail(
            "signing key",
            f"the statement names key {signed.body['signing_key_id']}, "
            f"the public key given is {key_id}",
        )
    signature = _base64(signed.signature_text, 64)
    if signature is None or not _ed25519_valid(
        public_key, STATEMENT_SIGNATURE_PREFIX + signed.body_bytes, signature
    ):
        result.fail("signature", "does not verify over the body with the public key")
    result.checked += ["signature", "hash"]


def _check_header(body: dict[str, Any], result: Verification) -> _Period | None:
    """Every body field not computed from the entries: types, forms and their agreement."""
    partner_id = body["partner_id"]
    if not isinstance(partner_id, str) or not _PARTNER_ID.fullmatch(partner_id):
        result.fail("body", f"partner_id {partner_id!r} is not a partner id")
    currency = body["currency"]
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        result.fail("body", f"currency {currency!r} is not an ISO 4217 code")
    for name in ("merkle_root", "previous_statement_hash", "signing_key_id"):
        if not isinstance(body[name], str) or not _HEX_DIGEST.fullmatch(body[name]):
            result.fail("body", f"{name} is not 64 lower-case hex digits")
    sequence_number = _integer(body["sequence_number"], minimum=1)
    if sequence_number is None:
        result.fail("body", f"sequence_number {body['sequence_number']!r} is not a number >= 1")
    elif (sequence_number == 1) != (body["previous_statement_hash"] == GENESIS):
        result.fail(
            "chain",
            "only statement 1 links to the genesis value, and statement 1 always does "
            f"(sequence {sequence_number}, previous {body['previous_statement_hash']})",
        )
    period = _check_period(body, result)
    generate_time = _timestamp(body["generate_time"])
    if generate_time is None:
        result.fail("body", f"generate_time {body['generate_time']!r} is not an RFC 3339 UTC time")
    elif period is not None and generate_time < period.end_time:
        result.fail(
            "period",
            f"generated at {body['generate_time']}, before the period ended "
            f"({body['period']['end_time']})",
        )
    result.checked.append("period")
    return period


def _check_period(body: dict[str, Any], result: Verification) -> _Period | None:
    period = body["period"]
    if not isinstance(period, dict) or set(period) != {"last_day", "end_time"}:
        result.fail("body", "period must hold exactly last_day and end_time")
        return None
    last_day_text = period["last_day"]
    try:
        if not isinstance(last_day_text, str) or not _DAY.fullmatch(last_day_text):
            raise ValueError
        last_day = date.fromisoformat(last_day_text)
    except ValueError:
        result.fail("body", f"period.last_day {last_day_text!r} is not a date YYYY-MM-DD")
        return None
    end_time = datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC) + timedelta(days=1)
    expected_end = end_time.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    if period["end_time"] != expected_end:
        result.fail(
            "period",
            f"end_time is {period['end_time']!r}; a period whose last day is {last_day_text} "
            f"ends at {expected_end}",
        )
    partner_id = body["partner_id"]
    expected_id = f"{partner_id}-{last_day:%Y%m%d}"
    if body["statement_id"] != expected_id:
        result.fail(
            "statement_id", f"is {body['statement_id']!r}; this statement's is {expected_id!r}"
        )
    return _Period(last_day, end_time)


def _check_rate_version_rows(body: dict[str, Any], result: Verification) -> dict[str, Fraction]:
    """The declared prices, by rate version id and price name, once each row's form holds."""
    rows = body["rate_versions"]
    prices: dict[str, Fraction] = {}
    if not isinstance(rows, list):
        result.fail("body", "rate_versions is not an array")
        return prices
    previous_id = None
    for index, row in enumerate(rows):
        where = f"rate_versions[{index}]"
        if not isinstance(row, dict) or set(row) != _RATE_VERSION_KEYS:
            result.fail("body", f"{where} does not hold exactly the fields of a rate version")
            continue
        version_id = row["rate_version_id"]
        match = _RATE_VERSION_ID.fullmatch(version_id) if isinstance(version_id, str) else None
        if match is None:
            result.fail("body", f"{where}.rate_version_id {version_id!r} is not partner@time")
            continue
        if match["partner"] != body["partner_id"]:
            result.fail("rate versions", f"{version_id} is another partner's rate version")
        if previous_id is not None and version_id <= previous_id:
            result.fail("body", f"rate_versions are not sorted by rate_version_id at {where}")
        previous_id = version_id
        for name in ("issuance_price_minor_per_point", "redemption_price_minor_per_point"):
            text = row[name]
            if not isinstance(text, str) or not _PRICE.fullmatch(text):
                result.fail("body", f"{where}.{name} {text!r} is not a plain decimal")
            else:
                prices[f"{version_id}/{name}"] = Fraction(text)
    return prices


def _check_manifest(
    body: dict[str, Any],
    prices: dict[str, Fraction],
    manifest: PartnerManifest,
    result: Verification,
) -> None:
    if body["partner_id"] != manifest.partner_id:
        result.fail(
            "manifest",
            f"the statement is {body['partner_id']}'s, the manifest {manifest.partner_id}'s",
        )
    if body["currency"] != manifest.currency:
        result.fail(
            "manifest",
            f"currency {body['currency']!r}; the partner's currency is {manifest.currency}",
        )
    declared = {
        _rate_version_id_of(manifest.partner_id, version.effective_from): version
        for version in manifest.rate_versions
    }
    for key, price in sorted(prices.items()):
        version_id, name = key.split("/")
        version = declared.get(version_id)
        if version is None:
            result.fail("manifest", f"rate version {version_id} is not in the partner's manifest")
            continue
        manifest_price: Decimal = getattr(version, name)
        if price != Fraction(manifest_price):
            result.fail(
                "manifest",
                f"{version_id} {name} is {price} in the statement, {manifest_price} in the "
                "partner's manifest",
            )
    result.checked.append("prices")


def _read_entries(
    path: Path,
    body: dict[str, Any],
    period: _Period | None,
    manifest: PartnerManifest | None,
    result: Verification,
) -> _Totals | None:
    totals, merkle = _Totals(), _MerkleStack()
    previous_transaction_id = 0
    in_force = _versions_in_force(manifest)
    try:
        for line_number, line in _lines(path):
            entry = _parse(line, f"entry on line {line_number}")
            checked = _check_entry(
                entry, line_number, previous_transaction_id, body, period, in_force, result
            )
            if checked is None:
                return None
            transaction_id, category, rate_version_id, points = checked
            previous_transaction_id = transaction_id
            merkle.add(line)
            totals.entry_count += 1
            totals.points[(category, rate_version_id if category in PRICED else None)] += points
    except OSError as error:
        result.fail("file", f"{path}: cannot read: {error.strerror or error}")
        return None
    except (_NotCanonical, _EntryInvalid) as error:
        result.failures.append(f"{path}: {error}")
        return None
    root = merkle.root_hex()
    if root != body["merkle_root"]:
        result.fail(
            "merkle root",
            f"the {merkle.leaves} entries give {root}, the statement says {body['merkle_root']}",
        )
    result.checked += ["entries", "Merkle root"]
    return totals


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


def _versions_in_force(manifest: PartnerManifest | None) -> list[tuple[datetime, str]] | None:
    if manifest is None:
        return None
    return sorted(
        (version.effective_from, _rate_version_id_of(manifest.partner_id, version.effective_from))
        for version in manifest.rate_versions
    )


def _check_entry(
    entry: Any,
    line_number: int,
    previous_transaction_id: int,
    body: dict[str, Any],
    period: _Period | None,
    in_force: list[tuple[datetime, str]] | None,
    result: Verification,
) -> tuple[int, str, str | None, int] | None:
    """(transaction id, category, rate version, points) of a well-formed entry; its faults
    are failures named by line. None when it is not an entry at all (nothing can be summed)."""
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise _EntryInvalid(f"line {line_number}: not a statement entry (wrong fields)")

    def fault(message: str) -> None:
        result.fail(
            "entry", f"line {line_number} (transaction {entry['transaction_id']}): {message}"
        )

    transaction_id = _integer(entry["transaction_id"], minimum=1)
    if transaction_id is None:
        raise _EntryInvalid(f"line {line_number}: transaction_id is not a decimal id")
    if transaction_id <= previous_transaction_id:
        raise _EntryInvalid(
            f"line {line_number}: transaction {transaction_id} is out of Merkle order "
            f"(not after {previous_transaction_id})"
        )
    category = _check_kind_and_parent(entry, transaction_id, fault)
    points_signed = _integer(entry["partner_points"])
    if points_signed is None or points_signed == 0:
        fault(f"partner_points {entry['partner_points']!r} is not a non-zero decimal integer")
        points_signed = 0
    elif category is not None and (points_signed > 0) != (_SIGN[category] > 0):
        fault(
            f"partner_points {points_signed} has the wrong sign for a {category} entry "
            f"({'negative' if _SIGN[category] < 0 else 'positive'} expected)"
        )
    occurred_at, create_time = _timestamp(entry["occurred_at"]), _timestamp(entry["create_time"])
    if occurred_at is None:
        fault(f"occurred_at {entry['occurred_at']!r} is not an RFC 3339 UTC time")
    if create_time is None:
        fault(f"create_time {entry['create_time']!r} is not an RFC 3339 UTC time")
    elif period is not None and create_time >= period.end_time:
        fault(f"committed at {entry['create_time']}, after the period's end")
    if occurred_at and create_time and occurred_at > create_time + OCCURRED_AFTER_COMMIT_MAX:
        fault(f"occurred_at {entry['occurred_at']} is after its commit {entry['create_time']}")
    member_id = entry["member_id"]
    if not isinstance(member_id, str) or not member_id or not member_id.isprintable():
        fault(f"member_id {member_id!r} is not a member id")
    request_id = entry["request_id"]
    if request_id is not None and not (
        isinstance(request_id, str)
        and (_PARTNER_REQUEST_ID.fullmatch(request_id) or _HUB_REQUEST_ID.fullmatch(request_id))
    ):
        fault(f"request_id {request_id!r} is neither a partner's nor the hub's request id")
    rate_version_id = _check_entry_rate_version(
        entry, category, occurred_at, body["partner_id"], in_force, fault
    )
    if category is None:
        return transaction_id, "", None, 0
    return transaction_id, category, rate_version_id, abs(points_signed)


def _check_kind_and_parent(entry: dict[str, Any], transaction_id: int, fault: Any) -> str | None:
    kind, parent_kind = entry["kind"], entry["parent_kind"]
    parent_id = entry["parent_transaction_id"]
    category = _CATEGORY.get((kind, parent_kind)) if isinstance(kind, str) else None
    if category is None:
        fault(f"kind {kind!r} with parent_kind {parent_kind!r} is not a partner's entry")
        return None
    if kind == "reverse":
        parent = _integer(parent_id, minimum=1)
        if parent is None or parent >= transaction_id:
            fault(f"parent_transaction_id {parent_id!r} is not an earlier transaction")
    elif parent_id is not None:
        fault("parent_transaction_id is set on an entry that is no reversal")
    return category


def _check_entry_rate_version(
    entry: dict[str, Any],
    category: str | None,
    occurred_at: datetime | None,
    partner_id: Any,
    in_force: list[tuple[datetime, str]] | None,
    fault: Any,
) -> str | None:
    version_id = entry["rate_version_id"]
    if version_id is None:
        if category in PRICED:
            fault("rate_version_id is null on an entry that moves money")
        return None
    match = _RATE_VERSION_ID.fullmatch(version_id) if isinstance(version_id, str) else None
    if match is None:
        fault(f"rate_version_id {version_id!r} is not partner@time")
        return None
    if match["partner"] != partner_id:
        fault(f"rate_version_id {version_id} is another partner's rate version")
    effective_from = _rate_version_effective_from(version_id)
    if occurred_at is not None and occurred_at < effective_from:
        fault(f"priced at {version_id}, which was not yet in force at {entry['occurred_at']}")
    if in_force is not None and occurred_at is not None and entry["kind"] in _PRICED_AT_OCCURRED_AT:
        index = bisect.bisect_right(in_force, (occurred_at, "\U0010ffff")) - 1
        expected = in_force[index][1] if index >= 0 else None
        if version_id != expected:
            fault(f"priced at {version_id}; the manifest's version in force then is {expected}")
    return str(version_id)


def _check_totals(
    body: dict[str, Any], totals: _Totals, prices: dict[str, Fraction], result: Verification
) -> None:
    """Every total recomputed from the entries and the declared prices, exactly."""

    def differs(name: str, stated: Any, recomputed: Any) -> None:
        if stated != recomputed:
            result.fail(
                "totals",
                f"{name} is {_canonical(stated).decode()} in the statement, "
                f"{_canonical(recomputed).decode()} recomputed from the entries",
            )

    differs("entry_count", body["entry_count"], str(totals.entry_count))
    differs("points", body["points"], {c: str(totals.points_of(c)) for c in CATEGORIES})
    rows = body["rate_versions"] if isinstance(body["rate_versions"], list) else []
    stated_ids = [row.get("rate_version_id") for row in rows if isinstance(row, dict)]
    if stated_ids != totals.versions():
        differs("rate_versions ids", stated_ids, totals.versions())
    owed_by_partner = owed_by_hub = 0
    for row in rows:
        if not isinstance(row, dict) or row.get("rate_version_id") not in totals.versions():
            continue
        version_id = row["rate_version_id"]
        points = {c: totals.points.get((c, version_id), 0) for c in PRICED}
        issuance = prices.get(f"{version_id}/issuance_price_minor_per_point")
        redemption = prices.get(f"{version_id}/redemption_price_minor_per_point")
        if issuance is None or redemption is None:
            continue  # the row's form was already reported
        partner_minor = round((points[ISSUED] - points[ISSUED_REVERSED]) * issuance)
        hub_minor = round((points[REDEEMED] - points[REDEEMED_REVERSED]) * redemption)
        owed_by_partner += partner_minor
        owed_by_hub += hub_minor
        differs(f"points of {version_id}", row["points"], {c: str(p) for c, p in points.items()})
        differs(
            f"owed_by_partner_minor of {version_id}",
            row["owed_by_partner_minor"],
            str(partner_minor),
        )
        differs(f"owed_by_hub_minor of {version_id}", row["owed_by_hub_minor"], str(hub_minor))
    net = owed_by_partner - owed_by_hub
    direction = "partner_pays_hub" if net > 0 else "hub_pays_partner" if net < 0 else "even"
    money = {
        "owed_by_partner_minor": str(owed_by_partner),
        "owed_by_hub_minor": str(owed_by_hub),
        "net_minor": str(abs(net)),
        "net_direction": direction,
    }
    if not isinstance(body["money"], dict) or set(body["money"]) != _MONEY_KEYS:
        result.fail("body", "money does not hold exactly its four fields")
    differs("money", body["money"], money)
    result.checked.append("totals")


def _check_chain(
    body: dict[str, Any],
    period: _Period | None,
    previous_directory: Path | None,
    result: Verification,
) -> None:
    link = body["previous_statement_hash"]
    if previous_directory is None:
        if body["sequence_number"] == "1":
            result.checked.append("chain (genesis)")
        else:
            result.notes.append("chain: not checked (give --previous DIR to check the link)")
        return
    previous = _load(previous_directory / STATEMENT_FILE, result)
    if previous is None:
        return
    previous_hash = hashlib.sha256(previous.body_bytes).hexdigest()
    if link != previous_hash:
        result.fail(
            "chain",
            f"previous_statement_hash is {link}, the previous statement hashes to {previous_hash}",
        )
    if previous.body["partner_id"] != body["partner_id"]:
        result.fail("chain", "the previous statement belongs to another partner")
    previous_sequence = _integer(previous.body["sequence_number"], minimum=1)
    sequence = _integer(body["sequence_number"], minimum=1)
    if previous_sequence is None or sequence != previous_sequence + 1:
        result.fail(
            "chain",
            f"sequence {body['sequence_number']} does not follow "
            f"{previous.body['sequence_number']}",
        )
    previous_period = previous.body["period"]
    previous_last_day = (
        previous_period.get("last_day") if isinstance(previous_period, dict) else None
    )
    if period is not None and not (
        isinstance(previous_last_day, str) and previous_last_day < period.last_day.isoformat()
    ):
        result.fail(
            "chain", f"the previous statement's period {previous_last_day!r} is not earlier"
        )
    result.checked.append("chain")


def _check_acknowledgement(
    path: Path, signed: _Signed, manifest: PartnerManifest | None, result: Verification
) -> None:
    if not path.exists():
        return
    try:
        document = _parse(path.read_bytes()[: STATEMENT_FILE_BYTES_MAX + 1], str(path))
    except (OSError, _NotCanonical) as error:
        result.fail("acknowledgement", str(error))
        return
    if not isinstance(document, dict) or set(document) != _ACKNOWLEDGEMENT_KEYS:
        result.fail("acknowledgement", f"{path} does not hold exactly the acknowledgement fields")
        return
    if document["format"] != ACKNOWLEDGEMENT_FORMAT:
        result.fail("acknowledgement", f"format is not {ACKNOWLEDGEMENT_FORMAT}")
    if document["statement_id"] != signed.body["statement_id"]:
        result.fail("acknowledgement", "names another statement")
    statement_hash = hashlib.sha256(signed.body_bytes).hexdigest()
    if document["statement_hash"] != statement_hash:
        result.fail("acknowledgement", "names another statement hash")
    if _timestamp(document["acknowledge_time"]) is None:
        result.fail("acknowledgement", "acknowledge_time is not an RFC 3339 UTC time")
    partner_key = _base64(document["partner_public_key"], 32)
    signature = _base64(document["signature"], 64)
    message = ACKNOWLEDGEMENT_SIGNATURE_PREFIX + bytes.fromhex(statement_hash)
    if (
        partner_key is None
        or signature is None
        or not _ed25519_valid(partner_key, message, signature)
    ):
        result.fail("acknowledgement", "the signature does not verify with partner_public_key")
    if manifest is not None and document["partner_public_key"] != manifest.settlement_public_key:
        result.fail("acknowledgement", "partner_public_key is not the manifest's settlement key")
    result.checked.append("acknowledgement")


def _base64(text: Any, length: int) -> bytes | None:
    """Strict standard padded base64 of exactly `length` bytes."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == length and base64.b64encode(raw).decode() == text else None


def _ed25519_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def read_public_key(path: Path) -> bytes:
    try:
        return signing.parse_public_key(path.read_bytes())
    except OSError as error:
        raise signing.SigningKeyError(f"{path}: cannot read: {error.strerror or error}") from None
    except signing.SigningKeyError as error:
        raise signing.SigningKeyError(f"{path}: {error}") from None

"""The verifier against a hub that signs the wrong thing: every statement below is signed
with the genuine key after the tampering (and its Merkle root and totals recomputed, so that
only the inconsistency under test is left), and each must still fail, by name."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from coalition.settlement import service, signing
from coalition.settlement.canonical import canonical_bytes
from coalition.settlement.export import ACKNOWLEDGEMENT_FILE, ENTRIES_FILE, STATEMENT_FILE
from coalition.settlement.format import Tally, category_of, prices_of, summary
from coalition.settlement.merkle import merkle_root_of
from coalition.settlement.service import Signer
from coalition.settlement.verify import verify_export
from coalition.store.unit_of_work import UnitOfWork
from tests.conftest import COFFEE
from tests.settlement.conftest import FEBRUARY, JANUARY, SETTLE_NOW, Ledger, settle
from tests.settlement.test_statements import V2025, V2026, january_traffic

pytestmark = pytest.mark.integration

Body = dict[str, Any]
Entries = list[dict[str, Any]]


@dataclass(frozen=True)
class Exports:
    january: Path
    february: Path


@pytest.fixture
def exports(
    engine: Engine, ledger: Ledger, signer: Signer, exporter: Callable[[str], Path]
) -> Exports:
    january_traffic(ledger)
    (january,) = settle(engine, signer, JANUARY)
    (february,) = settle(engine, signer, FEBRUARY)
    return Exports(
        exporter(january.statement.statement_id), exporter(february.statement.statement_id)
    )


def retotal(body: Body, entries: Entries) -> None:
    """The totals the hub would sign for these entries (what a consistent forger does)."""
    tally = Tally()
    for entry in entries:
        category = category_of(entry["kind"], entry["parent_kind"])
        tally.add(category, entry["rate_version_id"], abs(int(entry["partner_points"])), 1)
    body.update(summary(tally, prices_of(body)))
    lines = [canonical_bytes(entry) for entry in entries]
    body["merkle_root"] = merkle_root_of(lines).hex()


def resigned(
    directory: Path,
    tmp_path: Path,
    signer: Signer,
    tamper: Callable[[Body, Entries], None],
    recompute_totals: bool = True,
) -> Path:
    target = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(directory, target, dirs_exist_ok=True)
    document = json.loads((target / STATEMENT_FILE).read_bytes())
    entries = [json.loads(line) for line in (target / ENTRIES_FILE).read_bytes().splitlines()]
    body = document["body"]
    tamper(body, entries)
    if recompute_totals:
        retotal(body, entries)
    body_bytes = canonical_bytes(body)
    document["statement_hash"] = hashlib.sha256(body_bytes).hexdigest()
    document["signature"] = base64.b64encode(
        signing.sign_statement(signer.private_key, body_bytes)
    ).decode()
    (target / STATEMENT_FILE).write_bytes(canonical_bytes(document))
    (target / ENTRIES_FILE).write_bytes(b"".join(canonical_bytes(e) + b"\n" for e in entries))
    return target


def first_of(kind: str, entries: Entries) -> dict[str, Any]:
    return next(entry for entry in entries if entry["kind"] == kind)


def set_body(path: tuple[str, ...], value: Any) -> Callable[[Body, Entries], None]:
    def tamper(body: Body, entries: Entries) -> None:
        target = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return tamper


def set_entry(kind: str, name: str, value: Any) -> Callable[[Body, Entries], None]:
    def tamper(body: Body, entries: Entries) -> None:
        first_of(kind, entries)[name] = value

    return tamper


def priced_at_another_partners_rates(body: Body, entries: Entries) -> None:
    air_version = "test-air@2025-01-01T00:00:00Z"
    for entry in entries:
        if entry["rate_version_id"] == V2025:
            entry["rate_version_id"] = air_version
    for row in body["rate_versions"]:
        if row["rate_version_id"] == V2025:
            row["rate_version_id"] = air_version
    body["rate_versions"].sort(key=lambda row: row["rate_version_id"])


def a_price_not_in_the_manifest(body: Body, entries: Entries) -> None:
    body["rate_versions"][1]["issuance_price_minor_per_point"] = "5.0"


def an_older_rate_version_than_in_force(body: Body, entries: Entries) -> None:
    for entry in entries:
        if entry["rate_version_id"] == V2026 and entry["kind"] == "earn":
            entry["rate_version_id"] = V2025


def flip_sign_of_an_earn(body: Body, entries: Entries) -> None:
    earn = first_of("earn", entries)
    earn["partner_points"] = earn["partner_points"].removeprefix("-")


def unsorted_rate_versions(body: Body, entries: Entries) -> None:
    body["rate_versions"].reverse()


# (case, tamper, what the failure must say, whether the forger recomputes the totals)
CASES = [
    ("another partner's rates", priced_at_another_partners_rates, "another partner's", True),
    (
        "last_day disagrees with end_time",
        set_body(("period", "last_day"), "2026-01-30"),
        "period: end_time",
        True,
    ),
    (
        "statement_id disagrees with the period",
        set_body(("statement_id",), "test-coffee-20260228"),
        "statement_id:",
        True,
    ),
    (
        "generated before the period ended",
        set_body(("generate_time",), "2026-01-31T12:00:00.000000Z"),
        "before the period ended",
        True,
    ),
    (
        "an entry committed after the period's end",
        set_entry("burn", "create_time", "2026-02-03T00:00:00.000000Z"),
        "after the period's end",
        True,
    ),
    ("a price not in the manifest", a_price_not_in_the_manifest, "manifest:", True),
    ("another currency", set_body(("currency",), "EUR"), "manifest: currency", True),
    (
        "a non-reversal with parent fields",
        set_entry("earn", "parent_transaction_id", "1"),
        "no reversal",
        True,
    ),
    ("member_id null", set_entry("earn", "member_id", None), "member_id", True),
    (
        "occurred_at not a time",
        set_entry("burn", "occurred_at", "last Tuesday"),
        "occurred_at",
        True,
    ),
    ("an earn with the wrong sign", flip_sign_of_an_earn, "wrong sign", True),
    (
        "an earn of no rate version",
        set_entry("earn", "rate_version_id", None),
        "null on an entry that moves money",
        False,
    ),
    ("rate versions unsorted", unsorted_rate_versions, "not sorted", False),
    (
        "an older rate version than the one in force",
        an_older_rate_version_than_in_force,
        "in force",
        True,
    ),
    ("a kind no partner entry has", set_entry("earn", "kind", "hold"), "kind 'hold'", True),
    (
        "a request id of no form",
        set_entry("earn", "request_id", "not one"),
        "request_id",
        True,
    ),
    (
        "a reversal of no earlier transaction",
        set_entry("reverse", "parent_transaction_id", "999999999999999999"),
        "not an earlier transaction",
        True,
    ),
    (
        "sequence 1 not linked to genesis",
        set_body(("previous_statement_hash",), "ab" * 32),
        "chain: only statement 1",
        True,
    ),
]


@pytest.mark.parametrize(
    ("tamper", "named", "recompute_totals"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_a_consistently_signed_inconsistent_statement_fails(
    exports: Exports,
    signer: Signer,
    public_key: bytes,
    tmp_path: Path,
    tamper: Callable[[Body, Entries], None],
    named: str,
    recompute_totals: bool,
) -> None:
    assert verify_export(exports.january, public_key, manifest=COFFEE).failures == []
    tampered = resigned(exports.january, tmp_path, signer, tamper, recompute_totals)
    failures = verify_export(tampered, public_key, manifest=COFFEE).failures
    assert any(named in failure for failure in failures), failures
    # the signature, hash and Merkle root are genuine: the inconsistency alone is caught
    assert not any(f.startswith(("signature:", "statement hash:")) for f in failures), failures


def test_a_later_statement_linked_to_genesis_fails(
    exports: Exports, signer: Signer, public_key: bytes, tmp_path: Path
) -> None:
    tampered = resigned(
        exports.february,
        tmp_path,
        signer,
        set_body(("previous_statement_hash",), "0" * 64),
    )
    failures = verify_export(tampered, public_key).failures
    assert any(failure.startswith("chain: only statement 1") for failure in failures), failures


def test_a_manifest_of_another_partner_fails(exports: Exports, public_key: bytes) -> None:
    other = replace(COFFEE, partner_id="test-air")
    failures = verify_export(exports.january, public_key, manifest=other).failures
    assert any(failure.startswith("manifest:") for failure in failures), failures


def test_an_acknowledgement_is_exported_and_verified_offline(
    engine: Engine,
    ledger: Ledger,
    signer: Signer,
    public_key: bytes,
    coffee_acknowledgement_key: Ed25519PrivateKey,
    exporter: Callable[[str], Path],
) -> None:
    january_traffic(ledger)
    (january,) = settle(engine, signer, JANUARY)
    statement = january.statement
    signature = coffee_acknowledgement_key.sign(
        signing.acknowledgement_message(statement.statement_hash)
    )
    service.acknowledge(
        UnitOfWork(engine), statement.statement_id, "test-coffee", signature, SETTLE_NOW
    )
    directory = exporter(statement.statement_id)
    document = json.loads((directory / ACKNOWLEDGEMENT_FILE).read_bytes())
    assert document["signature"] == base64.b64encode(signature).decode()
    assert document["statement_hash"] == statement.statement_hash
    manifest = replace(
        COFFEE,
        settlement_public_key=base64.b64encode(
            signing.raw_public_key(coffee_acknowledgement_key)
        ).decode(),
    )
    verified = verify_export(directory, public_key, manifest=manifest)
    assert verified.failures == [] and "acknowledgement" in verified.checked
    # a countersignature by another key, or of another statement, fails
    forged = dict(document, signature=base64.b64encode(bytes(64)).decode())
    (directory / ACKNOWLEDGEMENT_FILE).write_bytes(canonical_bytes(forged))
    failures = verify_export(directory, public_key, manifest=manifest).failures
    assert any(f.startswith("acknowledgement:") for f in failures), failures
    # and without the acknowledgement the export says nothing about one
    (directory / ACKNOWLEDGEMENT_FILE).unlink()
    assert verify_export(directory, public_key).ok
    assert "acknowledgement" not in verify_export(directory, public_key).checked

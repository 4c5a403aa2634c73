"""Offline verification on real exports (SQLite and PostgreSQL): the tamper matrix, and a
property: any single change to any field of any entry or of the statement fails."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from coalition.settlement import signing
from coalition.settlement.canonical import canonical_bytes
from coalition.settlement.export import ENTRIES_FILE, STATEMENT_FILE
from coalition.settlement.service import Signer
from coalition.settlement.verify import verify_export
from tests.settlement.conftest import FEBRUARY, JANUARY, Ledger, settle
from tests.settlement.test_statements import january_traffic

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Exports:
    january: Path
    february: Path
    air_january: Path


@pytest.fixture
def exports(
    engine: Engine, ledger: Ledger, signer: Signer, exporter: Callable[[str], Path]
) -> Exports:
    january_traffic(ledger)
    january = settle(engine, signer, JANUARY, partner_id=None)
    (february,) = settle(engine, signer, FEBRUARY)
    by_partner = {result.statement.partner_id: result.statement for result in january}
    return Exports(
        january=exporter(by_partner["test-coffee"].statement_id),
        february=exporter(february.statement.statement_id),
        air_january=exporter(by_partner["test-air"].statement_id),
    )


def copy_of(directory: Path, tmp_path: Path) -> Path:
    target = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(directory, target, dirs_exist_ok=True)
    return target


def read_lines(directory: Path) -> list[bytes]:
    return (directory / ENTRIES_FILE).read_bytes().splitlines()


def write_lines(directory: Path, lines: list[bytes]) -> None:
    (directory / ENTRIES_FILE).write_bytes(b"".join(line + b"\n" for line in lines))


def read_statement(directory: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((directory / STATEMENT_FILE).read_bytes())
    return document


def write_statement(directory: Path, document: dict[str, Any]) -> None:
    (directory / STATEMENT_FILE).write_bytes(canonical_bytes(document))


def change_entry_digit(directory: Path) -> None:
    lines = read_lines(directory)
    entry = json.loads(lines[1])
    entry["partner_points"] = str(int(entry["partner_points"]) + 1)
    lines[1] = canonical_bytes(entry)
    write_lines(directory, lines)


def change_amount_digit(directory: Path) -> None:
    document = read_statement(directory)
    money = document["body"]["money"]
    money["owed_by_partner_minor"] = str(int(money["owed_by_partner_minor"]) + 1)
    write_statement(directory, document)


def reorder_entries(directory: Path) -> None:
    lines = read_lines(directory)
    lines[0], lines[1] = lines[1], lines[0]
    write_lines(directory, lines)


def drop_entry(directory: Path) -> None:
    write_lines(directory, read_lines(directory)[:-1])


def duplicate_entry(directory: Path) -> None:
    lines = read_lines(directory)
    write_lines(directory, [*lines, lines[-1]])


def reformat_entry(directory: Path) -> None:
    lines = read_lines(directory)
    lines[0] = json.dumps(json.loads(lines[0])).encode()  # same content, spaces added
    write_lines(directory, lines)


def change_signature(directory: Path) -> None:
    document = read_statement(directory)
    signature = bytearray(signing.decode_base64(document["signature"], 64) or b"")
    signature[0] ^= 1
    document["signature"] = signing.base64.b64encode(bytes(signature)).decode()
    write_statement(directory, document)


def change_statement_hash(directory: Path) -> None:
    document = read_statement(directory)
    document["statement_hash"] = "0" * 64
    write_statement(directory, document)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (change_entry_digit, "merkle root"),
        (change_amount_digit, "signature"),
        (reorder_entries, "out of Merkle order"),
        (drop_entry, "merkle root"),
        (duplicate_entry, "out of Merkle order"),
        (reformat_entry, "not in RFC 8785 canonical form"),
        (change_signature, "signature"),
        (change_statement_hash, "statement hash"),
    ],
)
def test_tampering_fails_and_names_what_failed(
    exports: Exports,
    public_key: bytes,
    tmp_path: Path,
    tamper: Callable[[Path], None],
    named: str,
) -> None:
    assert verify_export(exports.january, public_key).failures == []
    tampered = copy_of(exports.january, tmp_path)
    tamper(tampered)
    failures = verify_export(tampered, public_key).failures
    assert any(named in failure for failure in failures), failures


def test_a_changed_amount_also_fails_the_recomputed_totals_when_re_signed(
    exports: Exports, tmp_path: Path
) -> None:
    # A forger holding a key (here, a fresh one) can sign anything: the totals recomputed
    # from the entries and prices still expose a changed amount.
    forger = Ed25519PrivateKey.generate()
    forger_public_key = signing.raw_public_key(forger)
    tampered = copy_of(exports.january, tmp_path)
    document = read_statement(tampered)
    body = document["body"]
    body["money"]["owed_by_hub_minor"] = "23"  # 22.5 rounded half up instead of to even
    body["signing_key_id"] = signing.key_id_of(forger_public_key)
    body_bytes = canonical_bytes(body)
    document["signature"] = signing.base64.b64encode(
        signing.sign_statement(forger, body_bytes)
    ).decode()
    document["statement_hash"] = signing.hashlib.sha256(body_bytes).hexdigest()
    write_statement(tampered, document)
    failures = verify_export(tampered, forger_public_key).failures
    assert len(failures) == 1 and failures[0].startswith("totals: money"), failures


def test_another_key_fails(exports: Exports) -> None:
    other_public_key = signing.raw_public_key(Ed25519PrivateKey.generate())
    failures = verify_export(exports.january, other_public_key).failures
    assert any(failure.startswith("signing key:") for failure in failures)
    assert any(failure.startswith("signature:") for failure in failures)


def test_the_chain_links_to_the_previous_statement_only(
    exports: Exports, public_key: bytes, tmp_path: Path
) -> None:
    assert verify_export(exports.february, public_key, exports.january).failures == []
    another_partners = verify_export(exports.february, public_key, exports.air_january)
    assert any(failure.startswith("chain:") for failure in another_partners.failures)
    tampered_previous = copy_of(exports.january, tmp_path)
    change_amount_digit(tampered_previous)
    broken = verify_export(exports.february, public_key, tampered_previous)
    assert any(failure.startswith("chain: previous_statement_hash") for failure in broken.failures)
    unchecked = verify_export(exports.february, public_key)
    assert unchecked.ok and unchecked.notes == [
        "chain: not checked (give --previous DIR to check the link)"
    ]


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _leaf_paths(item, (*path, key))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _leaf_paths(item, (*path, index))]
    return [path]


def _replace_at(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value


def _get_at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _other_value(original: Any) -> st.SearchStrategy[Any]:
    alternatives = st.none() | st.booleans() | st.text(max_size=8) | st.integers().map(str)
    return alternatives.filter(lambda value: value != original or type(value) is not type(original))


def test_any_single_change_to_any_field_fails_verification(
    exports: Exports, public_key: bytes, tmp_path: Path
) -> None:
    statement = read_statement(exports.january)
    entries = [json.loads(line) for line in read_lines(exports.january)]
    targets = [("statement", path) for path in _leaf_paths(statement)] + [
        ("entry", (index, key)) for index, entry in enumerate(entries) for key in entry
    ]

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        where, path = data.draw(st.sampled_from(targets))
        tampered = copy_of(exports.january, tmp_path)
        if where == "statement":
            document = json.loads(json.dumps(statement))
            _replace_at(document, path, data.draw(_other_value(_get_at(document, path))))
            write_statement(tampered, document)
        else:
            index, key = path
            changed = [dict(entry) for entry in entries]
            changed[index][key] = data.draw(_other_value(changed[index][key]))
            write_lines(tampered, [canonical_bytes(entry) for entry in changed])
        assert not verify_export(tampered, public_key).ok, (where, path)
        shutil.rmtree(tampered)

    check()

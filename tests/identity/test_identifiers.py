"""Identifier normalisation, keyed hashing and the identity secret: pure rules and files."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalition.identity.identifiers import (
    IdentifierError,
    IdentifierHasher,
    IdentifierKind,
    normalise_email,
    normalise_phone,
)
from coalition.identity.secret import IdentitySecretError, hasher_of, read_or_create_secret_file
from coalition.settings import (
    SECRET_ENVIRONMENT_VARIABLE,
    SECRET_FILE_ENVIRONMENT_VARIABLE,
    identity_secret_from,
)

pytestmark = pytest.mark.unit

SECRET = bytes(range(32))
local_parts = st.from_regex(r"[A-Za-z0-9_+\-]{1,20}(\.[A-Za-z0-9_+\-]{1,10}){0,2}", fullmatch=True)
domains = st.from_regex(r"[A-Za-z0-9]{1,15}(\.[A-Za-z]{2,10}){1,2}", fullmatch=True)
phones = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Mei.Lin@Example.COM", "mei.lin@example.com"),
        ("  mei+coffee@example.com\t", "mei+coffee@example.com"),
        ("kunde@Bücher.example", "kunde@xn--bcher-kva.example"),
    ],
)
def test_email_normalisation(raw: str, normalised: str) -> None:
    assert normalise_email(raw).normalised == normalised


@pytest.mark.parametrize(
    "raw",
    ["", "mei", "@example.com", "mei@", "mei@@example.com", "me i@example.com", "mei@localhost",
     ".mei@example.com", "mei.@example.com", "m..ei@example.com", "mei@-example.com",
     "a" * 65 + "@example.com", "mei@" + "a" * 250 + ".com", "mei@exa_mple.com"],
)  # fmt: skip
def test_malformed_emails_are_refused_without_echoing_them(raw: str) -> None:
    with pytest.raises(IdentifierError) as refused:
        normalise_email(raw)
    assert not raw.strip() or raw.strip() not in str(refused.value)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+8613800138000", "+8613800138000"),
        ("+86 138-0013-8000", "+8613800138000"),
        ("+44 (20) 7946.0958", "+442079460958"),
    ],
)
def test_phone_normalisation(raw: str, normalised: str) -> None:
    assert normalise_phone(raw).normalised == normalised


@pytest.mark.parametrize(
    "raw", ["", "13800138000", "0086 13800138000", "+0613800138000", "+1234567", "+1" + "2" * 15,
            "+86 138 0013 800O", "+86/13800138000", "+" + "1" * 40],
)  # fmt: skip
def test_malformed_phones_are_refused(raw: str) -> None:
    with pytest.raises(IdentifierError):
        normalise_phone(raw)


@given(local=local_parts, domain=domains, padding=st.sampled_from(["", " ", "\t "]))
def test_email_normalisation_is_idempotent_and_case_blind(
    local: str, domain: str, padding: str
) -> None:
    address = f"{local}@{domain}"
    normalised = normalise_email(padding + address + padding).normalised
    assert normalise_email(normalised).normalised == normalised
    assert normalise_email(address.upper()).normalised == normalised
    assert normalised == normalised.lower().strip()


@given(phone=phones, separators=st.lists(st.sampled_from([" ", "-", "."]), max_size=14))
def test_phone_separators_never_change_the_number(phone: str, separators: list[str]) -> None:
    digits = list(phone[1:])
    spaced = "+" + "".join(d + (separators[i] if i < len(separators) else "")
                           for i, d in enumerate(digits))  # fmt: skip
    assert normalise_phone(spaced.strip(" -.")).normalised == phone
    assert normalise_phone(phone).normalised == phone


@given(local=local_parts, domain=domains, phone=phones)
def test_digests_are_keyed_and_separate_kinds(local: str, domain: str, phone: str) -> None:
    hasher = IdentifierHasher(SECRET)
    email = normalise_email(f"{local}@{domain}")
    number = normalise_phone(phone)
    assert hasher.digest(email) == IdentifierHasher(SECRET).digest(email)
    assert hasher.digest(email) != IdentifierHasher(bytes(32)).digest(email)
    assert hasher.digest(email) != hasher.digest(number)
    assert email.normalised not in hasher.digest(email)
    assert len(hasher.digest(number)) == 64


def test_the_secret_never_shows() -> None:
    hasher = IdentifierHasher(SECRET)
    for shown in (repr(hasher), str(hasher), repr(normalise_email("mei@example.com"))):
        assert SECRET.hex() not in shown and "mei@example.com" not in shown
    assert len(hasher.key_id) == 16 and hasher.key_id not in SECRET.hex()
    with pytest.raises(ValueError):
        IdentifierHasher(bytes(31))


def test_a_secret_file_is_generated_once_with_owner_only_access(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db.identity-key"
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(read_or_create_secret_file(path)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results[0]) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "no temporary file left"


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(os.urandom(32).hex())
    path.chmod(0o644)
    with pytest.raises(IdentitySecretError, match="chmod 600"):
        read_or_create_secret_file(path)


def test_where_the_secret_comes_from(tmp_path: Path) -> None:
    secret_file = tmp_path / "configured"
    secret_file.write_text(SECRET.hex() + "\n")
    secret_file.chmod(0o600)
    from_variable = hasher_of(
        identity_secret_from({SECRET_ENVIRONMENT_VARIABLE: SECRET.hex()}), None
    )
    from_file = hasher_of(
        identity_secret_from({SECRET_FILE_ENVIRONMENT_VARIABLE: str(secret_file)}), None
    )
    assert from_variable.key_id == from_file.key_id == IdentifierHasher(SECRET).key_id
    generated = hasher_of(identity_secret_from({}), tmp_path / "ledger.db")
    assert (tmp_path / "ledger.db.identity-key").exists()
    assert hasher_of(identity_secret_from({}), tmp_path / "ledger.db").key_id == generated.key_id
    with pytest.raises(IdentitySecretError, match="PostgreSQL"):
        hasher_of(identity_secret_from({}), None)
    with pytest.raises(IdentitySecretError, match="at least 32"):
        hasher_of(identity_secret_from({SECRET_ENVIRONMENT_VARIABLE: "ab" * 31}), None)
    with pytest.raises(IdentitySecretError) as refused:
        hasher_of(
            identity_secret_from({SECRET_ENVIRONMENT_VARIABLE: "not hex " + SECRET.hex()}), None
        )
    assert SECRET.hex() not in str(refused.value)


def test_identifier_kinds_are_the_stored_ones() -> None:
    assert {kind.value for kind in IdentifierKind} == {"email", "phone"}

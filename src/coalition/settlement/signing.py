"""Ed25519 statement signatures, key ids and private key files.

A private key lives only in a PEM file readable by its owner alone (mode 0600): the hub
refuses to load one that the group or others may read, as ssh does, because anyone who reads
it can forge statements. Public keys are published in the database (`keys.py`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coalition.settlement.key_files import DEFAULT_SIGNING_KEY_PATH

# Domain separation: a signature over a statement can never be replayed as a signature over
# anything else this key (or a partner's key) signs, and vice versa.
STATEMENT_SIGNATURE_PREFIX = b"coalition.settlement.statement.v1\x00"
ACKNOWLEDGEMENT_SIGNATURE_PREFIX = b"coalition.settlement.acknowledgement.v1\x00"
PRIVATE_KEY_FILE_MODE = 0o600
_PERMISSIONS_FORBIDDEN = stat.S_IRWXG | stat.S_IRWXO
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class SigningKeyError(RuntimeError):
    """A key file is missing, unreadable, malformed or readable by others."""


def signing_key_path(configured: Path | None) -> Path:
    """The key file: the one configured (the option, else $COALITION_SIGNING_KEY: settings.py),
    else the documented default ./keys/settlement-signing-key.pem (relative to the working
    directory)."""
    return configured or DEFAULT_SIGNING_KEY_PATH


def key_id_of(public_key: bytes) -> str:
    assert len(public_key) == PUBLIC_KEY_BYTES
    return hashlib.sha256(public_key).hexdigest()


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def write_new_private_key(path: Path) -> Ed25519PrivateKey:
    """Create `path` (which must not exist) holding a new key, owner-only from the first byte.

    The mode is given to open(2) itself, so there is no moment when another user could open
    the file; O_EXCL refuses to overwrite an existing key.
    """
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_FILE_MODE)
    except FileExistsError:
        raise SigningKeyError(f"{path}: already exists; refusing to overwrite a key") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    return private_key


def check_private_key_permissions(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SigningKeyError(
            f"{path}: no signing key; create one with `coalition keys signing generate`"
        ) from None
    if mode & _PERMISSIONS_FORBIDDEN:
        raise SigningKeyError(
            f"{path}: mode {stat.S_IMODE(mode):04o} lets other users read the signing key; "
            f"run `chmod 600 {path}`"
        )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    check_private_key_permissions(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise SigningKeyError(f"{path}: not a readable PEM private key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key")
    return key


def public_key_pem(public_key: bytes) -> bytes:
    return Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def parse_public_key(text: bytes) -> bytes:
    """A public key given as PEM (SubjectPublicKeyInfo) or as base64 of the raw 32 bytes."""
    stripped = text.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except ValueError as error:
            raise SigningKeyError(f"not a PEM public key: {error}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError("not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raw = decode_base64(stripped.decode("ascii", "replace"), PUBLIC_KEY_BYTES)
    if raw is None:
        raise SigningKeyError("not a PEM public key nor base64 of 32 raw Ed25519 bytes")
    return raw


def decode_base64(text: str, length: int) -> bytes | None:
    """Strict standard base64 of exactly `length` bytes, else None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != length or base64.b64encode(raw).decode() != text:
        return None
    return raw


def sign_statement(private_key: Ed25519PrivateKey, canonical_body: bytes) -> bytes:
    return private_key.sign(STATEMENT_SIGNATURE_PREFIX + canonical_body)


def statement_signature_valid(public_key: bytes, canonical_body: bytes, signature: bytes) -> bool:
    return _valid(public_key, STATEMENT_SIGNATURE_PREFIX + canonical_body, signature)


def acknowledgement_message(statement_hash_hex: str) -> bytes:
    return ACKNOWLEDGEMENT_SIGNATURE_PREFIX + bytes.fromhex(statement_hash_hex)


def acknowledgement_valid(public_key: bytes, statement_hash_hex: str, signature: bytes) -> bool:
    return _valid(public_key, acknowledgement_message(statement_hash_hex), signature)


def _valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True

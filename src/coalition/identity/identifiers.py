"""Contact identifiers (email, phone): normalisation and keyed hashing. Pure, no I/O.

The hub never stores or logs an identifier in clear. It stores HMAC-SHA256, under the hub's
identity secret, of `<kind>:<normalised value>`: the kind is part of the message so that an
email and a phone number can never produce the same digest. A keyed hash rather than a plain
one because the space of phone numbers is small enough to enumerate: without the secret, a
copy of the database reveals nothing.

Normalisation rules (documented in docs/identity.md, and part of the contract: changing them
would split existing members from their identifiers):

- email: surrounding spaces removed; exactly one `@`; the whole address lower-cased (local
  parts are case-insensitive at every mainstream provider, and matching must not depend on how
  a cashier typed it); the domain converted to its IDNA ASCII form; no provider-specific
  rewriting (dots, `+tags`), because what is one mailbox at one provider is two at another.
- phone: E.164 only: `+`, a country code that does not start with 0, 8 to 15 digits in all.
  Spaces, hyphens, dots and parentheses between digits are ignored; a national number without
  `+` is refused rather than guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from enum import Enum

EMAIL_LENGTH_MAX = 254  # RFC 5321 path limit
EMAIL_LOCAL_LENGTH_MAX = 64
PHONE_INPUT_LENGTH_MAX = 32
IDENTITY_SECRET_BYTES_MIN = 32
KEY_ID_HEX_LENGTH = 16

_EMAIL_LOCAL_PATTERN = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.\-]+")
_DOMAIN_LABEL_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PHONE_SEPARATORS = re.compile(r"[ \-.()]")
_E164_PATTERN = re.compile(r"\+[1-9][0-9]{7,14}")


class IdentifierKind(Enum):
    EMAIL = "email"
    PHONE = "phone"


class IdentifierError(ValueError):
    """An identifier that cannot be normalised. The message never repeats the value."""


@dataclass(frozen=True)
class ContactIdentifier:
    """A normalised identifier. Held only in memory; `repr` hides the value."""

    kind: IdentifierKind
    normalised: str = field(repr=False)


def normalise_email(raw: str) -> ContactIdentifier:
    text = unicodedata.normalize("NFC", raw.strip())
    if not text or len(text) > EMAIL_LENGTH_MAX or not text.isprintable() or " " in text:
        raise IdentifierError("must be an email address of at most 254 printable characters")
    local, at, domain = text.rpartition("@")
    if not at or not local or "@" in local:
        raise IdentifierError("must contain exactly one @ between a local part and a domain")
    local = local.lower()
    if len(local) > EMAIL_LOCAL_LENGTH_MAX or not _EMAIL_LOCAL_PATTERN.fullmatch(local):
        raise IdentifierError("the local part has characters an address cannot hold")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise IdentifierError("the local part has a misplaced dot")
    ascii_domain = _ascii_domain(domain)
    normalised = f"{local}@{ascii_domain}"
    if len(normalised) > EMAIL_LENGTH_MAX:
        raise IdentifierError("must be at most 254 characters once normalised")
    return ContactIdentifier(IdentifierKind.EMAIL, normalised)


def _ascii_domain(domain: str) -> str:
    try:
        ascii_domain = domain.lower().encode("idna").decode("ascii")
    except UnicodeError as error:
        raise IdentifierError("the domain is not a valid internationalised name") from error
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL_PATTERN.fullmatch(label) for label in labels):
        raise IdentifierError("the domain must be a dotted host name such as example.com")
    return ascii_domain


def normalise_phone(raw: str) -> ContactIdentifier:
    if len(raw) > PHONE_INPUT_LENGTH_MAX:
        raise IdentifierError(f"must be at most {PHONE_INPUT_LENGTH_MAX} characters")
    compact = _PHONE_SEPARATORS.sub("", raw.strip())
    if not _E164_PATTERN.fullmatch(compact):
        raise IdentifierError(
            "must be an E.164 number: + then 8 to 15 digits, e.g. +1 202 555 0100"
        )
    return ContactIdentifier(IdentifierKind.PHONE, compact)


@dataclass(frozen=True)
class IdentifierHasher:
    """HMAC-SHA256 under the hub's identity secret. `repr` and `str` never show the secret."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < IDENTITY_SECRET_BYTES_MIN:
            raise ValueError(
                f"the identity secret needs at least {IDENTITY_SECRET_BYTES_MIN} bytes"
            )

    @property
    def key_id(self) -> str:
        """Names the secret without revealing it, so the hub can tell when it changed."""
        digest = hmac.new(self.secret, b"coalition identity key id", hashlib.sha256)
        return digest.hexdigest()[:KEY_ID_HEX_LENGTH]

    def digest(self, identifier: ContactIdentifier) -> str:
        message = f"{identifier.kind.value}:{identifier.normalised}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

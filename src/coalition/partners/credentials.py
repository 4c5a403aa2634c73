"""API keys: issued once, stored as SHA-256 of their secret, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from coalition.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from coalition.partners.catalog import get_partner
from coalition.store.schema import api_keys
from coalition.store.unit_of_work import UnitOfWork

API_KEY_PREFIX = "coal"
ROLES = ("partner", "merchant", "finance", "admin", "operations")
PARTNER_SCOPED_ROLES = ("partner", "merchant")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's role and, for partner-scoped roles, the partner."""

    key_id: str
    principal_id: str
    role: str
    partner_id: str | None


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    api_key: str  # shown once; only its hash is stored


def issue_key(uow: UnitOfWork, principal_id: str, role: str, now: datetime) -> IssuedKey:
    """Create an API key. Partner-scoped roles need a partner whose manifest allows the role."""
    if role not in ROLES:
        raise InvalidArgument([FieldViolation("role", f"must be one of {', '.join(ROLES)}")])
    with uow:
        partner_id = _partner_for_role(uow, principal_id, role)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        uow.connection.execute(
            insert(api_keys).values(
                key_id=key_id,
                principal_id=principal_id,
                partner_id=partner_id,
                role=role,
                secret_sha256=_sha256(secret),
                create_time=now,
            )
        )
        uow.commit()
    return IssuedKey(key_id=key_id, api_key=f"{API_KEY_PREFIX}_{key_id}_{secret}")


def revoke_key(uow: UnitOfWork, key_id: str, now: datetime) -> datetime:
    with uow:
        result = uow.connection.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoke_time.is_(None))
            .values(revoke_time=now)
        )
        if result.rowcount == 0:
            raise NotFound("API_KEY_NOT_FOUND", f"no active API key {key_id!r}", {"key_id": key_id})
        uow.commit()
    return now


def _partner_for_role(uow: UnitOfWork, principal_id: str, role: str) -> str | None:
    if role not in PARTNER_SCOPED_ROLES:
        return None
    partner = get_partner(uow, principal_id)
    if role not in partner.roles:
        raise FailedPrecondition(
            "ROLE_NOT_ALLOWED_FOR_PARTNER",
            f"partner {principal_id!r} may not hold role {role!r} (its manifest allows "
            f"{', '.join(partner.roles)})",
            {"partner_id": principal_id, "role": role},
        )
    return partner.partner_id


def authenticate(uow: UnitOfWork, api_key: str) -> Principal | None:
    """The principal of a valid, unrevoked key, or None. Never says which part was wrong."""
    prefix, _, rest = api_key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != API_KEY_PREFIX or not key_id or not secret:
        return None
    with uow:
        row = uow.connection.execute(
            select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoke_time.is_(None))
        ).one_or_none()
    # Compare even when the key id is unknown, so timing does not reveal which ids exist.
    expected = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(expected, _sha256(secret)) or row is None:
        return None
    return Principal(
        key_id=row.key_id, principal_id=row.principal_id, role=row.role, partner_id=row.partner_id
    )


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

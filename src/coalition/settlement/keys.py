"""The hub's statement signing keys: generate, rotate, publish.

Private keys live in files (`signing.py`); the database holds every public key with its
validity range, so statements signed by a retired key stay verifiable.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select, update

from coalition.domain.errors import FailedPrecondition
from coalition.settlement import signing
from coalition.store.schema import signing_keys
from coalition.store.unit_of_work import UnitOfWork

ALGORITHM = "ed25519"


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    algorithm: str
    public_key: bytes
    valid_from: datetime
    valid_until: datetime | None  # None: active


def generate(uow: UnitOfWork, path: Path, now: datetime) -> SigningKey:
    """The first key: written to `path` (owner-only) and published as the active key."""
    with uow:
        active = _active_keys(uow)
        if active:
            raise FailedPrecondition(
                "SIGNING_KEY_EXISTS",
                f"signing key {active[0]} is already active; use `coalition keys signing rotate`",
                {"key_id": active[0]},
            )
        private_key = signing.write_new_private_key(path)
        try:
            key = _publish(uow, private_key, now)
            uow.commit()
        except BaseException:
            path.unlink()  # an unpublished key could only sign unverifiable statements
            raise
    return key


def rotate(uow: UnitOfWork, path: Path, now: datetime) -> SigningKey:
    """Replace the key in `path` with a new one; the old public key stays published, retired.

    The new key is written beside the old file first, published and the old one retired in one
    transaction, and only then moved over the old file: a crash leaves either the old state or
    a spare file, never a published key whose private half is lost.
    """
    signing.load_private_key(path)  # the file being rotated must be a sound key
    spare_path = path.with_name(path.name + ".new")
    with uow:
        _active_keys(uow, lock=True)  # two rotations serialise here
        private_key = signing.write_new_private_key(spare_path)
        try:
            uow.connection.execute(
                update(signing_keys)
                .where(signing_keys.c.valid_until.is_(None))
                .values(valid_until=now)
            )
            key = _publish(uow, private_key, now)
            uow.commit()
        except BaseException:
            spare_path.unlink()
            raise
    os.replace(spare_path, path)
    return key


def list_keys(uow: UnitOfWork) -> list[SigningKey]:
    rows = uow.connection.execute(
        select(signing_keys).order_by(signing_keys.c.valid_from, signing_keys.c.key_id)
    )
    return [
        SigningKey(
            key_id=row.key_id,
            algorithm=row.algorithm,
            public_key=base64.b64decode(row.public_key),
            valid_from=row.valid_from,
            valid_until=row.valid_until,
        )
        for row in rows
    ]


def require_active(uow: UnitOfWork, key_id: str) -> None:
    """Refuse to sign with a key that is not the published active one (say, after a rotation
    by another process): nobody could verify what it signed against the published keys."""
    row = uow.connection.execute(
        select(signing_keys.c.valid_until).where(signing_keys.c.key_id == key_id)
    ).one_or_none()
    if row is None or row.valid_until is not None:
        raise FailedPrecondition(
            "SIGNING_KEY_NOT_ACTIVE",
            f"the hub's signing key {key_id} is not the active published key; "
            "restart the hub with the current key file",
            {"key_id": key_id},
        )


def _active_keys(uow: UnitOfWork, lock: bool = False) -> list[str]:
    statement = select(signing_keys.c.key_id).where(signing_keys.c.valid_until.is_(None))
    if lock:
        statement = statement.with_for_update()
    return list(uow.connection.execute(statement).scalars())


def _publish(uow: UnitOfWork, private_key: Ed25519PrivateKey, now: datetime) -> SigningKey:
    public_key = signing.raw_public_key(private_key)
    key = SigningKey(signing.key_id_of(public_key), ALGORITHM, public_key, now, None)
    uow.connection.execute(
        insert(signing_keys).values(
            key_id=key.key_id,
            algorithm=ALGORITHM,
            public_key=base64.b64encode(public_key).decode(),
            valid_from=now,
            valid_until=None,
        )
    )
    return key

"""The hub's identity secret: the HMAC key of contact identifiers.

Where it comes from (read at start into settings.IdentitySecretSource), first match wins:

1. `COALITION_IDENTITY_SECRET`: at least 32 bytes, as hex (for secret managers that inject
   environment variables);
2. `COALITION_IDENTITY_SECRET_FILE`: a file holding the hex secret, readable by its owner only;
3. for a SQLite ledger only, `<database file>.identity-key` next to it, generated on first use.

A PostgreSQL hub never generates one: several hosts each generating their own would key the
same email differently, and enrolment would silently create duplicates. The secret is never
logged, never stored in the database, and never shown by `repr`.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from sqlalchemy import Engine

from coalition.identity.identifiers import IDENTITY_SECRET_BYTES_MIN, IdentifierHasher
from coalition.settings import (
    SECRET_ENVIRONMENT_VARIABLE,
    SECRET_FILE_ENVIRONMENT_VARIABLE,
    IdentitySecretSource,
)

logger = logging.getLogger(__name__)

SQLITE_SECRET_FILE_SUFFIX = ".identity-key"
GENERATED_SECRET_BYTES = 32
SECRET_FILE_BYTES_MAX = 1024
SECRET_FILE_MODE = 0o600


class IdentitySecretError(RuntimeError):
    """The secret is missing or unusable. Messages name places, never the secret."""


def hasher_of(source: IdentitySecretSource, sqlite_database_path: Path | None) -> IdentifierHasher:
    """The hasher of the configured secret (see the module documentation for the order)."""
    if source.secret_hex is not None:
        return IdentifierHasher(_decode(source.secret_hex, "the variable"))
    if source.secret_file is not None:
        return IdentifierHasher(read_secret_file(source.secret_file))
    if sqlite_database_path is None:
        raise IdentitySecretError(
            f"set {SECRET_ENVIRONMENT_VARIABLE} or {SECRET_FILE_ENVIRONMENT_VARIABLE}: a "
            "PostgreSQL hub needs one identity secret shared by all of its hosts"
        )
    path = sqlite_database_path.with_name(sqlite_database_path.name + SQLITE_SECRET_FILE_SUFFIX)
    return IdentifierHasher(read_or_create_secret_file(path))


def hasher_for_engine(engine: Engine, source: IdentitySecretSource) -> IdentifierHasher:
    database = engine.url.database
    sqlite_path = (
        Path(database)
        if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        else None
    )
    return hasher_of(source, sqlite_path)


def read_or_create_secret_file(path: Path) -> bytes:
    """Read the secret file, creating it (mode 0600) with a fresh secret if it is missing.

    Creation is atomic: the secret is written to a private temporary file, then hard-linked
    to `path`, which fails if another process won the race; the loser reads the winner's file.
    """
    if not path.exists():
        _create_secret_file(path)
    return read_secret_file(path)


def read_secret_file(path: Path) -> bytes:
    try:
        status = path.stat()
        if status.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentitySecretError(
                f"identity secret file {path} is accessible to group or others; chmod 600 it"
            )
        with path.open("rb") as file:
            text = file.read(SECRET_FILE_BYTES_MAX).decode("ascii", errors="replace")
    except OSError as error:
        raise IdentitySecretError(
            f"cannot read identity secret file {path}: {error.strerror}"
        ) from None
    return _decode(text.strip(), f"file {path}")


def _create_secret_file(path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(GENERATED_SECRET_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
            logger.info("generated a new identity secret in %s", path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        temporary.unlink(missing_ok=True)


def _decode(text: str, where: str) -> bytes:
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise IdentitySecretError(f"the identity secret in {where} is not hexadecimal") from None
    if len(secret) < IDENTITY_SECRET_BYTES_MIN:
        raise IdentitySecretError(
            f"the identity secret in {where} has {len(secret)} bytes; "
            f"at least {IDENTITY_SECRET_BYTES_MIN} are needed"
        )
    return secret

"""The database schema, shared by SQLite and PostgreSQL (SQLAlchemy Core).

Member-scoped tables (accounts of members, lots, partner links) carry `member_id` so that they
can be distributed by member on a distributed PostgreSQL; partners and rate versions are small
reference tables. Times are stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

# Naming convention so that Alembic migrations name constraints the same on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
Identifier64 = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite keeps no time zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        assert value.tzinfo is not None, "naive datetimes never reach the database"
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


partners = Table(
    "partners",
    metadata,
    Column("partner_id", String(63), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(63), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("roles", String(200), nullable=False),  # comma-separated roles its keys may hold
    Column("points_validity_months", Integer, nullable=True),  # NULL: never expire
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
)

# Rates are exact decimals kept as text; a version is never changed once in force.
rate_versions = Table(
    "rate_versions",
    metadata,
    Column("rate_version_id", String(100), primary_key=True),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("effective_from", UtcDateTime, nullable=False),
    Column("earn_points_per_unit", String(40), nullable=False),
    Column("native_points_rate", String(40), nullable=True),
    Column("burn_value_minor_per_point", String(40), nullable=False),
    Column("issuance_price_minor_per_point", String(40), nullable=False),
    Column("redemption_price_minor_per_point", String(40), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    UniqueConstraint("partner_id", "effective_from"),
)

# API keys: `coal_<key_id>_<secret>`; only SHA-256 of the secret is stored. The secret has
# 256 bits of entropy, so a fast hash is enough (no password stretching needed).
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("principal_id", String(63), nullable=False),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=True),
    Column("role", String(16), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("revoke_time", UtcDateTime, nullable=True),
    CheckConstraint("role IN ('partner', 'merchant', 'finance', 'admin')", name="role"),
)

members = Table(
    "members",
    metadata,
    Column("member_id", String(40), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
)

partner_links = Table(
    "partner_links",
    metadata,
    Column("partner_id", ForeignKey("partners.partner_id"), primary_key=True),
    Column("partner_customer_id", String(128), primary_key=True),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Index(None, "member_id"),
)

# Ledger accounts. Only member accounts carry a balance cache (never negative, always equal
# to the sum of their postings). Partner accounts have none on purpose: a counter row that
# every request of a partner updated would serialise all of that partner's traffic.
accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(100), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("member_id", ForeignKey("members.member_id"), nullable=True),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=True),
    Column("balance_points", BigInteger, nullable=True),
    CheckConstraint(
        "(kind = 'member' AND member_id IS NOT NULL AND balance_points >= 0)"
        " OR (kind <> 'member' AND balance_points IS NULL)",
        name="balance_cache_of_members_only",
    ),
)

# Every business operation is one journal transaction of one of these kinds (DESIGN.md).
TRANSACTION_KINDS = ("earn", "burn", "reverse", "expire", "hold", "capture", "void", "merge")

journal_transactions = Table(
    "journal_transactions",
    metadata,
    Column("transaction_id", Identifier64, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("points_delta", BigInteger, nullable=False),  # for the member: + credit, - debit
    Column("balance_points_after", BigInteger, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("rate_version_id", ForeignKey("rate_versions.rate_version_id"), nullable=True),
    Column("parent_transaction_id", ForeignKey("journal_transactions.transaction_id")),
    Column("amount_minor", BigInteger, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("native_points", BigInteger, nullable=True),
    Column("partner_reference", String(128), nullable=True),
    Column("reason", String(256), nullable=True),
    CheckConstraint(
        f"kind IN ({', '.join(repr(kind) for kind in TRANSACTION_KINDS)})", name="kind"
    ),
    CheckConstraint("balance_points_after >= 0", name="balance_never_negative"),
    UniqueConstraint("partner_id", "request_id"),
    Index(None, "member_id", "transaction_id"),
    Index(None, "parent_transaction_id"),
)

# Double entry: the postings of one transaction sum to zero.
postings = Table(
    "postings",
    metadata,
    Column("posting_id", Identifier64, primary_key=True, autoincrement=True),
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=False),
    Column("account_id", ForeignKey("accounts.account_id"), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint("points <> 0", name="points_not_zero"),
    Index(None, "transaction_id"),
    Index(None, "account_id", "create_time"),
)

# Every earn creates a lot; burns consume lots earliest expiry first.
lots = Table(
    "lots",
    metadata,
    Column("lot_id", Identifier64, primary_key=True, autoincrement=True),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),  # issuer
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("remaining_points", BigInteger, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),  # NULL: never expires
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint("points > 0", name="points_positive"),
    CheckConstraint(
        "remaining_points >= 0 AND remaining_points <= points", name="remaining_within_points"
    ),
    UniqueConstraint("transaction_id"),
    Index(None, "member_id", "expires_at"),
)

# Which lots a burn used (so who funded the burned points), and what a reversal gave back
# (negative points).
lot_consumptions = Table(
    "lot_consumptions",
    metadata,
    Column("consumption_id", Identifier64, primary_key=True, autoincrement=True),
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=False),
    Column("lot_id", ForeignKey("lots.lot_id"), nullable=False),
    Column(
        "burn_transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=False
    ),
    Column("points", BigInteger, nullable=False),
    CheckConstraint("points <> 0", name="points_not_zero"),
    Index(None, "burn_transaction_id"),
    Index(None, "transaction_id"),
)

# AIP-155 request ids, claimed in the same database transaction as the work they guard.
# `fingerprint` is the canonical JSON of the request's meaningful fields, compared field by
# field on a retry. Kept indefinitely: the retention window is the life of the ledger.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("partner_id", ForeignKey("partners.partner_id"), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("operation", String(32), nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("result_id", String(100), nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
)

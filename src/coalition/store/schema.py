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
    Boolean,
    CheckConstraint,
    Column,
    Date,
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

from coalition.domain.occurrence import BACKDATING_DAYS_MAX_DEFAULT

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
        instant: datetime = value
        return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


partners = Table(
    "partners",
    metadata,
    Column("partner_id", String(63), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(63), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("roles", String(200), nullable=False),  # comma-separated roles its keys may hold
    Column("points_validity_months", Integer, nullable=True),  # NULL: never expire
    # How many days before now an operation's occurred_at may lie (migration 0009).
    Column(
        "backdating_days_max",
        Integer,
        nullable=False,
        server_default=str(BACKDATING_DAYS_MAX_DEFAULT),
    ),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    # Base64 raw Ed25519 key the partner countersigns settlement statements with (migration
    # 0003); NULL: the partner cannot acknowledge statements.
    Column("settlement_public_key", String(44), nullable=True),
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
    CheckConstraint(
        "role IN ('partner', 'merchant', 'finance', 'admin', 'operations')", name="role"
    ),
)

members = Table(
    "members",
    metadata,
    Column("member_id", String(40), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    # Identity (migration 0004): a merged member resolves to its survivor from then on; a
    # forgotten member keeps only its pseudonymous id and its ledger history.
    Column("merged_into_member_id", ForeignKey("members.member_id"), nullable=True),
    Column("forget_time", UtcDateTime, nullable=True),
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

# Partner and coalition accounts (migration 0012): reference data that no request updates.
# None carries a balance cache: a counter row that every request of a partner updated would
# serialise all of that partner's traffic; their totals come from postings.
accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(100), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=True),
)

# The accounts of one member (migration 0012): `member:<id>`, whose balance cache is never
# negative and always equal to the sum of its postings, and `member_hold:<id>`. Keyed by
# member first, so that every statement on them names the member (one shard on Citus).
member_accounts = Table(
    "member_accounts",
    metadata,
    Column("member_id", ForeignKey("members.member_id"), primary_key=True),
    Column("account_id", String(100), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("balance_points", BigInteger, nullable=True),
    CheckConstraint(
        "(kind = 'member' AND balance_points >= 0)"
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
    # The member of the transaction (migration 0011): every member-scoped row carries it, so
    # statements filter by member (docs/scaling.md). No foreign key: the journal row has it,
    # and a per-row trigger on the hottest table would cost every write.
    Column("member_id", String(40), nullable=False),
    # An account of `accounts` or of `member_accounts` (no foreign key since migration 0012:
    # it names one of two tables; the integrity proof checks that it exists).
    Column("account_id", String(100), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint("points <> 0", name="points_not_zero"),
    Index(None, "transaction_id"),
    Index(None, "account_id", "create_time"),
    Index(None, "member_id", "account_id"),
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
    Column("member_id", String(40), nullable=False),  # of the transaction (migration 0011)
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
    # A refused request's final answer (ledger/idempotency.py), as JSON; migration 0008.
    Column("refusal", Text, nullable=True),
    # The member whose rows the request writes ('' when none is known at the claim, as for an
    # enrolment), migration 0012: on Citus the key lives on that member's shard
    # (docs/scaling.md).
    Column("member_id", String(40), nullable=False, server_default=""),
)

# --- Unified identity (docs/identity.md), migration 0004 ---------------------------------

# Contact identifiers exist here only as HMAC-SHA256 under the hub's identity secret (never in
# clear); the digest is the key, so one identifier belongs to one member.
member_identifiers = Table(
    "member_identifiers",
    metadata,
    Column("identifier_hmac", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("key_id", String(16), nullable=False),  # names the secret, never reveals it
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint("kind IN ('email', 'phone')", name="kind"),
    Index(None, "member_id"),
)

# The id of the secret the identifiers were keyed with: a hub started with another secret
# would miss every existing identifier and enrol duplicates, so it refuses instead.
identifier_keys = Table(
    "identifier_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("create_time", UtcDateTime, nullable=False),
)

member_profiles = Table(
    "member_profiles",
    metadata,
    Column("member_id", ForeignKey("members.member_id"), primary_key=True),
    Column("birthday", Date, nullable=True),
    Column("preferences", Text, nullable=True),  # canonical JSON object of text to text
    Column("update_time", UtcDateTime, nullable=False),
)

CONSENT_SCOPES = (
    "profile.basic",
    "profile.tier",
    "profile.balance",
    "profile.preferences",
    "profile.birthday",
)
_CONSENT_SCOPES_CHECK = f"scope IN ({', '.join(repr(scope) for scope in CONSENT_SCOPES)})"

# What the member currently shares with each partner; `consent_events` is the history.
member_consents = Table(
    "member_consents",
    metadata,
    Column("member_id", ForeignKey("members.member_id"), primary_key=True),
    Column("partner_id", ForeignKey("partners.partner_id"), primary_key=True),
    Column("scope", String(32), primary_key=True),
    Column("granted", Boolean, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),  # when the member decided
    Column("source", String(128), nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    CheckConstraint(_CONSENT_SCOPES_CHECK, name="scope"),
)

consent_events = Table(
    "consent_events",
    metadata,
    Column("event_id", Identifier64, primary_key=True, autoincrement=True),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("scope", String(32), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("source", String(128), nullable=False),
    Column("request_id", String(128), nullable=True),  # NULL when carried over by a merge
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint(_CONSENT_SCOPES_CHECK, name="scope"),
    Index(None, "member_id", "event_id"),
    Index(None, "partner_id", "request_id"),
)

# Every profile read: who read which member, what was returned and what withheld.
profile_reads = Table(
    "profile_reads",
    metadata,
    Column("read_id", Identifier64, primary_key=True, autoincrement=True),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("scopes_returned", String(200), nullable=False),  # comma-separated
    Column("scopes_withheld", String(200), nullable=False),
    Column("read_time", UtcDateTime, nullable=False),
    Index(None, "member_id", "read_id"),
)

MEMBER_AUDIT_KINDS = ("merge", "forget", "export")

# Administrative acts on members. `request_id` makes merges and erasures idempotent per admin.
member_audit_events = Table(
    "member_audit_events",
    metadata,
    Column("event_id", Identifier64, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("related_member_id", ForeignKey("members.member_id"), nullable=True),
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=True),
    Column("points", BigInteger, nullable=True),
    Column("principal_id", String(63), nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("detail", Text, nullable=False),  # canonical JSON of counts, never personal data
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint(
        f"kind IN ({', '.join(repr(kind) for kind in MEMBER_AUDIT_KINDS)})", name="kind"
    ),
    UniqueConstraint("principal_id", "request_id"),
    Index(None, "member_id", "event_id"),
    Index(None, "related_member_id"),
)

# The partner requests that carried a member's personal data, so that erasing the member can
# also erase it from their idempotency fingerprints without scanning every request ever made.
member_requests = Table(
    "member_requests",
    metadata,
    Column("partner_id", ForeignKey("partners.partner_id"), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Index(None, "member_id"),
)

# --- Programme rules (docs/programme.md), migration 0005 ---------------------------------

# The expiry job walks lots that still hold points, by expiry instant; spent and expired lots
# (the vast majority over time) stay out of this partial index.
Index(
    "ix_lots_unspent_expires_at",
    lots.c.expires_at,
    lots.c.lot_id,
    postgresql_where=lots.c.remaining_points > 0,
    sqlite_where=lots.c.remaining_points > 0,
)

# One row per expiry transaction. A lot expires once per round: points given back to an
# already expired lot (a reversed burn) expire again in the next round, never twice in one.
lot_expiries = Table(
    "lot_expiries",
    metadata,
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), primary_key=True),
    Column("member_id", String(40), nullable=False),  # of the transaction (migration 0011)
    Column("lot_id", ForeignKey("lots.lot_id"), nullable=False),
    Column("expiry_round", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    CheckConstraint("points > 0", name="points_positive"),
    UniqueConstraint("lot_id", "expiry_round"),
)

HOLD_STATUSES = ("open", "captured", "voided", "expired")

# A hold is the journal transaction (kind 'hold') that moved points from member:<id> to
# member_hold:<id>; this row is its state. It closes once, by the transaction named here.
holds = Table(
    "holds",
    metadata,
    Column(
        "hold_transaction_id",
        ForeignKey("journal_transactions.transaction_id"),
        primary_key=True,
    ),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("points_held", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expire_time", UtcDateTime, nullable=False),
    Column("points_captured", BigInteger, nullable=True),
    Column("close_transaction_id", ForeignKey("journal_transactions.transaction_id")),
    Column("close_time", UtcDateTime, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint("points_held > 0", name="points_held_positive"),
    CheckConstraint(
        f"status IN ({', '.join(repr(status) for status in HOLD_STATUSES)})", name="status"
    ),
    CheckConstraint(
        "(status = 'open' AND close_transaction_id IS NULL)"
        " OR (status <> 'open' AND close_transaction_id IS NOT NULL)",
        name="closed_by_a_transaction",
    ),
    CheckConstraint(
        "(status = 'captured' AND points_captured > 0 AND points_captured <= points_held)"
        " OR (status <> 'captured' AND points_captured IS NULL)",
        name="captured_within_held",
    ),
    Index(None, "member_id", "status"),
)

# The hold TTL job looks only at open holds, by expiry instant.
Index(
    "ix_holds_open_expire_time",
    holds.c.expire_time,
    postgresql_where=holds.c.status == "open",
    sqlite_where=holds.c.status == "open",
)

# Qualifying points for tiers, per member and calendar month (year * 12 + month - 1): a
# rolling 12-month sum reads at most 12 rows, and only the member's own, already locked, row
# is written by an earn.
tier_qualifying_months = Table(
    "tier_qualifying_months",
    metadata,
    Column("member_id", ForeignKey("members.member_id"), primary_key=True),
    Column("calendar_month", Integer, primary_key=True),
    Column("points", BigInteger, nullable=False),
)

# The member's tier now, when above the base tier (no row: the base tier). Derived from
# tier_changes, which keeps the history.
member_tiers = Table(
    "member_tiers",
    metadata,
    Column("member_id", ForeignKey("members.member_id"), primary_key=True),
    Column("tier_id", String(32), nullable=False),
    Column("since", UtcDateTime, nullable=False),
)

TIER_CHANGE_CAUSES = ("earn", "review")

tier_changes = Table(
    "tier_changes",
    metadata,
    Column("tier_change_id", Identifier64, primary_key=True, autoincrement=True),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("tier_id_before", String(32), nullable=False),
    Column("tier_id_after", String(32), nullable=False),
    Column("qualifying_points", BigInteger, nullable=False),
    Column("cause", String(16), nullable=False),
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=True),
    Column("change_time", UtcDateTime, nullable=False),
    CheckConstraint(
        f"cause IN ({', '.join(repr(cause) for cause in TIER_CHANGE_CAUSES)})", name="cause"
    ),
    CheckConstraint("tier_id_before <> tier_id_after", name="changes_something"),
    Index(None, "member_id", "tier_change_id"),
)

# Which rule gave how many extra points on an earn: `tier:<id>` or `promotion:<id>`. NULL
# funding partner: the coalition funds it (posted against coalition:promotions, never billed).
earn_bonuses = Table(
    "earn_bonuses",
    metadata,
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), primary_key=True),
    Column("rule_id", String(80), primary_key=True),
    Column("member_id", String(40), nullable=False),  # of the transaction (migration 0011)
    Column("points", BigInteger, nullable=False),
    Column("funding_partner_id", ForeignKey("partners.partner_id"), nullable=True),
    CheckConstraint("points > 0", name="points_positive"),
)

EVENT_KINDS = (
    "earned",
    "burned",
    "reversed",
    "expired",
    "held",
    "captured",
    "voided",
    "merged",
    "tier_changed",
)

# The partner event stream (an outbox written in the same transaction as the ledger change).
# `commit_xid` is the writing PostgreSQL transaction's id (0 on SQLite, whose writers commit
# one at a time): readers only pass events of transactions older than every one still running,
# in (commit_xid, event_id) order, so a late commit can never be skipped.
events = Table(
    "events",
    metadata,
    Column("event_id", Identifier64, primary_key=True, autoincrement=True),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("commit_xid", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("member_id", ForeignKey("members.member_id"), nullable=False),
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=True),
    Column("tier_change_id", ForeignKey("tier_changes.tier_change_id"), nullable=True),
    Column("points_delta", BigInteger, nullable=True),
    Column("balance_points_after", BigInteger, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint(f"kind IN ({', '.join(repr(kind) for kind in EVENT_KINDS)})", name="kind"),
    Index(None, "partner_id", "commit_xid", "event_id"),
)

# --- Settlement (docs/settlement.md), migration 0003 --------------------------------------

# Public halves of the hub's statement signing keys. Retired keys stay here (with the end of
# their validity) so that statements they signed remain verifiable; private keys never are.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),  # hex SHA-256 of the raw public key
    Column("algorithm", String(16), nullable=False),
    Column("public_key", String(44), nullable=False),  # base64 of the raw 32-byte key
    Column("valid_from", UtcDateTime, nullable=False),
    Column("valid_until", UtcDateTime, nullable=True),  # NULL: the active key
    CheckConstraint("algorithm = 'ed25519'", name="algorithm"),
)

# One signed statement per partner and period, chained by `previous_statement_hash`. `body` is
# the exact canonical JSON that was hashed and signed; rows are never updated.
settlement_statements = Table(
    "settlement_statements",
    metadata,
    Column("statement_id", String(80), primary_key=True),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("sequence_number", BigInteger, nullable=False),  # 1 for the partner's first
    Column("period_last_day", Date, nullable=False),
    Column("period_end_time", UtcDateTime, nullable=False),  # exclusive: next day 00:00 UTC
    Column("generate_time", UtcDateTime, nullable=False),
    Column("entry_count", BigInteger, nullable=False),
    Column("merkle_root", String(64), nullable=False),
    Column("previous_statement_hash", String(64), nullable=False),
    Column("statement_hash", String(64), nullable=False),
    Column("signing_key_id", ForeignKey("signing_keys.key_id"), nullable=False),
    Column("signature", String(88), nullable=False),  # base64 Ed25519 signature
    Column("body", Text, nullable=False),
    UniqueConstraint("partner_id", "period_last_day"),
    UniqueConstraint("partner_id", "sequence_number"),
    UniqueConstraint("statement_hash"),
)

# Which journal transaction landed in which statement of each partner it touches. The primary
# key (partner_id, transaction_id) is what makes an entry land in one statement only. `points`
# is the signed sum of the transaction's postings on that partner's accounts. No foreign keys,
# on purpose: their per-row triggers were 40% of building a statement of a million entries,
# and the only writer (settlement/entries.py) inserts rows selected from postings, in the
# same transaction as the statement they name.
settlement_entries = Table(
    "settlement_entries",
    metadata,
    Column("partner_id", String(63), primary_key=True),
    Column("transaction_id", BigInteger, primary_key=True, autoincrement=False),
    Column("statement_id", String(80), nullable=False),
    Column("points", BigInteger, nullable=False),
    Index(None, "statement_id", "transaction_id"),
)

# A partner's countersignature over a statement hash, checked against the public key of its
# manifest at the time (kept here, so a later key change does not orphan the proof).
settlement_acknowledgements = Table(
    "settlement_acknowledgements",
    metadata,
    Column("statement_id", ForeignKey("settlement_statements.statement_id"), primary_key=True),
    Column("partner_public_key", String(44), nullable=False),
    Column("signature", String(88), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
)

# --- Reconciliation (docs/reconciliation.md), migration 0006 -----------------------------

# One comparison of a partner report with the ledger. The id is a hash of (partner, report
# content, requested window), so the same report submitted again is the same run.
reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("partner_id", ForeignKey("partners.partner_id"), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("report_format", String(8), nullable=False),
    Column("window_start", UtcDateTime, nullable=True),  # as requested; NULL: report's span
    Column("window_end", UtcDateTime, nullable=True),
    Column("match_window_start", UtcDateTime, nullable=True),  # as applied; NULL: empty report
    Column("match_window_end", UtcDateTime, nullable=True),
    Column("report_rows", BigInteger, nullable=False),
    Column("hub_operations", BigInteger, nullable=False),
    Column("matched", BigInteger, nullable=False),
    Column("mismatched", BigInteger, nullable=False),
    Column("missing_in_hub", BigInteger, nullable=False),
    Column("missing_in_partner", BigInteger, nullable=False),
    Column("duplicated", BigInteger, nullable=False),
    Column("principal_id", String(63), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    CheckConstraint("report_format IN ('csv', 'jsonl')", name="report_format"),
    Index(None, "partner_id", "create_time"),
)

RECONCILIATION_EXCEPTION_KINDS = (
    "missing_in_hub",
    "missing_in_partner",
    "mismatched",
    "duplicated",
)

# What a run found, one row per finding, with both sides' values side by side.
reconciliation_exceptions = Table(
    "reconciliation_exceptions",
    metadata,
    Column("exception_id", Identifier64, primary_key=True, autoincrement=True),
    Column("run_id", ForeignKey("reconciliation_runs.run_id"), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("line_number", BigInteger, nullable=True),  # first report line; NULL: not in report
    Column("report_occurrences", BigInteger, nullable=True),  # for duplicated
    Column("differing_fields", String(200), nullable=True),  # comma-separated, for mismatched
    Column("report_type", String(16), nullable=True),
    Column("report_points", BigInteger, nullable=True),
    Column("report_occurred_at", UtcDateTime, nullable=True),
    Column("report_partner_reference", String(128), nullable=True),
    Column("report_member", String(128), nullable=True),
    Column("report_amount_minor", BigInteger, nullable=True),
    Column("report_currency", String(3), nullable=True),
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), nullable=True),
    Column("hub_kind", String(16), nullable=True),
    Column("hub_points", BigInteger, nullable=True),
    Column("hub_occurred_at", UtcDateTime, nullable=True),
    Column("hub_partner_reference", String(128), nullable=True),
    Column("hub_member_id", String(40), nullable=True),
    Column("hub_amount_minor", BigInteger, nullable=True),
    Column("hub_currency", String(3), nullable=True),
    Column("resolve_time", UtcDateTime, nullable=True),
    Column("resolved_by", String(63), nullable=True),
    Column("resolution_note", String(1000), nullable=True),
    CheckConstraint(
        f"kind IN ({', '.join(repr(kind) for kind in RECONCILIATION_EXCEPTION_KINDS)})",
        name="kind",
    ),
    Index(None, "run_id", "exception_id"),
)

RECONCILIATION_JOB_STATUSES = ("running", "succeeded", "flagged", "failed", "abandoned")

# Every scheduled job run (reconcile, integrity): when it started and ended, and how.
reconciliation_jobs = Table(
    "reconciliation_jobs",
    metadata,
    Column("job_id", Identifier64, primary_key=True, autoincrement=True),
    Column("job_name", String(100), nullable=False),
    Column("holder", String(200), nullable=False),  # host:pid
    Column("status", String(16), nullable=False),
    Column("start_time", UtcDateTime, nullable=False),
    Column("end_time", UtcDateTime, nullable=True),
    Column("detail", String(1000), nullable=True),
    CheckConstraint(
        f"status IN ({', '.join(repr(status) for status in RECONCILIATION_JOB_STATUSES)})",
        name="status",
    ),
    Index(None, "job_name", "job_id"),
)

# At most one live lease per job name: the row is the lock, on both databases. An expired
# lease (its holder died) may be taken over.
reconciliation_leases = Table(
    "reconciliation_leases",
    metadata,
    Column("job_name", String(100), primary_key=True),
    Column("job_id", ForeignKey("reconciliation_jobs.job_id"), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# --- Referrals (docs/reports.md), migration 0007 ------------------------------------------

# A member's referral code, created when first asked for.
referral_codes = Table(
    "referral_codes",
    metadata,
    Column("member_id", ForeignKey("members.member_id"), primary_key=True),
    Column("referral_code", String(16), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    UniqueConstraint("referral_code"),
)

# Who referred a member (one referrer per member, recorded at enrolment), and the reward: NULL
# reward_time means pending; the earn path reads this row by its primary key only.
referrals = Table(
    "referrals",
    metadata,
    Column("referred_member_id", ForeignKey("members.member_id"), primary_key=True),
    Column("referrer_member_id", ForeignKey("members.member_id"), nullable=False),
    Column("referral_code", String(16), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("reward_time", UtcDateTime, nullable=True),
    Column("bonus_points", BigInteger, nullable=True),  # the referred member's
    # The referrer's bonus and the referral campaign that paid both (migration 0012; NULL
    # before it, when both sides got bonus_points under the environment's default).
    Column("referrer_bonus_points", BigInteger, nullable=True),
    Column("promotion_id", String(64), nullable=True),
    Column("qualifying_transaction_id", ForeignKey("journal_transactions.transaction_id")),
    Column("referred_transaction_id", ForeignKey("journal_transactions.transaction_id")),
    Column("referrer_transaction_id", ForeignKey("journal_transactions.transaction_id")),
    CheckConstraint("referred_member_id <> referrer_member_id", name="not_self"),
    Index(None, "referrer_member_id"),
    Index(None, "create_time"),
)

# Promotions as data (migration 0012, docs/promotions.md). The definition is canonical JSON of
# the rules (programme/promotion_codec.py), so a new rule is a new key, not a migration; the
# budget's counter is a column of the same row, moved by one guarded UPDATE under the row's
# lock (spent never passes the budget).
PROMOTION_STATES = ("active", "paused")
promotions = Table(
    "promotions",
    metadata,
    Column("promotion_id", String(64), primary_key=True),
    Column("owner_partner_id", ForeignKey("partners.partner_id"), nullable=True),  # NULL: hub
    Column("version", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("definition", Text, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),  # of the definition: which to load
    Column("budget_points", BigInteger, nullable=True),  # NULL: no budget
    Column("spent_points", BigInteger, nullable=False, default=0),
    # A budget in money (the currency is the definition's budget_currency, the funder's).
    Column("budget_amount_minor", BigInteger, nullable=True),  # NULL: no money budget
    Column("spent_amount_minor", BigInteger, nullable=False, default=0, server_default="0"),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    CheckConstraint(
        f"state IN ({', '.join(repr(state) for state in PROMOTION_STATES)})", name="state"
    ),
    CheckConstraint("spent_points >= 0", name="spent_not_negative"),
    CheckConstraint(
        "budget_points IS NULL OR spent_points <= budget_points", name="budget_not_overspent"
    ),
    CheckConstraint("spent_amount_minor >= 0", name="spent_amount_not_negative"),
    CheckConstraint(
        "budget_amount_minor IS NULL OR spent_amount_minor <= budget_amount_minor",
        name="budget_amount_not_overspent",
    ),
    Index(None, "owner_partner_id"),
    Index(None, "state", "ends_at"),
)

# Every version of every promotion, as it was written and by whom: the audit trail.
promotion_versions = Table(
    "promotion_versions",
    metadata,
    Column("promotion_id", ForeignKey("promotions.promotion_id"), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("change", String(16), nullable=False),  # create, update, pause, resume, seed
    Column("actor", String(128), nullable=False),  # the principal, or "seed:<file>"
    Column("request_id", String(128), nullable=True),
    Column("state", String(16), nullable=False),
    Column("definition", Text, nullable=False),
    Column("change_time", UtcDateTime, nullable=False),
    UniqueConstraint("promotion_id", "actor", "request_id"),
)

# One row: bumped by every change of any promotion, so that every hub process learns of a
# change with one primary-key read every few seconds (operations/promotion_catalogue.py).
promotion_catalogue = Table(
    "promotion_catalogue",
    metadata,
    Column("catalogue_id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# A member's grants of a promotion per cap period (the period as text, '' for the
# promotion's whole life): caps are checked and counted under the member's lock.
promotion_member_grants = Table(
    "promotion_member_grants",
    metadata,
    Column("promotion_id", String(64), primary_key=True),
    Column("member_id", String(40), primary_key=True),
    Column("cap_period", String(16), primary_key=True),
    Column("grants", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    CheckConstraint("grants > 0", name="grants_positive"),
)

# What each earn's grant of a budgeted or capped promotion used (migration 0017), so that a
# reversal of the earn gives back its share exactly (docs/promotions.md, "Reversals"). The
# earn's member, never moved by a merge (as the earn's journal row).
promotion_earn_grants = Table(
    "promotion_earn_grants",
    metadata,
    Column("transaction_id", ForeignKey("journal_transactions.transaction_id"), primary_key=True),
    Column("promotion_id", String(64), primary_key=True),
    Column("member_id", String(40), nullable=False),
    Column("cap_period", String(16), nullable=True),  # NULL: no member cap
    Column("points", BigInteger, nullable=False),  # the bonus
    Column("budget_points", BigInteger, nullable=False),  # of the points budget it spent
    Column("budget_amount_minor", BigInteger, nullable=False),  # of the money budget
    CheckConstraint("points > 0", name="points_positive"),
    CheckConstraint("budget_points >= 0", name="budget_points_not_negative"),
    CheckConstraint("budget_amount_minor >= 0", name="budget_amount_not_negative"),
)

# A partner's reported total sales of a day (migration 0016), every report kept: the
# highest version of a day is its total (a correction is the next version), the others are
# its audit trail. The contribution share's denominator (docs/reports.md).
partner_daily_sales = Table(
    "partner_daily_sales",
    metadata,
    Column("partner_id", ForeignKey("partners.partner_id"), primary_key=True),
    Column("sales_date", Date, primary_key=True),  # a UTC calendar day
    Column("version", BigInteger, primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("reported_by", String(128), nullable=False),  # the principal
    Column("report_time", UtcDateTime, nullable=False),
    CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    CheckConstraint("version > 0", name="version_positive"),
    UniqueConstraint("partner_id", "request_id"),
)

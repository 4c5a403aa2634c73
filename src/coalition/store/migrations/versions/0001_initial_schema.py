"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 11:41:09.806496
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "members",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_members")),
    )
    op.create_table(
        "partners",
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=63), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("roles", sa.String(length=200), nullable=False),
        sa.Column("points_validity_months", sa.Integer(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", name=op.f("pk_partners")),
    )
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=True),
        sa.Column("partner_id", sa.String(length=63), nullable=True),
        sa.Column("balance_points", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(kind = 'member' AND member_id IS NOT NULL AND balance_points >= 0) OR (kind <> 'member' AND partner_id IS NOT NULL AND balance_points IS NULL)",
            name=op.f("ck_accounts_balance_cache_of_members_only"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_accounts_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.partner_id"], name=op.f("fk_accounts_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("principal_id", sa.String(length=63), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('partner', 'merchant', 'finance', 'admin')", name=op.f("ck_api_keys_role")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.partner_id"], name=op.f("fk_api_keys_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("result_id", sa.String(length=100), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_idempotency_keys_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("partner_id", "request_id", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "partner_links",
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("partner_customer_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_partner_links_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_partner_links_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("partner_id", "partner_customer_id", name=op.f("pk_partner_links")),
    )
    with op.batch_alter_table("partner_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_partner_links_member_id"), ["member_id"], unique=False)

    op.create_table(
        "rate_versions",
        sa.Column("rate_version_id", sa.String(length=100), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("earn_points_per_unit", sa.String(length=40), nullable=False),
        sa.Column("native_points_rate", sa.String(length=40), nullable=True),
        sa.Column("burn_value_minor_per_point", sa.String(length=40), nullable=False),
        sa.Column("issuance_price_minor_per_point", sa.String(length=40), nullable=False),
        sa.Column("redemption_price_minor_per_point", sa.String(length=40), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_rate_versions_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("rate_version_id", name=op.f("pk_rate_versions")),
        sa.UniqueConstraint(
            "partner_id", "effective_from", name=op.f("uq_rate_versions_partner_id_effective_from")
        ),
    )
    op.create_table(
        "journal_transactions",
        sa.Column(
            "transaction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("points_delta", sa.BigInteger(), nullable=False),
        sa.Column("balance_points_after", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("rate_version_id", sa.String(length=100), nullable=True),
        sa.Column(
            "parent_transaction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("native_points", sa.BigInteger(), nullable=True),
        sa.Column("partner_reference", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.CheckConstraint(
            "kind IN ('earn', 'burn', 'reverse')", name=op.f("ck_journal_transactions_kind")
        ),
        sa.CheckConstraint(
            "balance_points_after >= 0", name=op.f("ck_journal_transactions_balance_never_negative")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
            name=op.f("fk_journal_transactions_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_journal_transactions_parent_transaction_id_journal_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_journal_transactions_partner_id_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["rate_version_id"],
            ["rate_versions.rate_version_id"],
            name=op.f("fk_journal_transactions_rate_version_id_rate_versions"),
        ),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_journal_transactions")),
        sa.UniqueConstraint(
            "partner_id", "request_id", name=op.f("uq_journal_transactions_partner_id_request_id")
        ),
    )
    with op.batch_alter_table("journal_transactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_journal_transactions_member_id_transaction_id"),
            ["member_id", "transaction_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_journal_transactions_parent_transaction_id"),
            ["parent_transaction_id"],
            unique=False,
        )

    op.create_table(
        "lots",
        sa.Column(
            "lot_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining_points", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_lots_points_positive")),
        sa.CheckConstraint(
            "remaining_points >= 0 AND remaining_points <= points",
            name=op.f("ck_lots_remaining_within_points"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_lots_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.partner_id"], name=op.f("fk_lots_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_lots_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_lots")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_lots_transaction_id")),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lots_member_id_expires_at"), ["member_id", "expires_at"], unique=False
        )

    op.create_table(
        "postings",
        sa.Column(
            "posting_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("account_id", sa.String(length=100), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points <> 0", name=op.f("ck_postings_points_not_zero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_postings_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_postings_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("posting_id", name=op.f("pk_postings")),
    )
    with op.batch_alter_table("postings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_postings_account_id_create_time"),
            ["account_id", "create_time"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_postings_transaction_id"), ["transaction_id"], unique=False
        )

    op.create_table(
        "lot_consumptions",
        sa.Column(
            "consumption_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "burn_transaction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points <> 0", name=op.f("ck_lot_consumptions_points_not_zero")),
        sa.ForeignKeyConstraint(
            ["burn_transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_lot_consumptions_burn_transaction_id_journal_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.lot_id"], name=op.f("fk_lot_consumptions_lot_id_lots")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_lot_consumptions_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("consumption_id", name=op.f("pk_lot_consumptions")),
    )
    with op.batch_alter_table("lot_consumptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lot_consumptions_burn_transaction_id"),
            ["burn_transaction_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_lot_consumptions_transaction_id"), ["transaction_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("lot_consumptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lot_consumptions_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_lot_consumptions_burn_transaction_id"))

    op.drop_table("lot_consumptions")
    with op.batch_alter_table("postings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_postings_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_postings_account_id_create_time"))

    op.drop_table("postings")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lots_member_id_expires_at"))

    op.drop_table("lots")
    with op.batch_alter_table("journal_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journal_transactions_parent_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_journal_transactions_member_id_transaction_id"))

    op.drop_table("journal_transactions")
    op.drop_table("rate_versions")
    with op.batch_alter_table("partner_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partner_links_member_id"))

    op.drop_table("partner_links")
    op.drop_table("idempotency_keys")
    op.drop_table("api_keys")
    op.drop_table("accounts")
    op.drop_table("partners")
    op.drop_table("members")

"""settlement: signing keys, signed statements, their entries, partner acknowledgements

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:30:00

`partners` gains its column through plain ADD COLUMN, not a batch copy: on SQLite a batch
would drop and recreate `partners`, which most tables reference.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "partners", sa.Column("settlement_public_key", sa.String(length=44), nullable=True)
    )
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.String(length=44), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("algorithm = 'ed25519'", name=op.f("ck_signing_keys_algorithm")),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "settlement_statements",
        sa.Column("statement_id", sa.String(length=80), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("sequence_number", sa.BigInteger(), nullable=False),
        sa.Column("period_last_day", sa.Date(), nullable=False),
        sa.Column("period_end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("generate_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_count", sa.BigInteger(), nullable=False),
        sa.Column("merkle_root", sa.String(length=64), nullable=False),
        sa.Column("previous_statement_hash", sa.String(length=64), nullable=False),
        sa.Column("statement_hash", sa.String(length=64), nullable=False),
        sa.Column("signing_key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=88), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_settlement_statements_partner_id_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["signing_key_id"],
            ["signing_keys.key_id"],
            name=op.f("fk_settlement_statements_signing_key_id_signing_keys"),
        ),
        sa.PrimaryKeyConstraint("statement_id", name=op.f("pk_settlement_statements")),
        sa.UniqueConstraint(
            "partner_id",
            "period_last_day",
            name=op.f("uq_settlement_statements_partner_id_period_last_day"),
        ),
        sa.UniqueConstraint(
            "partner_id",
            "sequence_number",
            name=op.f("uq_settlement_statements_partner_id_sequence_number"),
        ),
        sa.UniqueConstraint("statement_hash", name=op.f("uq_settlement_statements_statement_hash")),
    )
    op.create_table(
        "settlement_entries",
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("statement_id", sa.String(length=80), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "transaction_id", name=op.f("pk_settlement_entries")),
    )
    op.create_index(
        op.f("ix_settlement_entries_statement_id_transaction_id"),
        "settlement_entries",
        ["statement_id", "transaction_id"],
        unique=False,
    )
    op.create_table(
        "settlement_acknowledgements",
        sa.Column("statement_id", sa.String(length=80), nullable=False),
        sa.Column("partner_public_key", sa.String(length=44), nullable=False),
        sa.Column("signature", sa.String(length=88), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["settlement_statements.statement_id"],
            name=op.f("fk_settlement_acknowledgements_statement_id_settlement_statements"),
        ),
        sa.PrimaryKeyConstraint("statement_id", name=op.f("pk_settlement_acknowledgements")),
    )


def downgrade() -> None:
    op.drop_table("settlement_acknowledgements")
    op.drop_index(
        op.f("ix_settlement_entries_statement_id_transaction_id"), table_name="settlement_entries"
    )
    op.drop_table("settlement_entries")
    op.drop_table("settlement_statements")
    op.drop_table("signing_keys")
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("settlement_public_key")

"""referrals: referral codes and referrals with their coalition-funded reward

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 13:12:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_codes",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("referral_code", sa.String(length=16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
            name=op.f("fk_referral_codes_member_id_members"),
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_referral_codes")),
        sa.UniqueConstraint("referral_code", name=op.f("uq_referral_codes_referral_code")),
    )
    op.create_table(
        "referrals",
        sa.Column("referred_member_id", sa.String(length=40), nullable=False),
        sa.Column("referrer_member_id", sa.String(length=40), nullable=False),
        sa.Column("referral_code", sa.String(length=16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reward_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bonus_points", sa.BigInteger(), nullable=True),
        sa.Column(
            "qualifying_transaction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column(
            "referred_transaction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column(
            "referrer_transaction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.CheckConstraint(
            "referred_member_id <> referrer_member_id", name=op.f("ck_referrals_not_self")
        ),
        sa.ForeignKeyConstraint(
            ["referred_member_id"],
            ["members.member_id"],
            name=op.f("fk_referrals_referred_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["referrer_member_id"],
            ["members.member_id"],
            name=op.f("fk_referrals_referrer_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["qualifying_transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_referrals_qualifying_transaction_id_journal_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["referred_transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_referrals_referred_transaction_id_journal_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["referrer_transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_referrals_referrer_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("referred_member_id", name=op.f("pk_referrals")),
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_referrals_referrer_member_id"), ["referrer_member_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_referrals_create_time"), ["create_time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referrals_create_time"))
        batch_op.drop_index(batch_op.f("ix_referrals_referrer_member_id"))
    op.drop_table("referrals")
    op.drop_table("referral_codes")

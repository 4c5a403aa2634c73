"""Promotions as data: definitions with versions (the audit), a catalogue version every hub
process polls, per-member grants for caps, each promotion's budget counter, and which
referral campaign paid a referral

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotions",
        sa.Column("promotion_id", sa.String(64), primary_key=True),
        sa.Column(
            "owner_partner_id", sa.String(63), sa.ForeignKey("partners.partner_id"), nullable=True
        ),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("budget_points", sa.BigInteger, nullable=True),
        sa.Column("spent_points", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('active', 'paused')", name="state"),
        sa.CheckConstraint("spent_points >= 0", name="spent_not_negative"),
        sa.CheckConstraint(
            "budget_points IS NULL OR spent_points <= budget_points",
            name="budget_not_overspent",
        ),
    )
    op.create_index("ix_promotions_owner_partner_id", "promotions", ["owner_partner_id"])
    op.create_index("ix_promotions_state_ends_at", "promotions", ["state", "ends_at"])
    op.create_table(
        "promotion_versions",
        sa.Column(
            "promotion_id",
            sa.String(64),
            sa.ForeignKey("promotions.promotion_id"),
            primary_key=True,
        ),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("change_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("promotion_id", "actor", "request_id"),
    )
    op.create_table(
        "promotion_catalogue",
        sa.Column("catalogue_id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO promotion_catalogue (catalogue_id, version) VALUES (1, 0)")
    op.create_table(
        "promotion_member_grants",
        sa.Column("promotion_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(40), primary_key=True),
        sa.Column("cap_period", sa.String(16), primary_key=True),
        sa.Column("grants", sa.BigInteger, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.CheckConstraint("grants > 0", name="grants_positive"),
    )

    op.add_column("referrals", sa.Column("referrer_bonus_points", sa.BigInteger, nullable=True))
    op.add_column("referrals", sa.Column("promotion_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch:
        batch.drop_column("promotion_id")
        batch.drop_column("referrer_bonus_points")
    op.drop_table("promotion_member_grants")
    op.drop_table("promotion_catalogue")
    op.drop_table("promotion_versions")
    op.drop_index("ix_promotions_state_ends_at", "promotions")
    op.drop_index("ix_promotions_owner_partner_id", "promotions")
    op.drop_table("promotions")

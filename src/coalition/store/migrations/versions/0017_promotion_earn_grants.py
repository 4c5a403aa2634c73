"""what each earn's promotion grant used of a budget and a member cap, to give back on reversal

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 17:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotion_earn_grants",
        sa.Column(
            "transaction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("journal_transactions.transaction_id"),
            primary_key=True,
        ),
        sa.Column("promotion_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(40), nullable=False),
        sa.Column("cap_period", sa.String(16), nullable=True),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("budget_points", sa.BigInteger, nullable=False),
        sa.Column("budget_amount_minor", sa.BigInteger, nullable=False),
        sa.CheckConstraint("points > 0", name="points_positive"),
        sa.CheckConstraint("budget_points >= 0", name="budget_points_not_negative"),
        sa.CheckConstraint("budget_amount_minor >= 0", name="budget_amount_not_negative"),
    )


def downgrade() -> None:
    op.drop_table("promotion_earn_grants")

"""a promotion's budget in money at the funder's issuance price, spent exactly

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 15:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions") as batch:
        batch.add_column(sa.Column("budget_amount_minor", sa.BigInteger, nullable=True))
        batch.add_column(
            sa.Column("spent_amount_minor", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.create_check_constraint("spent_amount_not_negative", "spent_amount_minor >= 0")
        batch.create_check_constraint(
            "budget_amount_not_overspent",
            "budget_amount_minor IS NULL OR spent_amount_minor <= budget_amount_minor",
        )


def downgrade() -> None:
    with op.batch_alter_table("promotions") as batch:
        batch.drop_constraint(op.f("ck_promotions_budget_amount_not_overspent"), type_="check")
        batch.drop_constraint(op.f("ck_promotions_spent_amount_not_negative"), type_="check")
        batch.drop_column("spent_amount_minor")
        batch.drop_column("budget_amount_minor")

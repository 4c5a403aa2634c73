"""partners' reported total sales per day, versioned: the contribution share's denominator

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 17:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_daily_sales",
        sa.Column(
            "partner_id", sa.String(63), sa.ForeignKey("partners.partner_id"), primary_key=True
        ),
        sa.Column("sales_date", sa.Date, primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("reported_by", sa.String(128), nullable=False),
        sa.Column("report_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        sa.CheckConstraint("version > 0", name="version_positive"),
        sa.UniqueConstraint("partner_id", "request_id"),
    )


def downgrade() -> None:
    op.drop_table("partner_daily_sales")

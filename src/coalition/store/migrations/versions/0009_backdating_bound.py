"""backdating bound: how far before now a partner's occurred_at may lie

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00

Plain ADD COLUMN with a server default (no batch copy of `partners`, which most tables
reference): existing partners get the documented default until their manifest is synced.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BACKDATING_DAYS_MAX_DEFAULT = 7  # domain/occurrence.py, frozen here as this migration's value


def upgrade() -> None:
    op.add_column(
        "partners",
        sa.Column(
            "backdating_days_max",
            sa.Integer(),
            nullable=False,
            server_default=str(BACKDATING_DAYS_MAX_DEFAULT),
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("backdating_days_max")

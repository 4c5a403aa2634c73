"""member_id on every member-scoped ledger row: postings, lot consumptions, lot expiries and
earn bonuses carry the member of their journal transaction, so that every statement on them can
filter by member (one shard of a distributed PostgreSQL per member; docs/scaling.md)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 07:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

MEMBER_SCOPED_TABLES = ("postings", "lot_consumptions", "lot_expiries", "earn_bonuses")


def upgrade() -> None:
    for table in MEMBER_SCOPED_TABLES:
        op.add_column(table, sa.Column("member_id", sa.String(40), nullable=True))
        op.execute(
            f"UPDATE {table} SET member_id = (SELECT journal_transactions.member_id"
            " FROM journal_transactions"
            f" WHERE journal_transactions.transaction_id = {table}.transaction_id)"
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column("member_id", existing_type=sa.String(40), nullable=False)
    op.create_index("ix_postings_member_id_account_id", "postings", ["member_id", "account_id"])


def downgrade() -> None:
    op.drop_index("ix_postings_member_id_account_id", "postings")
    for table in MEMBER_SCOPED_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("member_id")

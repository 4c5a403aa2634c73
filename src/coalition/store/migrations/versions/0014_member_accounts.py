"""member accounts apart from partner and system accounts: `member_accounts` holds every
account of one member (`member:<id>` with its balance cache, `member_hold:<id>`), keyed by
(member_id, account_id); `accounts` keeps the partner and coalition accounts, which no request
updates. Idempotency keys name the member whose rows their request writes. So one earn, burn,
reverse or hold writes rows of one member only, plus reads of reference data: one shard on a
distributed PostgreSQL (docs/scaling.md). Postings name either kind of account, so their
foreign key to `accounts` goes (the integrity proof checks every posting's account).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 14:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_accounts",
        sa.Column("member_id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("balance_points", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(kind = 'member' AND balance_points >= 0)"
            " OR (kind <> 'member' AND balance_points IS NULL)",
            name=op.f("ck_member_accounts_balance_cache_of_members_only"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_member_accounts_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", "account_id", name=op.f("pk_member_accounts")),
    )
    op.execute(
        "INSERT INTO member_accounts (member_id, account_id, kind, balance_points)"
        " SELECT member_id, account_id, kind, balance_points FROM accounts"
        " WHERE member_id IS NOT NULL"
    )
    with op.batch_alter_table("postings") as batch:
        batch.drop_constraint(op.f("fk_postings_account_id_accounts"), type_="foreignkey")
    op.execute("DELETE FROM accounts WHERE member_id IS NOT NULL")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("ck_accounts_balance_cache_of_members_only"), type_="check")
        batch.drop_constraint(op.f("fk_accounts_member_id_members"), type_="foreignkey")
        batch.drop_column("member_id")
        batch.drop_column("balance_points")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("member_id", sa.String(40), nullable=False, server_default=""))
    # A key that has a journal transaction is kept with that transaction's member.
    op.execute(
        "UPDATE idempotency_keys SET member_id = (SELECT j.member_id FROM journal_transactions j"
        " WHERE j.partner_id = idempotency_keys.partner_id"
        " AND j.request_id = idempotency_keys.request_id)"
        " WHERE EXISTS (SELECT 1 FROM journal_transactions j"
        " WHERE j.partner_id = idempotency_keys.partner_id"
        " AND j.request_id = idempotency_keys.request_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("member_id")
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("member_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("balance_points", sa.BigInteger(), nullable=True))
    op.execute(
        "INSERT INTO accounts (account_id, kind, member_id, balance_points)"
        " SELECT account_id, kind, member_id, balance_points FROM member_accounts"
    )
    with op.batch_alter_table("accounts") as batch:
        batch.create_foreign_key(
            op.f("fk_accounts_member_id_members"), "members", ["member_id"], ["member_id"]
        )
        batch.create_check_constraint(
            op.f("ck_accounts_balance_cache_of_members_only"),
            "(kind = 'member' AND member_id IS NOT NULL AND balance_points >= 0)"
            " OR (kind <> 'member' AND balance_points IS NULL)",
        )
    with op.batch_alter_table("postings") as batch:
        batch.create_foreign_key(
            op.f("fk_postings_account_id_accounts"), "accounts", ["account_id"], ["account_id"]
        )
    op.drop_table("member_accounts")

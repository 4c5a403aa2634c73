"""widen journal kinds to every business operation; coalition-level accounts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 11:55:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KINDS_BEFORE = "kind IN ('earn', 'burn', 'reverse')"
KINDS_AFTER = "kind IN ('earn', 'burn', 'reverse', 'expire', 'hold', 'capture', 'void', 'merge')"
ACCOUNTS_BEFORE = (
    "(kind = 'member' AND member_id IS NOT NULL AND balance_points >= 0)"
    " OR (kind <> 'member' AND partner_id IS NOT NULL AND balance_points IS NULL)"
)
ACCOUNTS_AFTER = (
    "(kind = 'member' AND member_id IS NOT NULL AND balance_points >= 0)"
    " OR (kind <> 'member' AND balance_points IS NULL)"
)


def _replace_checks(kinds: str, accounts: str) -> None:
    with op.batch_alter_table("journal_transactions") as batch:
        batch.drop_constraint(op.f("ck_journal_transactions_kind"), type_="check")
        batch.create_check_constraint("kind", kinds)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("ck_accounts_balance_cache_of_members_only"), type_="check")
        batch.create_check_constraint("balance_cache_of_members_only", accounts)


def upgrade() -> None:
    _replace_checks(KINDS_AFTER, ACCOUNTS_AFTER)


def downgrade() -> None:
    _replace_checks(KINDS_BEFORE, ACCOUNTS_BEFORE)

"""the operations role: API keys that reconcile and resolve exceptions without finance's rights

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 14:00:00
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ROLES_BEFORE = "role IN ('partner', 'merchant', 'finance', 'admin')"
ROLES_AFTER = "role IN ('partner', 'merchant', 'finance', 'admin', 'operations')"


def _replace_check(roles: str) -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("ck_api_keys_role"), type_="check")
        batch.create_check_constraint("role", roles)


def upgrade() -> None:
    _replace_check(ROLES_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM api_keys WHERE role = 'operations'")
    _replace_check(ROLES_BEFORE)

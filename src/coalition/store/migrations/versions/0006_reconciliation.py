"""reconciliation: runs, exceptions, scheduled job records and leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 13:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_jobs",
        sa.Column(
            "job_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'flagged', 'failed', 'abandoned')",
            name=op.f("ck_reconciliation_jobs_status"),
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_reconciliation_jobs")),
    )
    with op.batch_alter_table("reconciliation_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reconciliation_jobs_job_name_job_id"),
            ["job_name", "job_id"],
            unique=False,
        )

    op.create_table(
        "reconciliation_leases",
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["reconciliation_jobs.job_id"],
            name=op.f("fk_reconciliation_leases_job_id_reconciliation_jobs"),
        ),
        sa.PrimaryKeyConstraint("job_name", name=op.f("pk_reconciliation_leases")),
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("report_format", sa.String(length=8), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("match_window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("match_window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("report_rows", sa.BigInteger(), nullable=False),
        sa.Column("hub_operations", sa.BigInteger(), nullable=False),
        sa.Column("matched", sa.BigInteger(), nullable=False),
        sa.Column("mismatched", sa.BigInteger(), nullable=False),
        sa.Column("missing_in_hub", sa.BigInteger(), nullable=False),
        sa.Column("missing_in_partner", sa.BigInteger(), nullable=False),
        sa.Column("duplicated", sa.BigInteger(), nullable=False),
        sa.Column("principal_id", sa.String(length=63), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "report_format IN ('csv', 'jsonl')", name=op.f("ck_reconciliation_runs_report_format")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_reconciliation_runs_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_reconciliation_runs")),
    )
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reconciliation_runs_partner_id_create_time"),
            ["partner_id", "create_time"],
            unique=False,
        )

    op.create_table(
        "reconciliation_exceptions",
        sa.Column(
            "exception_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("line_number", sa.BigInteger(), nullable=True),
        sa.Column("report_occurrences", sa.BigInteger(), nullable=True),
        sa.Column("differing_fields", sa.String(length=200), nullable=True),
        sa.Column("report_type", sa.String(length=16), nullable=True),
        sa.Column("report_points", sa.BigInteger(), nullable=True),
        sa.Column("report_occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("report_partner_reference", sa.String(length=128), nullable=True),
        sa.Column("report_member", sa.String(length=128), nullable=True),
        sa.Column("report_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("report_currency", sa.String(length=3), nullable=True),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("hub_kind", sa.String(length=16), nullable=True),
        sa.Column("hub_points", sa.BigInteger(), nullable=True),
        sa.Column("hub_occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hub_partner_reference", sa.String(length=128), nullable=True),
        sa.Column("hub_member_id", sa.String(length=40), nullable=True),
        sa.Column("hub_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("hub_currency", sa.String(length=3), nullable=True),
        sa.Column("resolve_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=63), nullable=True),
        sa.Column("resolution_note", sa.String(length=1000), nullable=True),
        sa.CheckConstraint(
            "kind IN ('missing_in_hub', 'missing_in_partner', 'mismatched', 'duplicated')",
            name=op.f("ck_reconciliation_exceptions_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_runs.run_id"],
            name=op.f("fk_reconciliation_exceptions_run_id_reconciliation_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_reconciliation_exceptions_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("exception_id", name=op.f("pk_reconciliation_exceptions")),
    )
    with op.batch_alter_table("reconciliation_exceptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reconciliation_exceptions_run_id_exception_id"),
            ["run_id", "exception_id"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("reconciliation_exceptions")
    op.drop_table("reconciliation_runs")
    op.drop_table("reconciliation_leases")
    op.drop_table("reconciliation_jobs")

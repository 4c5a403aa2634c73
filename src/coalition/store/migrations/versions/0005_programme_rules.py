"""programme rules: lot expiries, burn holds, tiers, earn bonuses, the partner event stream

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:30:00

New tables only, plus two partial indexes (unspent lots by expiry, open holds by expiry) that
the expiry and hold-release jobs walk. Indexes are created with plain CREATE INDEX, never a
batch copy: on SQLite a batch would recreate `lots`, which other tables reference.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Identifier64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "member_tiers",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("tier_id", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_member_tiers_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_tiers")),
    )
    op.create_table(
        "tier_qualifying_months",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("calendar_month", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
            name=op.f("fk_tier_qualifying_months_member_id_members"),
        ),
        sa.PrimaryKeyConstraint(
            "member_id", "calendar_month", name=op.f("pk_tier_qualifying_months")
        ),
    )
    op.create_table(
        "earn_bonuses",
        sa.Column("transaction_id", Identifier64, nullable=False),
        sa.Column("rule_id", sa.String(length=80), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("funding_partner_id", sa.String(length=63), nullable=True),
        sa.CheckConstraint("points > 0", name=op.f("ck_earn_bonuses_points_positive")),
        sa.ForeignKeyConstraint(
            ["funding_partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_earn_bonuses_funding_partner_id_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_earn_bonuses_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("transaction_id", "rule_id", name=op.f("pk_earn_bonuses")),
    )
    op.create_table(
        "holds",
        sa.Column("hold_transaction_id", Identifier64, nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("points_held", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points_captured", sa.BigInteger(), nullable=True),
        sa.Column("close_transaction_id", Identifier64, nullable=True),
        sa.Column("close_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status = 'captured' AND points_captured > 0 AND points_captured <= points_held) OR (status <> 'captured' AND points_captured IS NULL)",
            name=op.f("ck_holds_captured_within_held"),
        ),
        sa.CheckConstraint(
            "(status = 'open' AND close_transaction_id IS NULL) OR (status <> 'open' AND close_transaction_id IS NOT NULL)",
            name=op.f("ck_holds_closed_by_a_transaction"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'captured', 'voided', 'expired')", name=op.f("ck_holds_status")
        ),
        sa.CheckConstraint("points_held > 0", name=op.f("ck_holds_points_held_positive")),
        sa.ForeignKeyConstraint(
            ["close_transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_holds_close_transaction_id_journal_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["hold_transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_holds_hold_transaction_id_journal_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_holds_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.partner_id"], name=op.f("fk_holds_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("hold_transaction_id", name=op.f("pk_holds")),
    )
    op.create_index(
        op.f("ix_holds_member_id_status"), "holds", ["member_id", "status"], unique=False
    )
    op.create_index(
        "ix_holds_open_expire_time",
        "holds",
        ["expire_time"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "tier_changes",
        sa.Column("tier_change_id", Identifier64, autoincrement=True, nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("tier_id_before", sa.String(length=32), nullable=False),
        sa.Column("tier_id_after", sa.String(length=32), nullable=False),
        sa.Column("qualifying_points", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", Identifier64, nullable=True),
        sa.Column("change_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("cause IN ('earn', 'review')", name=op.f("ck_tier_changes_cause")),
        sa.CheckConstraint(
            "tier_id_before <> tier_id_after", name=op.f("ck_tier_changes_changes_something")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_tier_changes_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_tier_changes_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("tier_change_id", name=op.f("pk_tier_changes")),
    )
    op.create_index(
        op.f("ix_tier_changes_member_id_tier_change_id"),
        "tier_changes",
        ["member_id", "tier_change_id"],
        unique=False,
    )
    op.create_table(
        "events",
        sa.Column("event_id", Identifier64, autoincrement=True, nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("commit_xid", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("transaction_id", Identifier64, nullable=True),
        sa.Column("tier_change_id", Identifier64, nullable=True),
        sa.Column("points_delta", sa.BigInteger(), nullable=True),
        sa.Column("balance_points_after", sa.BigInteger(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('earned', 'burned', 'reversed', 'expired', 'held', 'captured', 'voided', 'merged', 'tier_changed')",
            name=op.f("ck_events_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_events_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.partner_id"], name=op.f("fk_events_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["tier_change_id"],
            ["tier_changes.tier_change_id"],
            name=op.f("fk_events_tier_change_id_tier_changes"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_events_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_events")),
    )
    op.create_index(
        op.f("ix_events_partner_id_commit_xid_event_id"),
        "events",
        ["partner_id", "commit_xid", "event_id"],
        unique=False,
    )
    op.create_table(
        "lot_expiries",
        sa.Column("transaction_id", Identifier64, nullable=False),
        sa.Column("lot_id", Identifier64, nullable=False),
        sa.Column("expiry_round", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_lot_expiries_points_positive")),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lots.lot_id"], name=op.f("fk_lot_expiries_lot_id_lots")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_lot_expiries_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_lot_expiries")),
        sa.UniqueConstraint(
            "lot_id", "expiry_round", name=op.f("uq_lot_expiries_lot_id_expiry_round")
        ),
    )
    op.create_index(
        "ix_lots_unspent_expires_at",
        "lots",
        ["expires_at", "lot_id"],
        unique=False,
        postgresql_where=sa.text("remaining_points > 0"),
        sqlite_where=sa.text("remaining_points > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_lots_unspent_expires_at", table_name="lots")
    op.drop_table("lot_expiries")
    op.drop_index(op.f("ix_events_partner_id_commit_xid_event_id"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_tier_changes_member_id_tier_change_id"), table_name="tier_changes")
    op.drop_table("tier_changes")
    op.drop_index("ix_holds_open_expire_time", table_name="holds")
    op.drop_index(op.f("ix_holds_member_id_status"), table_name="holds")
    op.drop_table("holds")
    op.drop_table("earn_bonuses")
    op.drop_table("tier_qualifying_months")
    op.drop_table("member_tiers")

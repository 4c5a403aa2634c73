"""unified identity: keyed identifiers, profiles, consent, profile reads, member audit

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:01:06.862640

`members` gains its two columns through plain ADD COLUMN, not a batch copy: on SQLite a batch
would drop and recreate `members`, which every member-scoped table references, and that drop
fails on a populated ledger. SQLite accepts ADD COLUMN with an inline REFERENCES clause when
the column defaults to NULL. The downgrade does need a batch copy of `members` on SQLite, so it
only succeeds there while no other table references a member (PostgreSQL has no such limit).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identifier_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_identifier_keys")),
    )
    op.create_table(
        "consent_events",
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "scope IN ('profile.basic', 'profile.tier', 'profile.balance', 'profile.preferences', 'profile.birthday')",
            name=op.f("ck_consent_events_scope"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_consent_events_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_consent_events_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_consent_events")),
    )
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_events_member_id_event_id"),
            ["member_id", "event_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_consent_events_partner_id_request_id"),
            ["partner_id", "request_id"],
            unique=False,
        )

    op.create_table(
        "member_consents",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "scope IN ('profile.basic', 'profile.tier', 'profile.balance', 'profile.preferences', 'profile.birthday')",
            name=op.f("ck_member_consents_scope"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_member_consents_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_member_consents_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint(
            "member_id", "partner_id", "scope", name=op.f("pk_member_consents")
        ),
    )
    op.create_table(
        "member_identifiers",
        sa.Column("identifier_hmac", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('email', 'phone')", name=op.f("ck_member_identifiers_kind")),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
            name=op.f("fk_member_identifiers_member_id_members"),
        ),
        sa.PrimaryKeyConstraint("identifier_hmac", name=op.f("pk_member_identifiers")),
    )
    with op.batch_alter_table("member_identifiers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_member_identifiers_member_id"), ["member_id"], unique=False
        )

    op.create_table(
        "member_profiles",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("preferences", sa.Text(), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_member_profiles_member_id_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_profiles")),
    )
    op.create_table(
        "member_requests",
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_member_requests_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_member_requests_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("partner_id", "request_id", name=op.f("pk_member_requests")),
    )
    with op.batch_alter_table("member_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_member_requests_member_id"), ["member_id"], unique=False
        )

    op.create_table(
        "profile_reads",
        sa.Column(
            "read_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("scopes_returned", sa.String(length=200), nullable=False),
        sa.Column("scopes_withheld", sa.String(length=200), nullable=False),
        sa.Column("read_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.member_id"], name=op.f("fk_profile_reads_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
            name=op.f("fk_profile_reads_partner_id_partners"),
        ),
        sa.PrimaryKeyConstraint("read_id", name=op.f("pk_profile_reads")),
    )
    with op.batch_alter_table("profile_reads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_profile_reads_member_id_read_id"), ["member_id", "read_id"], unique=False
        )

    op.create_table(
        "member_audit_events",
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("related_member_id", sa.String(length=40), nullable=True),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("points", sa.BigInteger(), nullable=True),
        sa.Column("principal_id", sa.String(length=63), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('merge', 'forget', 'export')", name=op.f("ck_member_audit_events_kind")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
            name=op.f("fk_member_audit_events_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["related_member_id"],
            ["members.member_id"],
            name=op.f("fk_member_audit_events_related_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.transaction_id"],
            name=op.f("fk_member_audit_events_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_member_audit_events")),
        sa.UniqueConstraint(
            "principal_id",
            "request_id",
            name=op.f("uq_member_audit_events_principal_id_request_id"),
        ),
    )
    with op.batch_alter_table("member_audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_member_audit_events_member_id_event_id"),
            ["member_id", "event_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_member_audit_events_related_member_id"),
            ["related_member_id"],
            unique=False,
        )

    _add_merged_into_column()
    op.add_column("members", sa.Column("forget_time", sa.DateTime(timezone=True), nullable=True))


MERGED_INTO_FOREIGN_KEY = "fk_members_merged_into_member_id_members"


def _add_merged_into_column() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Alembic would add the foreign key separately, which SQLite cannot do in place.
        op.execute(
            "ALTER TABLE members ADD COLUMN merged_into_member_id VARCHAR(40)"
            f" CONSTRAINT {MERGED_INTO_FOREIGN_KEY} REFERENCES members (member_id)"
        )
        return
    op.add_column(
        "members",
        sa.Column(
            "merged_into_member_id",
            sa.String(length=40),
            sa.ForeignKey("members.member_id", name=MERGED_INTO_FOREIGN_KEY),
            nullable=True,
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        # SQLite keeps an inline foreign key unnamed; the batch copy drops it with the column.
        if op.get_bind().dialect.name != "sqlite":
            batch_op.drop_constraint(MERGED_INTO_FOREIGN_KEY, type_="foreignkey")
        batch_op.drop_column("forget_time")
        batch_op.drop_column("merged_into_member_id")

    with op.batch_alter_table("member_audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_audit_events_related_member_id"))
        batch_op.drop_index(batch_op.f("ix_member_audit_events_member_id_event_id"))

    op.drop_table("member_audit_events")
    with op.batch_alter_table("profile_reads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profile_reads_member_id_read_id"))

    op.drop_table("profile_reads")
    with op.batch_alter_table("member_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_requests_member_id"))

    op.drop_table("member_requests")
    op.drop_table("member_profiles")
    with op.batch_alter_table("member_identifiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_identifiers_member_id"))

    op.drop_table("member_identifiers")
    op.drop_table("member_consents")
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_events_partner_id_request_id"))
        batch_op.drop_index(batch_op.f("ix_consent_events_member_id_event_id"))

    op.drop_table("consent_events")
    op.drop_table("identifier_keys")

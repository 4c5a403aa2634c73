"""hub-initiated transactions: re-home referral bonuses and merges made before 0010

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 07:10:00

Referral bonuses used to be recorded under the earning partner with the request id
`referral:<member>:<role>` (no idempotency key: `coalition reconcile integrity` failed for
ever, reconciliation called them missing in partner, the partner's stream carried the
referrer's balance). They are hub-initiated (domain/hub_partner.py): this moves them, and
their events, under the hub's pseudo-partner with `hub/referral/<member>/<role>`, and gives
merges their `hub/merge/<member>` id. Only the bookkeeping columns change; postings, lots
and balances stay as they are. Matched on the bonus's reason as well as its id, so that a
partner's own request that happens to look like one is left alone.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

HUB_PARTNER_ID = "coalition-hub"  # frozen here: domain/hub_partner.py at this revision
BONUSES = """
    request_id LIKE 'referral:%'
    AND reason IN ('referral bonus (referred), coalition-funded',
                   'referral bonus (referrer), coalition-funded')
    AND partner_id <> :hub
"""


def rehome(connection: sa.Connection) -> None:
    hub = {"hub": HUB_PARTNER_ID}
    connection.execute(
        sa.text(
            "UPDATE journal_transactions SET request_id = 'hub/merge/' || SUBSTR(request_id, 7) "
            "WHERE partner_id = :hub AND kind = 'merge' AND request_id LIKE 'merge:%'"
        ),
        hub,
    )
    first_bonus_time = connection.execute(
        sa.text("SELECT MIN(create_time) FROM journal_transactions WHERE " + BONUSES), hub
    ).scalar_one()
    if first_bonus_time is None:
        return
    hub_exists = connection.execute(
        sa.text("SELECT COUNT(*) FROM partners WHERE partner_id = :hub"), hub
    ).scalar_one()
    if not hub_exists:
        connection.execute(
            sa.text(
                "INSERT INTO partners (partner_id, name, kind, currency, roles, "
                "points_validity_months, create_time, update_time) VALUES (:hub, "
                "'Coalition hub (hub-initiated transactions)', 'hub', 'XXX', '', NULL, "
                ":time, :time)"
            ),
            {**hub, "time": first_bonus_time},
        )
    connection.execute(
        sa.text(
            "UPDATE events SET partner_id = :hub WHERE transaction_id IN "
            "(SELECT transaction_id FROM journal_transactions WHERE " + BONUSES + ")"
        ),
        hub,
    )
    connection.execute(
        sa.text(
            "UPDATE journal_transactions SET partner_id = :hub, "
            "request_id = 'hub/' || REPLACE(request_id, ':', '/') WHERE " + BONUSES
        ),
        hub,
    )


def upgrade() -> None:
    rehome(op.get_bind())


def downgrade() -> None:
    pass  # the old form was the defect; nothing to restore

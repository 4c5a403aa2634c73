"""Accounts the programme rules post to, created on first use.

| account | kind | what it holds |
|---|---|---|
| `member_hold:<member>` | member_hold | points of the member's open holds |
| `partner:<p>:breakage` | partner_breakage | expired points of lots partner p issued |
| `coalition:promotions` | coalition_promotions | coalition-funded bonuses (tier and promotions) |

None has a balance cache (only `member:<id>` accounts do); their totals come from postings.
Member hold accounts live in `member_accounts` with the member's other rows, the others in
`accounts` (reference data, created once).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from coalition.domain.hub_partner import HUB_PARTNER_ID, HUB_PARTNER_ROW
from coalition.store.schema import accounts, member_accounts, partners
from coalition.store.unit_of_work import UnitOfWork

MEMBER_HOLD = "member_hold"
PARTNER_BREAKAGE = "partner_breakage"
COALITION_PROMOTIONS = "coalition_promotions"
COALITION_PROMOTIONS_ACCOUNT_ID = "coalition:promotions"


def member_hold_account_id(member_id: str) -> str:
    return f"member_hold:{member_id}"


def partner_breakage_account_id(partner_id: str) -> str:
    return f"partner:{partner_id}:breakage"


def ensure_member_hold_account(uow: UnitOfWork, member_id: str) -> str:
    account_id = member_hold_account_id(member_id)
    row = {"account_id": account_id, "kind": MEMBER_HOLD, "member_id": member_id}
    _ensure(uow, row, member_accounts)
    return account_id


def ensure_partner_breakage_account(uow: UnitOfWork, partner_id: str) -> str:
    account_id = partner_breakage_account_id(partner_id)
    _ensure(uow, {"account_id": account_id, "kind": PARTNER_BREAKAGE, "partner_id": partner_id})
    return account_id


def ensure_coalition_promotions_account(uow: UnitOfWork) -> str:
    _ensure(uow, {"account_id": COALITION_PROMOTIONS_ACCOUNT_ID, "kind": COALITION_PROMOTIONS})
    return COALITION_PROMOTIONS_ACCOUNT_ID


def ensure_hub_partner(uow: UnitOfWork, now: datetime) -> str:
    """The pseudo-partner of hub-initiated transactions (domain/hub_partner.py)."""
    dialect = postgresql if uow.dialect_name == "postgresql" else sqlite
    row = {**HUB_PARTNER_ROW, "create_time": now, "update_time": now}
    uow.connection.execute(dialect.insert(partners).values(row).on_conflict_do_nothing())
    return HUB_PARTNER_ID


def _ensure(uow: UnitOfWork, row: dict[str, str], table: Table = accounts) -> None:
    # ON CONFLICT DO NOTHING takes no lock on an existing row, so concurrent requests that
    # find the account already there never wait on each other.
    dialect = postgresql if uow.dialect_name == "postgresql" else sqlite
    uow.connection.execute(dialect.insert(table).values(row).on_conflict_do_nothing())

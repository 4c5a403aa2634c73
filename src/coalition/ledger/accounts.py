"""Ledger account identifiers. Every posting names one of these accounts."""

from __future__ import annotations

MEMBER = "member"
PARTNER_ISSUANCE = "partner_issuance"  # debited when a partner issues points
PARTNER_REDEMPTION = "partner_redemption"  # credited when points are redeemed at a partner


def member_account_id(member_id: str) -> str:
    return f"member:{member_id}"


def partner_issuance_account_id(partner_id: str) -> str:
    return f"partner:{partner_id}:issuance"


def partner_redemption_account_id(partner_id: str) -> str:
    return f"partner:{partner_id}:redemption"

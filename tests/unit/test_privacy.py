"""The privacy rule's scope decision, without a database (identity/privacy.py)."""

from __future__ import annotations

import pytest

from coalition.identity.privacy import Withholding, scopes_in_force
from coalition.store.schema import CONSENT_SCOPES

pytestmark = pytest.mark.unit

NOT_GRANTED, REVOKED = Withholding.NOT_GRANTED, Withholding.REVOKED


def test_a_link_alone_shares_the_balance_and_nothing_else() -> None:
    granted, withheld = scopes_in_force(linked=True, decisions={})
    assert granted == ("profile.balance",)
    assert dict(withheld) == dict.fromkeys(set(CONSENT_SCOPES) - {"profile.balance"}, NOT_GRANTED)


def test_the_members_decisions_decide_for_a_linked_partner() -> None:
    granted, withheld = scopes_in_force(
        linked=True, decisions={"profile.balance": False, "profile.tier": True}
    )
    assert granted == ("profile.tier",)
    assert dict(withheld)["profile.balance"] == REVOKED


def test_an_unlinked_partner_sees_no_scope_whatever_was_decided_for_it() -> None:
    everything = dict.fromkeys(CONSENT_SCOPES, True)
    granted, withheld = scopes_in_force(linked=False, decisions=everything)
    assert granted == ()
    assert dict(withheld) == dict.fromkeys(CONSENT_SCOPES, NOT_GRANTED)

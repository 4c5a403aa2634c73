"""The hub's own pseudo-partner, and what a hub-initiated transaction is.

Journal transactions name a partner. A **hub-initiated** transaction is one no partner asked
for and no partner pays for: member merges and referral bonuses. It is recorded under this
pseudo-partner, so that it is in no partner's request-id namespace, idempotency keys,
transaction list, event stream, reconciliation or settlement, and the reports count it apart
from the partners' earns (docs/programme.md). This partner has no accounts, rates or keys,
and is never listed, settled or declared in a manifest.

Every request id the hub makes itself starts with `hub/`: '/' is outside the request ids the
API accepts (api/requests.py), so no partner can ever send one. Expiries and hold releases
are also made by the hub but recorded under the partner whose accounts they post to (a
partner's breakage and redemption are its business), with such ids.
"""

HUB_PARTNER_ID = "coalition-hub"
HUB_PARTNER_KIND = "hub"
HUB_REQUEST_ID_PREFIX = "hub/"
HUB_PARTNER_ROW = {
    "partner_id": HUB_PARTNER_ID,
    "name": "Coalition hub (hub-initiated transactions)",
    "kind": HUB_PARTNER_KIND,
    "currency": "XXX",  # ISO 4217: no currency involved
    "roles": "",
    "points_validity_months": None,
}


def hub_request_id(*parts: str) -> str:
    """A request id only the hub can make: `hub/<part>/<part>...`."""
    return HUB_REQUEST_ID_PREFIX + "/".join(parts)

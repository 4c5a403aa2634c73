"""The hub's own pseudo-partner.

Journal transactions name a partner, and hub-internal operations (member merges) belong to
none. This partner has no accounts, rates or keys, and is never listed, settled or declared in
a manifest.
"""

HUB_PARTNER_ID = "coalition-hub"
HUB_PARTNER_KIND = "hub"

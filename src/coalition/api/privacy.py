"""The privacy rule (identity/privacy.py) at the door: every servicer that names a member or
returns a member's data goes through one `MemberPrivacy` of its caller (the identity use cases
GetMemberProfile and UpdateConsent apply `privacy.require` inside their own unit of work, and
the event stream filters each batch with `privacy.sights` in the unit of work that read it).

Requests are checked before the service function runs (`require`), in a short read-only unit
of work of their own; answers are filtered after it (`balance_visible`), so the ledger's write
path needs no knowledge of who may see what. A decision that changes in between takes effect
on the next call, as a revocation does for profiles.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from coalition.identity import privacy
from coalition.identity.members import MemberReference
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class MemberPrivacy:
    unit_of_work: Callable[..., UnitOfWork]
    partner_id: str

    def require(self, reference: MemberReference, scope: str | None = None) -> str:
        """The member id, refused unless linked to the caller and sharing `scope` with it."""
        with self.unit_of_work(read_only=True) as uow:
            return privacy.require(uow, self.partner_id, reference, scope).member_id

    def balance_visible(self, member_ids: Collection[str]) -> frozenset[str]:
        """Those of the members whose balance the caller may see."""
        with self.unit_of_work(read_only=True) as uow:
            return visible_balances(uow, self.partner_id, member_ids)


def visible_balances(
    uow: UnitOfWork, partner_id: str, member_ids: Collection[str]
) -> frozenset[str]:
    sights = privacy.sights(uow, partner_id, set(member_ids))
    return frozenset(
        member_id for member_id, sight in sights.items() if sight.sees(privacy.BALANCE)
    )

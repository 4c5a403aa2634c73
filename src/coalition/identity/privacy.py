"""What a partner may learn about a member: the one rule of docs/identity.md, "Privacy between
partners". Every RPC that names a member or returns a member's data, and the event stream, ask
this module (through api/privacy.py); nothing else decides.

A partner *sees* a member only through a link of its own (partner_links), made with the
customer present (EnrollMember, LinkPartnerAccount). What it sees of a linked member is the
scopes in force for it: the member's decisions (member_consents), and for `profile.balance`
the link itself until the member revokes it, since the balance is what the member's account at
that brand is for. An unlinked partner sees nothing, whatever decisions exist for it (a link
removed, or consents carried by a merge).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from coalition.domain.errors import CoalitionError, FailedPrecondition
from coalition.identity.members import MemberReference, resolve
from coalition.store import driver
from coalition.store.driver import IN_LIST, Statement
from coalition.store.schema import CONSENT_SCOPES
from coalition.store.unit_of_work import UnitOfWork

BASIC = "profile.basic"
TIER = "profile.tier"
BALANCE = "profile.balance"
PREFERENCES = "profile.preferences"
BIRTHDAY = "profile.birthday"
# Scopes a link grants until the member revokes them: a checkout needs the balance.
GRANTED_BY_LINK = frozenset({BALANCE})
# Scopes the hub holds no data for are reported as unavailable even when granted, rather than
# answered with a guess. Tiers come from coalition.programme.tiers (every member has one: the
# base tier until it qualifies for more), so today every scope has a source.
SCOPES_WITHOUT_SOURCE: frozenset[str] = frozenset()
# Members looked up per statement: a page of transactions or events names at most this many.
MEMBERS_PER_LOOKUP_MAX = 1_000


class Withholding(enum.Enum):
    NOT_GRANTED = "not_granted"
    REVOKED = "revoked"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Sight:
    """What one partner may see of one member now."""

    member_id: str
    linked: bool
    granted_scopes: tuple[str, ...]
    withheld_scopes: tuple[tuple[str, Withholding], ...]

    def sees(self, scope: str) -> bool:
        return scope in self.granted_scopes


def scopes_in_force(
    linked: bool, decisions: Mapping[str, bool]
) -> tuple[tuple[str, ...], tuple[tuple[str, Withholding], ...]]:
    """Scopes shown and scopes withheld with the reason, in the canonical scope order.
    `decisions` maps a scope to the member's decision in force for the partner."""
    return _scopes_in_force(linked, frozenset(decisions.items()))


# A few hundred combinations of a link and the decisions on each scope at most; every pair of
# every group of earns asks (sights_from_rows).
@functools.lru_cache(maxsize=1024)
def _scopes_in_force(
    linked: bool, decided: frozenset[tuple[str, bool]]
) -> tuple[tuple[str, ...], tuple[tuple[str, Withholding], ...]]:
    decisions = dict(decided)
    granted: list[str] = []
    withheld: list[tuple[str, Withholding]] = []
    for scope in CONSENT_SCOPES:
        decision = decisions.get(scope)
        if not linked or (decision is None and scope not in GRANTED_BY_LINK):
            withheld.append((scope, Withholding.NOT_GRANTED))
        elif decision is False:
            withheld.append((scope, Withholding.REVOKED))
        elif scope in SCOPES_WITHOUT_SOURCE:
            withheld.append((scope, Withholding.UNAVAILABLE))
        else:
            granted.append(scope)
    return tuple(granted), tuple(withheld)


def sights(uow: UnitOfWork, partner_id: str, member_ids: Collection[str]) -> dict[str, Sight]:
    """The partner's sight of each member, in two statements whatever their number."""
    seen = sights_of_pairs(uow, {(partner_id, member_id) for member_id in member_ids})
    return {member_id: sight for (_, member_id), sight in seen.items()}


def sights_of_pairs(
    uow: UnitOfWork,
    pairs: Collection[tuple[str, str]],
    known_linked: Collection[tuple[str, str]] = (),
    known: Mapping[tuple[str, str], Sight] | None = None,
) -> dict[tuple[str, str], Sight]:
    """Each (partner, member) pair's sight, in one statement whatever their number and
    partners (a group of earns of several partners asks once): the links not read in this
    transaction already (`known_linked`), and the decisions; none for the pairs whose sight
    was read in this transaction already (`known`, `with_sights`). On Citus two, not a union:
    links are distributed by customer id and decisions by member (docs/scaling.md)."""
    assert len(pairs) <= MEMBERS_PER_LOOKUP_MAX
    known = known or {}
    seen = {pair: known[pair] for pair in pairs if pair in known}
    pairs = [pair for pair in pairs if pair not in known]
    if not pairs:
        return seen
    partner_ids = sorted({partner_id for partner_id, _ in pairs})
    member_ids = sorted({member_id for _, member_id in pairs})
    unknown = [pair for pair in pairs if pair not in known_linked]
    link_keys = (sorted({p for p, _ in unknown}), sorted({m for _, m in unknown}))
    if not unknown:
        rows = list(driver.execute(uow, DECISIONS, (member_ids, partner_ids)))
    elif uow.is_citus:
        rows = [(*pair, None, None) for pair in driver.execute(uow, LINKED_PAIRS, link_keys)]
        rows += driver.execute(uow, DECISIONS, (member_ids, partner_ids))
    else:
        parameters = (*link_keys, member_ids, partner_ids)
        rows = list(driver.execute(uow, LINKS_AND_DECISIONS, parameters))
    return seen | sights_from_rows(pairs, rows, known_linked)


def sights_from_rows(
    pairs: Collection[tuple[str, str]],
    rows: Iterable[tuple[str, str, str | None, bool | None]],
    known_linked: Collection[tuple[str, str]] = (),
) -> dict[tuple[str, str], Sight]:
    """The pairs' sights from rows of LINKS_AND_DECISIONS (links without a scope)."""
    linked = {pair for pair in pairs if pair in known_linked}
    decisions: dict[tuple[str, str], dict[str, bool]] = {pair: {} for pair in pairs}
    rows = list(rows)
    linked.update((p, m) for p, m, scope, _ in rows if scope is None and (p, m) in decisions)
    for partner_id, member_id, scope, granted in rows:
        # A partner's decisions count only where it is linked (a link removed, or decisions
        # carried by a merge, show nothing).
        if scope is not None and (partner_id, member_id) in linked:
            decisions[(partner_id, member_id)][scope] = bool(granted)
    return {
        pair: Sight(pair[1], pair in linked, *scopes_in_force(pair in linked, decisions[pair]))
        for pair in pairs
    }


# On every earn's path: statements built once, on the driver (store/driver.py).
LINKED_PAIRS = Statement(
    "SELECT DISTINCT partner_id, member_id FROM partner_links"
    f" WHERE partner_id {IN_LIST} %s AND member_id {IN_LIST} %s"
)
DECISIONS = Statement(
    "SELECT partner_id, member_id, scope, granted FROM member_consents"
    f" WHERE member_id {IN_LIST} %s AND partner_id {IN_LIST} %s"
)
# LINKED_PAIRS (each with no scope) and DECISIONS in one round trip.
_LINKS_AND_DECISIONS_SQL = (
    "SELECT DISTINCT partner_id, member_id, CAST(NULL AS TEXT), CAST(NULL AS BOOLEAN)"
    " FROM partner_links"
    f" WHERE partner_id {IN_LIST} %s AND member_id {IN_LIST} %s"
    " UNION ALL SELECT partner_id, member_id, scope, granted FROM member_consents"
    f" WHERE member_id {IN_LIST} %s AND partner_id {IN_LIST} %s"
)
LINKS_AND_DECISIONS = Statement(_LINKS_AND_DECISIONS_SQL)


def with_sights(members_sql: str) -> Statement:
    """`members_sql`, whose rows are (member_id, extra), and the rows of LINKS_AND_DECISIONS
    in the same round trip: rows of (partner id, member id, scope, granted, extra), a row of
    `members_sql` with no partner id, a link or decision with no extra. A group's first read
    carries its sights so (operations/set_based.py); not on Citus (`sights_of_pairs`)."""
    return Statement(
        "SELECT CAST(NULL AS TEXT), u.member_id, CAST(NULL AS TEXT), CAST(NULL AS BOOLEAN),"
        f" u.extra FROM ({members_sql}) AS u"
        f" UNION ALL SELECT s.*, CAST(NULL AS TEXT) FROM ({_LINKS_AND_DECISIONS_SQL}) AS s"
    )


def sight(uow: UnitOfWork, partner_id: str, member_id: str) -> Sight:
    return sights(uow, partner_id, (member_id,))[member_id]


def require(
    uow: UnitOfWork, partner_id: str, reference: MemberReference, scope: str | None
) -> Sight:
    """The caller's sight of the member behind `reference`, refused unless the member is linked
    to the caller and, when `scope` is given, unless that scope is in force for the caller."""
    member_id = resolve(uow, partner_id, reference)
    seen = sight(uow, partner_id, member_id)
    refusal = refusal_of(partner_id, seen, scope)
    if refusal is not None:
        raise refusal
    return seen


def refusal_of(partner_id: str, seen: Sight, scope: str | None) -> CoalitionError | None:
    """What `require` refuses the sight with, if anything (a group of requests asks once for
    all its members, identity/privacy.sights_of_pairs)."""
    member_id = seen.member_id
    if not seen.linked:
        return FailedPrecondition(
            "MEMBER_NOT_LINKED",
            f"member {member_id} is not linked to partner {partner_id}: link the customer "
            "first (EnrollMember, or LinkPartnerAccount with the member id the customer shows)",
            {"member_id": member_id, "partner_id": partner_id},
        )
    if scope is not None and not seen.sees(scope):
        return FailedPrecondition(
            "SCOPE_NOT_GRANTED",
            f"member {member_id} does not share {scope} with partner {partner_id}",
            {"member_id": member_id, "partner_id": partner_id, "scope": scope},
        )
    return None

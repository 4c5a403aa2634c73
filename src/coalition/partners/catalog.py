"""Reading partners and their rate versions."""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Row, select

from coalition.domain.errors import FailedPrecondition, NotFound
from coalition.domain.hub_partner import HUB_PARTNER_KIND
from coalition.domain.points import RateVersion
from coalition.store.schema import partners, rate_versions
from coalition.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Partner:
    partner_id: str
    name: str
    kind: str
    currency: str
    roles: tuple[str, ...]
    points_validity_months: int | None
    backdating_days_max: int  # how far before now an operation's occurred_at may lie


def get_partner(uow: UnitOfWork, partner_id: str) -> Partner:
    row = uow.connection.execute(
        select(partners).where(partners.c.partner_id == partner_id)
    ).one_or_none()
    if row is None:
        raise NotFound(
            "PARTNER_NOT_FOUND",
            f"partner {partner_id!r} does not exist",
            {"partner_id": partner_id},
        )
    return _partner_from_row(row)


def list_partners(uow: UnitOfWork, after_partner_id: str, limit: int) -> list[Partner]:
    rows = uow.connection.execute(
        select(partners)
        .where(partners.c.partner_id > after_partner_id, partners.c.kind != HUB_PARTNER_KIND)
        .order_by(partners.c.partner_id)
        .limit(limit)
    )
    return [_partner_from_row(row) for row in rows]


@dataclass(frozen=True)
class PartnerTerms:
    """A partner with all its rate versions, as the hot paths need them."""

    partner: Partner
    rate_versions: tuple[RateVersion, ...]  # by effective_from, ascending

    def rate_at(self, occurred_at: datetime) -> RateVersion:
        """The version with the greatest effective_from not after `occurred_at`: the one
        lookup of the rate in force for earn, burn, holds, quotes and batches."""
        index = bisect.bisect_right(self.rate_versions, occurred_at, key=_effective_from)
        if index == 0:
            raise _rate_not_found(self.partner.partner_id, occurred_at)
        return self.rate_versions[index - 1]


def _effective_from(version: RateVersion) -> datetime:
    return version.effective_from


# Earn and burn read a partner's terms on every call; they change only through `partners
# sync`, which in the same process clears this cache and elsewhere is seen within the TTL.
# Versions already in force never change, so only a future version edited less than this
# long before it takes effect could be priced late.
PARTNER_TERMS_CACHE_SECONDS = 5.0
_partner_terms_cache: weakref.WeakKeyDictionary[Engine, dict[str, tuple[float, PartnerTerms]]] = (
    weakref.WeakKeyDictionary()
)
_partner_terms_lock = threading.Lock()


def partner_terms(uow: UnitOfWork, partner_id: str) -> PartnerTerms:
    """The partner and its rate versions, from a short-lived per-engine cache."""
    now = time.monotonic()
    with _partner_terms_lock:
        cached = _partner_terms_cache.setdefault(uow.engine, {}).get(partner_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    terms = PartnerTerms(get_partner(uow, partner_id), tuple(list_rate_versions(uow, partner_id)))
    with _partner_terms_lock:
        _partner_terms_cache[uow.engine][partner_id] = (now + PARTNER_TERMS_CACHE_SECONDS, terms)
    return terms


def forget_partner_terms() -> None:
    with _partner_terms_lock:
        _partner_terms_cache.clear()


def _rate_not_found(partner_id: str, occurred_at: datetime) -> FailedPrecondition:
    return FailedPrecondition(
        "RATE_NOT_FOUND",
        f"partner {partner_id!r} has no rate version in force at {occurred_at.isoformat()}",
        {"partner_id": partner_id, "occurred_at": occurred_at.isoformat()},
    )


def list_rate_versions(uow: UnitOfWork, partner_id: str) -> list[RateVersion]:
    rows = uow.connection.execute(
        select(rate_versions)
        .where(rate_versions.c.partner_id == partner_id)
        .order_by(rate_versions.c.effective_from)
    )
    return [rate_version_from_row(row) for row in rows]


def rate_version_from_row(row: Row[Any]) -> RateVersion:
    native_points_rate = row.native_points_rate
    return RateVersion(
        rate_version_id=row.rate_version_id,
        partner_id=row.partner_id,
        effective_from=row.effective_from,
        earn_points_per_unit=Decimal(row.earn_points_per_unit),
        native_points_rate=None if native_points_rate is None else Decimal(native_points_rate),
        burn_value_minor_per_point=Decimal(row.burn_value_minor_per_point),
        issuance_price_minor_per_point=Decimal(row.issuance_price_minor_per_point),
        redemption_price_minor_per_point=Decimal(row.redemption_price_minor_per_point),
    )


def _partner_from_row(row: Row[Any]) -> Partner:
    return Partner(
        partner_id=row.partner_id,
        name=row.name,
        kind=row.kind,
        currency=row.currency,
        roles=tuple(row.roles.split(",")),
        points_validity_months=row.points_validity_months,
        backdating_days_max=row.backdating_days_max,
    )

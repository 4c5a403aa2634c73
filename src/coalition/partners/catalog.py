"""Reading partners and their rate versions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select

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


def rate_in_force(uow: UnitOfWork, partner_id: str, occurred_at: datetime) -> RateVersion:
    """The partner's rate version with the greatest effective_from not after `occurred_at`."""
    row = uow.connection.execute(
        select(rate_versions)
        .where(rate_versions.c.partner_id == partner_id)
        .where(rate_versions.c.effective_from <= occurred_at)
        .order_by(rate_versions.c.effective_from.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        raise FailedPrecondition(
            "RATE_NOT_FOUND",
            f"partner {partner_id!r} has no rate version in force at {occurred_at.isoformat()}",
            {"partner_id": partner_id, "occurred_at": occurred_at.isoformat()},
        )
    return rate_version_from_row(row)


def get_rate_version(uow: UnitOfWork, rate_version_id: str) -> RateVersion:
    row = uow.connection.execute(
        select(rate_versions).where(rate_versions.c.rate_version_id == rate_version_id)
    ).one()
    return rate_version_from_row(row)


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
    )

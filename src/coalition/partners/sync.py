"""Apply partner manifests to the database: idempotent, all or nothing.

Past rate versions never change, because a transaction's money depends on the version in force
at its `occurred_at`. So sync refuses to rewrite or remove a version already in force, and to
add a back-dated version that would change the rate of a transaction already recorded. Future
versions may be edited or withdrawn freely until they take effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import delete, insert, select, update

from coalition.domain.errors import FailedPrecondition
from coalition.domain.points import RateVersion
from coalition.ledger.accounts import (
    PARTNER_ISSUANCE,
    PARTNER_REDEMPTION,
    partner_issuance_account_id,
    partner_redemption_account_id,
)
from coalition.partners.catalog import forget_partner_terms, list_rate_versions
from coalition.partners.manifest import PartnerManifest, RateVersionManifest
from coalition.store.schema import accounts, journal_transactions, partners, rate_versions
from coalition.store.unit_of_work import UnitOfWork

RATE_FIELDS = (
    "earn_points_per_unit",
    "native_points_rate",
    "burn_value_minor_per_point",
    "issuance_price_minor_per_point",
    "redemption_price_minor_per_point",
)


@dataclass
class SyncReport:
    partners_created: list[str] = field(default_factory=list)
    partners_updated: list[str] = field(default_factory=list)
    rate_versions_created: list[str] = field(default_factory=list)
    rate_versions_updated: list[str] = field(default_factory=list)
    rate_versions_withdrawn: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(vars(self).values())


def rate_version_id(partner_id: str, effective_from: datetime) -> str:
    return f"{partner_id}@{effective_from:%Y-%m-%dT%H:%M:%SZ}"


def sync_partners(uow: UnitOfWork, manifests: list[PartnerManifest], now: datetime) -> SyncReport:
    report = SyncReport()
    with uow:
        for manifest in manifests:
            _sync_partner(uow, manifest, now, report)
            _sync_rate_versions(uow, manifest, now, report)
        uow.commit()
    forget_partner_terms()
    return report


def _sync_partner(
    uow: UnitOfWork, manifest: PartnerManifest, now: datetime, report: SyncReport
) -> None:
    values = {
        "name": manifest.name,
        "kind": manifest.kind,
        "roles": ",".join(manifest.roles),
        "points_validity_months": manifest.points_validity_months,
        "backdating_days_max": manifest.backdating_days_max,
        "settlement_public_key": manifest.settlement_public_key,
    }
    existing = uow.connection.execute(
        select(partners).where(partners.c.partner_id == manifest.partner_id)
    ).one_or_none()
    if existing is None:
        uow.connection.execute(
            insert(partners).values(
                partner_id=manifest.partner_id,
                currency=manifest.currency,
                create_time=now,
                update_time=now,
                **values,
            )
        )
        uow.connection.execute(
            insert(accounts),
            [
                {
                    "account_id": partner_issuance_account_id(manifest.partner_id),
                    "kind": PARTNER_ISSUANCE,
                    "partner_id": manifest.partner_id,
                },
                {
                    "account_id": partner_redemption_account_id(manifest.partner_id),
                    "kind": PARTNER_REDEMPTION,
                    "partner_id": manifest.partner_id,
                },
            ],
        )
        report.partners_created.append(manifest.partner_id)
        return
    if existing.currency != manifest.currency:
        raise FailedPrecondition(
            "PARTNER_CURRENCY_IMMUTABLE",
            f"partner {manifest.partner_id} trades in {existing.currency}; "
            f"its currency cannot change to {manifest.currency}",
            {"partner_id": manifest.partner_id, "currency": existing.currency},
        )
    if any(getattr(existing, key) != value for key, value in values.items()):
        uow.connection.execute(
            update(partners)
            .where(partners.c.partner_id == manifest.partner_id)
            .values(update_time=now, **values)
        )
        report.partners_updated.append(manifest.partner_id)


def _sync_rate_versions(
    uow: UnitOfWork, manifest: PartnerManifest, now: datetime, report: SyncReport
) -> None:
    partner_id = manifest.partner_id
    stored = {version.effective_from: version for version in list_rate_versions(uow, partner_id)}
    wanted = {version.effective_from: version for version in manifest.rate_versions}
    for effective_from, version in wanted.items():
        identifier = rate_version_id(partner_id, effective_from)
        current = stored.get(effective_from)
        if current is None:
            _refuse_if_backdated(uow, partner_id, identifier, effective_from, now)
            uow.connection.execute(
                insert(rate_versions).values(
                    rate_version_id=identifier,
                    partner_id=partner_id,
                    effective_from=effective_from,
                    create_time=now,
                    **_rate_values(version),
                )
            )
            report.rate_versions_created.append(identifier)
        elif not _same_rates(current, version):
            _refuse_if_in_force(current, now, "rewrite")
            uow.connection.execute(
                update(rate_versions)
                .where(rate_versions.c.rate_version_id == current.rate_version_id)
                .values(**_rate_values(version))
            )
            report.rate_versions_updated.append(current.rate_version_id)
    for effective_from, current in stored.items():
        if effective_from not in wanted:
            _refuse_if_in_force(current, now, "remove")
            uow.connection.execute(
                delete(rate_versions).where(
                    rate_versions.c.rate_version_id == current.rate_version_id
                )
            )
            report.rate_versions_withdrawn.append(current.rate_version_id)


def _refuse_if_in_force(current: RateVersion, now: datetime, action: str) -> None:
    if current.effective_from <= now:
        raise FailedPrecondition(
            "RATE_VERSION_IN_FORCE",
            f"cannot {action} rate version {current.rate_version_id}: it is in force since "
            f"{current.effective_from.isoformat()}; add a new version instead",
            {"rate_version_id": current.rate_version_id, "action": action},
        )


def _refuse_if_backdated(
    uow: UnitOfWork, partner_id: str, identifier: str, effective_from: datetime, now: datetime
) -> None:
    if effective_from > now:
        return
    affected = uow.connection.execute(
        select(journal_transactions.c.transaction_id)
        .where(
            journal_transactions.c.partner_id == partner_id,
            journal_transactions.c.occurred_at >= effective_from,
        )
        .limit(1)
    ).first()
    if affected is not None:
        raise FailedPrecondition(
            "RATE_VERSION_BACKDATED",
            f"cannot add rate version {identifier}: transactions of {partner_id} after "
            f"{effective_from.isoformat()} were already priced at another version",
            {"rate_version_id": identifier, "partner_id": partner_id},
        )


def _rate_values(version: RateVersionManifest) -> dict[str, str | None]:
    return {name: _text(getattr(version, name)) for name in RATE_FIELDS}


def _same_rates(current: RateVersion, version: RateVersionManifest) -> bool:
    return all(getattr(current, name) == getattr(version, name) for name in RATE_FIELDS)


def _text(rate: Decimal | None) -> str | None:
    return None if rate is None else str(rate)

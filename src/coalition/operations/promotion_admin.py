"""Promotions as marketing runs them: create, update, pause, resume, get, list.

Who may do what (a partner's autonomy, the coalition's own programme):
- a partner creates, changes and reads its own promotions: funded by it, run only at it, with
  ids that begin with "<partner_id>.";
- the coalition (role admin) creates and changes coalition-funded promotions, which may run at
  any partners; it never creates one funded by a partner (that would bill a partner for
  points it did not decide to give), and it cannot change a partner's;
- a partner also reads the coalition's promotions (they run at its tills), never another
  partner's (PROMOTION_NOT_FOUND, as if it did not exist).

Every change writes the promotion's next version and its audit row (who, when, which
request_id, the definition as it became) in one transaction, and bumps the catalogue, so
every hub process applies it within REFRESH_SECONDS (programme/promotion_catalogue.py).
A request_id makes a change idempotent (AIP-155): the same actor sending the same request_id
for the same promotion again gets the promotion as it is, and nothing changes twice.
Updates name the version they change (`expected_version`, 0: any), so that two marketers
never overwrite each other unknowingly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update

from coalition.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from coalition.domain.promotions import (
    FUNDED_BY_COALITION,
    FUNDED_BY_PARTNER,
    STATE_ACTIVE,
    STATE_PAUSED,
    Promotion,
)
from coalition.partners.catalog import get_partner
from coalition.programme import promotion_catalogue as catalogue
from coalition.programme.config import (
    PROMOTIONS_MAX,
    Programme,
    PromotionFieldError,
    promotion_from_entry,
)
from coalition.programme.promotion_catalogue import CATALOGUE, StoredPromotion
from coalition.reports import build
from coalition.reports.build import PromotionPerformance
from coalition.reports.period import Period
from coalition.store.schema import promotion_versions, promotions
from coalition.store.unit_of_work import UnitOfWork

PAGE_SIZE_MAX = 500  # api/requests.py caps every page at this


@dataclass(frozen=True)
class Actor:
    """Who changes promotions: a partner (its own) or the coalition (partner_id None)."""

    principal_id: str
    partner_id: str | None


def create_promotion(
    uow: UnitOfWork,
    actor: Actor,
    entry: dict[str, Any],
    request_id: str | None,
    programme: Programme,
    now: datetime,
) -> StoredPromotion:
    promotion = _validated(actor, entry, programme, version=1, state=STATE_ACTIVE)
    with uow:
        replayed = _replay(uow, actor, promotion.promotion_id, request_id)
        if replayed is not None:
            return replayed
        if _row(uow, promotion.promotion_id, lock=False) is not None:
            raise AlreadyExists(
                "PROMOTION_EXISTS",
                f"promotion {promotion.promotion_id} exists; update it instead",
                {"promotion_id": promotion.promotion_id},
            )
        if catalogue.promotions_in_force_count(uow, now) >= PROMOTIONS_MAX:
            raise FailedPrecondition(
                "PROMOTIONS_LIMIT_REACHED",
                f"the hub runs at most {PROMOTIONS_MAX} promotions; end or let one expire",
                {"promotions_max": PROMOTIONS_MAX},
            )
        _check_budget_currency(uow, promotion)
        catalogue.insert_promotion(uow, promotion, "create", actor.principal_id, request_id, now)
        stored = _written(uow, promotion.promotion_id)
        uow.commit()
    CATALOGUE.invalidate()
    return stored


def update_promotion(
    uow: UnitOfWork,
    actor: Actor,
    entry: dict[str, Any],
    expected_version: int,
    request_id: str | None,
    programme: Programme,
    now: datetime,
) -> StoredPromotion:
    """Replace the promotion's rules (its id, owner and state stay); a budget may not drop
    below what is already spent."""
    promotion_id = str(entry.get("promotion_id", ""))
    with uow:
        replayed = _replay(uow, actor, promotion_id, request_id)
        if replayed is not None:
            return replayed
        current = _owned(uow, actor, promotion_id, expected_version)
        promotion = _validated(
            actor,
            entry,
            programme,
            version=current.promotion.version + 1,
            state=current.promotion.state,
        )
        budget = promotion.budget_points
        if current.spent_points and (budget is None or budget < current.spent_points):
            # A budget once spent from stays a budget: dropping it would hide what was spent.
            raise InvalidArgument(
                [
                    FieldViolation(
                        "promotion.budget_points",
                        f"at least the {current.spent_points} points already spent",
                    )
                ]
            )
        _check_budget_currency(uow, promotion)
        spent_minor = current.spent_amount_minor
        if spent_minor and (
            promotion.budget_amount_minor is None
            or promotion.budget_amount_minor < spent_minor
            or promotion.budget_currency != current.promotion.budget_currency
        ):
            raise InvalidArgument(
                [
                    FieldViolation(
                        "promotion.budget_amount_minor",
                        f"at least the {spent_minor} minor units of "
                        f"{current.promotion.budget_currency} already spent, in that currency",
                    )
                ]
            )
        _write_row(uow, promotion, now)
        catalogue.write_version(uow, promotion, "update", actor.principal_id, request_id, now)
        stored = _written(uow, promotion_id)
        uow.commit()
    CATALOGUE.invalidate()
    return stored


def set_promotion_state(
    uow: UnitOfWork,
    actor: Actor,
    promotion_id: str,
    state: str,
    request_id: str | None,
    now: datetime,
) -> StoredPromotion:
    """Pause (no earn gets its bonus from the next refresh on) or resume a promotion. Pausing
    a paused promotion changes nothing and writes no version."""
    assert state in (STATE_ACTIVE, STATE_PAUSED)
    with uow:
        replayed = _replay(uow, actor, promotion_id, request_id)
        if replayed is not None:
            return replayed
        current = _owned(uow, actor, promotion_id, 0)
        if current.promotion.state == state:
            return current
        promotion = replace(current.promotion, state=state, version=current.promotion.version + 1)
        _write_row(uow, promotion, now)
        change = "pause" if state == STATE_PAUSED else "resume"
        catalogue.write_version(uow, promotion, change, actor.principal_id, request_id, now)
        stored = _written(uow, promotion_id)
        uow.commit()
    CATALOGUE.invalidate()
    return stored


def get_promotion(uow: UnitOfWork, actor: Actor, promotion_id: str) -> StoredPromotion:
    with uow:
        stored = _stored(uow, promotion_id)
    if stored is None or not _visible(actor, stored.promotion):
        raise _not_found(promotion_id)
    return stored


def list_promotions(
    uow: UnitOfWork,
    actor: Actor,
    page_size: int,
    after_promotion_id: str,
) -> tuple[list[StoredPromotion], str]:
    """A page of the promotions the actor may read, by id; the last id when more follow."""
    assert 0 < page_size <= PAGE_SIZE_MAX
    query = (
        select(promotions)
        .where(promotions.c.promotion_id > after_promotion_id)
        .order_by(promotions.c.promotion_id)
        .limit(page_size + 1)
    )
    if actor.partner_id is not None:
        query = query.where(
            or_(
                promotions.c.owner_partner_id == actor.partner_id,
                promotions.c.owner_partner_id.is_(None),
            )
        )
    with uow:
        rows = uow.connection.execute(query).all()
    page = [catalogue.stored_of_row(row) for row in rows[:page_size]]
    return page, page[-1].promotion.promotion_id if len(rows) > page_size else ""


def promotion_performance(
    uow: UnitOfWork, actor: Actor, promotion_id: str, period: Period
) -> tuple[StoredPromotion, list[PromotionPerformance]]:
    """The promotion's cost and return in `period`: a partner sees its own promotions'
    figures, and of the coalition's only those at itself."""
    with uow:
        stored = _stored(uow, promotion_id)
        if stored is None or not _visible(actor, stored.promotion):
            raise _not_found(promotion_id)
        rows = build.promotion_performance(uow, period, actor.partner_id)
    return stored, [row for row in rows if row.promotion_id == promotion_id]


def _validated(
    actor: Actor, entry: dict[str, Any], programme: Programme, version: int, state: str
) -> Promotion:
    if actor.partner_id is not None:  # a partner's own: funded by it, run at it
        prefix = f"{actor.partner_id}."
        if not str(entry.get("promotion_id", "")).startswith(prefix):
            # Ids are one namespace: a partner's begin with its own id, so that no partner can
            # learn another's promotion ids by colliding with them.
            violation = FieldViolation("promotion.promotion_id", f"must begin with {prefix!r}")
            raise InvalidArgument([violation])
        entry = {
            **entry,
            "funded_by": entry.get("funded_by", FUNDED_BY_PARTNER),
            "partner_ids": entry.get("partner_ids", [actor.partner_id]),
        }
    elif entry.get("funded_by") != FUNDED_BY_COALITION:
        raise InvalidArgument(
            [
                FieldViolation(
                    "promotion.funded_by",
                    "the coalition's promotions are coalition-funded; a partner creates its own",
                )
            ]
        )
    try:
        return promotion_from_entry(
            "promotion",
            entry,
            _tier_ids(programme),
            owner_partner_id=actor.partner_id,
            version=version,
            state=state,
        )
    except PromotionFieldError as error:
        violation = FieldViolation(f"promotion.{error.key}", error.description)
        raise InvalidArgument([violation]) from error


def _check_budget_currency(uow: UnitOfWork, promotion: Promotion) -> None:
    """A budget in money is in the funding partner's currency (its issuance prices')."""
    if promotion.budget_currency is None or promotion.partner_ids is None:
        return
    (funder,) = promotion.partner_ids
    currency = get_partner(uow, funder).currency
    if promotion.budget_currency != currency:
        raise InvalidArgument(
            [
                FieldViolation(
                    "promotion.budget_currency",
                    f"must be {currency}, the currency of {funder}'s issuance prices",
                )
            ]
        )


def _tier_ids(programme: Programme) -> set[str]:
    return {tier.tier_id for tier in programme.ladder.tiers}


def _visible(actor: Actor, promotion: Promotion) -> bool:
    return actor.partner_id is None or promotion.owner_partner_id in (None, actor.partner_id)


def _owned(
    uow: UnitOfWork, actor: Actor, promotion_id: str, expected_version: int
) -> StoredPromotion:
    """The promotion, locked for the change, when the actor owns it at the expected version."""
    row = _row(uow, promotion_id, lock=True)
    if row is None:
        raise _not_found(promotion_id)
    current = catalogue.stored_of_row(row)
    if not _visible(actor, current.promotion):
        raise _not_found(promotion_id)
    if current.promotion.owner_partner_id != actor.partner_id:
        owner = current.promotion.owner_partner_id or "the coalition"
        raise PermissionDenied(
            "PROMOTION_NOT_OWNED",
            f"promotion {promotion_id} belongs to {owner}; only its owner changes it",
            {"promotion_id": promotion_id, "owner": owner},
        )
    if expected_version and expected_version != current.promotion.version:
        raise FailedPrecondition(
            "PROMOTION_VERSION_MISMATCH",
            f"promotion {promotion_id} is at version {current.promotion.version}, not "
            f"{expected_version}; read it again and reapply the change",
            {
                "promotion_id": promotion_id,
                "version": current.promotion.version,
                "expected_version": expected_version,
            },
        )
    return current


def _replay(
    uow: UnitOfWork,
    actor: Actor,
    promotion_id: str,
    request_id: str | None,
) -> StoredPromotion | None:
    """The promotion as it is, when this actor already sent this request for it."""
    if not request_id:
        return None
    seen = uow.connection.execute(
        select(promotion_versions.c.version).where(
            promotion_versions.c.promotion_id == promotion_id,
            promotion_versions.c.actor == actor.principal_id,
            promotion_versions.c.request_id == request_id,
        )
    ).first()
    return None if seen is None else _stored(uow, promotion_id)


def _row(uow: UnitOfWork, promotion_id: str, lock: bool) -> Any:
    query = select(promotions).where(promotions.c.promotion_id == promotion_id)
    return uow.connection.execute(query.with_for_update() if lock else query).first()


def _stored(uow: UnitOfWork, promotion_id: str) -> StoredPromotion | None:
    row = _row(uow, promotion_id, lock=False)
    return None if row is None else catalogue.stored_of_row(row)


def _written(uow: UnitOfWork, promotion_id: str) -> StoredPromotion:
    """The promotion this transaction has just written."""
    stored = _stored(uow, promotion_id)
    assert stored is not None, "a promotion written in this transaction is there"
    return stored


def _write_row(uow: UnitOfWork, promotion: Promotion, now: datetime) -> None:
    changed = uow.connection.execute(
        update(promotions)
        .where(
            promotions.c.promotion_id == promotion.promotion_id,
            promotions.c.version == promotion.version - 1,
        )
        .values(
            version=promotion.version,
            state=promotion.state,
            definition=catalogue.canonical_definition(promotion),
            ends_at=promotion.ends_at,
            budget_points=promotion.budget_points,
            budget_amount_minor=promotion.budget_amount_minor,
            update_time=now,
        )
    )
    assert changed.rowcount == 1, "the row is locked at the version read"


def _not_found(promotion_id: str) -> NotFound:
    return NotFound(
        "PROMOTION_NOT_FOUND",
        f"no promotion {promotion_id} that the caller may see",
        {"promotion_id": promotion_id},
    )

"""Who funded an earn's points: the coalition's share of them, read from its earn bonuses
(operations/promotions.py records them; expiry and reversals hand that share back)."""

from __future__ import annotations

from sqlalchemy import func, select

from coalition.store.schema import earn_bonuses
from coalition.store.unit_of_work import UnitOfWork


def coalition_funded_points(uow: UnitOfWork, earn_transaction_id: int) -> int:
    points = uow.connection.execute(
        select(func.coalesce(func.sum(earn_bonuses.c.points), 0)).where(
            earn_bonuses.c.transaction_id == earn_transaction_id,
            earn_bonuses.c.funding_partner_id.is_(None),
        )
    ).scalar_one()
    return int(points)

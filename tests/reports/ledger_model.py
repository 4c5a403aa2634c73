"""A generated ledger, driven through the real service functions, and a plain-Python model of
it that computes the report's expected figures independently of the report's SQL."""

from __future__ import annotations

import calendar
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine

from coalition import operations
from coalition.domain.points import Money
from coalition.identity.members import MemberReference, enroll
from coalition.ledger.expiry import expire_lots
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.unit_of_work import UnitOfWork

# partner -> (currency, validity months, [(effective_from, points per major unit)])
PARTNERS = {
    "test-coffee": (
        "CNY",
        24,
        [
            (datetime(2025, 1, 1, tzinfo=UTC), Decimal("0.1")),
            (datetime(2026, 1, 1, tzinfo=UTC), Decimal("0.2")),
        ],
    ),
    "test-air": ("EUR", 36, [(datetime(2025, 1, 1, tzinfo=UTC), Decimal("1"))]),
    "test-cinema": ("GBP", 12, [(datetime(2025, 6, 1, tzinfo=UTC), Decimal("1"))]),
}
MONTHS = [(2025, month) for month in range(6, 13)] + [(2026, month) for month in range(1, 8)]


@dataclass
class Lot:
    lot_number: int
    issuer: str
    points: int
    created: datetime
    expires_at: datetime
    remaining: int


@dataclass
class Model:
    lots: list[Lot] = field(default_factory=list)
    member_created: dict[str, datetime] = field(default_factory=dict)
    member_lots: dict[str, list[Lot]] = field(default_factory=lambda: defaultdict(list))
    # (issuer, redeemer, committed at, points)
    consumptions: list[tuple[str, str, datetime, int]] = field(default_factory=list)
    expiries: list[tuple[Lot, datetime, int]] = field(default_factory=list)
    # (member, partner, kind, committed at, points magnitude)
    transactions: list[tuple[str, str, str, datetime, int]] = field(default_factory=list)


def _expiry(earned_at: datetime, months: int) -> datetime:
    index = earned_at.month - 1 + months
    year, month = earned_at.year + index // 12, index % 12 + 1
    return earned_at.replace(
        year=year, month=month, day=min(earned_at.day, calendar.monthrange(year, month)[1])
    )


def _earn_rate(partner_id: str, at: datetime) -> Decimal:
    return [rate for since, rate in PARTNERS[partner_id][2] if since <= at][-1]


def generate(engine: Engine, seed: int, member_count: int = 14) -> Model:
    """Members enrol over the months; each month some of them earn and burn at random partners;
    an expiry run at each month's start expires what is due."""
    chooser = random.Random(seed)
    model = Model()
    sequence = 0

    def unit_of_work() -> UnitOfWork:
        return UnitOfWork(engine)

    for year, month in MONTHS:
        month_start = datetime(year, month, 1, tzinfo=UTC)
        expiry_time = month_start + timedelta(hours=1)
        expire_lots(unit_of_work, expiry_time, expiry_time)
        for lot in sorted(model.lots, key=lambda lot: lot.lot_number):
            if lot.remaining and lot.expires_at <= expiry_time:
                model.expiries.append((lot, expiry_time, lot.remaining))
                lot.remaining = 0
        joining = chooser.randint(0, 3) if model.member_created else 4
        for _ in range(joining):
            if len(model.member_created) >= member_count:
                break
            sequence += 1
            at = month_start + timedelta(days=1, minutes=sequence)
            customer = f"customer-{len(model.member_created)}"
            enrolment = enroll(
                unit_of_work(), "test-coffee", f"enrol-{customer}", customer, customer, at
            )
            model.member_created[enrolment.member.member_id] = at
        for day in range(2, 26, 2):
            for member_id in list(model.member_created):
                if chooser.random() > 0.3:
                    continue
                sequence += 1
                at = month_start + timedelta(days=day, minutes=sequence % 600)
                if at < model.member_created[member_id]:
                    continue
                partner_id = chooser.choice(sorted(PARTNERS))
                if partner_id == "test-cinema" and at < PARTNERS[partner_id][2][0][0]:
                    continue
                balance = sum(lot.remaining for lot in model.member_lots[member_id])
                # every third member never burns, so some of its points expire
                spender = list(model.member_created).index(member_id) % 3 != 0
                if spender and balance >= 20 and chooser.random() < 0.45:
                    _burn(
                        engine,
                        model,
                        member_id,
                        partner_id,
                        chooser.randint(1, balance),
                        at,
                        sequence,
                    )
                else:
                    _earn(
                        engine, model, member_id, partner_id, chooser.randint(1, 40), at, sequence
                    )
    return model


def _earn(
    engine: Engine,
    model: Model,
    member_id: str,
    partner_id: str,
    units: int,
    at: datetime,
    sequence: int,
) -> None:
    currency, validity_months, _ = PARTNERS[partner_id]
    # whole multiples of 10 major units, so that every rate gives whole points
    amount_minor = units * 10 * 100
    points = int(Decimal(units * 10) * _earn_rate(partner_id, at))
    command = operations.EarnCommand(
        request_id=f"earn-{sequence}",
        member=MemberReference(member_id=member_id),
        spend=Money(amount_minor, currency),
        occurred_at=at,
    )
    result = operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, partner_id, command, at)
    assert result.points == points, (result.points, points)
    lot = Lot(len(model.lots), partner_id, points, at, _expiry(at, validity_months), points)
    model.lots.append(lot)
    model.member_lots[member_id].append(lot)
    model.transactions.append((member_id, partner_id, "earn", at, points))


def _burn(
    engine: Engine,
    model: Model,
    member_id: str,
    partner_id: str,
    points: int,
    at: datetime,
    sequence: int,
) -> None:
    command = operations.BurnCommand(
        request_id=f"burn-{sequence}",
        member=MemberReference(member_id=member_id),
        points=points,
        occurred_at=at,
    )
    operations.burn(UnitOfWork(engine), partner_id, command, at)
    points_left = points
    for lot in sorted(
        model.member_lots[member_id], key=lambda lot: (lot.expires_at, lot.lot_number)
    ):
        taken = min(lot.remaining, points_left)
        if taken:
            lot.remaining -= taken
            points_left -= taken
            model.consumptions.append((lot.issuer, partner_id, at, taken))
    assert points_left == 0
    model.transactions.append((member_id, partner_id, "burn", at, points))

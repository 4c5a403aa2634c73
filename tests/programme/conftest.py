"""Fixtures and helpers for the programme rules: a test programme, members, ledger calls."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from sqlalchemy import Engine, text

from coalition import operations
from coalition.domain.points import Money
from coalition.domain.promotions import Promotion
from coalition.domain.tiers import Tier, TierLadder
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations.holds import HoldResult
from coalition.operations.points import BurnCommand, EarnCommand, LedgerResult
from coalition.programme.config import Programme, using_programme
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import assert_ledger_sound

CURRENCY = {"test-coffee": "CNY", "test-air": "EUR", "test-cinema": "GBP"}

LADDER = TierLadder(
    (
        Tier("member", "Member", 0, Decimal(1)),
        Tier("silver", "Silver", 1_000, Decimal("1.5")),
        Tier("gold", "Gold", 5_000, Decimal(2)),
    )
)
PLAIN = Programme(TierLadder((Tier("member", "Member", 0, Decimal(1)),)), ())


@pytest.fixture(autouse=True)
def plain_programme() -> Iterator[Programme]:
    """Every test starts without tiers or promotions unless it activates its own."""
    with using_programme(PLAIN) as programme:
        yield programme


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def enroll(engine: Engine, partner_id: str = "test-coffee") -> str:
    enrolment = members.enroll(
        UnitOfWork(engine), partner_id, new_id(), f"customer-{new_id()}", "Mei Lin", now()
    )
    return enrolment.member.member_id


def earn(
    engine: Engine,
    member_id: str,
    amount_minor: int,
    partner_id: str = "test-air",
    occurred_at: datetime | None = None,
    at: datetime | None = None,
) -> LedgerResult:
    """Earn at `partner_id`; test-air gives 1 point per euro (100 minor units)."""
    command = EarnCommand(
        request_id=new_id(),
        member=MemberReference(member_id=member_id),
        spend=Money(amount_minor, CURRENCY[partner_id]),
        occurred_at=occurred_at,
    )
    return operations.earn(UnitOfWork(engine), partner_id, command, at or now())


def burn(
    engine: Engine,
    member_id: str,
    points: int,
    partner_id: str = "test-air",
    at: datetime | None = None,
) -> LedgerResult:
    command = BurnCommand(
        request_id=new_id(), member=MemberReference(member_id=member_id), points=points
    )
    return operations.burn(UnitOfWork(engine), partner_id, command, at or now())


def authorize(
    engine: Engine,
    member_id: str,
    points: int,
    partner_id: str = "test-air",
    ttl: timedelta = timedelta(minutes=15),
    at: datetime | None = None,
    request_id: str | None = None,
) -> HoldResult:
    command = operations.AuthorizeCommand(
        request_id=request_id or new_id(),
        member=MemberReference(member_id=member_id),
        ttl=ttl,
        points=points,
    )
    return operations.authorize_burn(UnitOfWork(engine), partner_id, command, at or now())


def capture(
    engine: Engine,
    hold_id: int,
    points: int = 0,
    partner_id: str = "test-air",
    at: datetime | None = None,
    request_id: str | None = None,
) -> HoldResult:
    command = operations.CaptureCommand(request_id or new_id(), hold_id, points)
    return operations.capture_burn(UnitOfWork(engine), partner_id, command, at or now())


def void(
    engine: Engine,
    hold_id: int,
    partner_id: str = "test-air",
    at: datetime | None = None,
    request_id: str | None = None,
) -> HoldResult:
    command = operations.VoidCommand(request_id or new_id(), hold_id)
    return operations.void_burn(UnitOfWork(engine), partner_id, command, at or now())


def balance(
    engine: Engine, member_id: str, as_of: datetime | None = None, at: datetime | None = None
) -> tuple[int, int]:
    """(available, held) as GetBalance reports them at `at` (default: now)."""
    result = operations.get_balance(
        UnitOfWork(engine, read_only=True),
        "test-air",
        MemberReference(member_id=member_id),
        as_of,
        at or now(),
    )
    return result.balance_points, result.held_points


def promotion(promotion_id: str, **fields: object) -> Promotion:
    values: dict[str, object] = {
        "starts_at": datetime(2020, 1, 1, tzinfo=UTC),
        "ends_at": datetime(2100, 1, 1, tzinfo=UTC),
        "funded_by": "coalition",
        "time_zone": "UTC",
        **fields,
    }
    return Promotion(promotion_id=promotion_id, **values)  # type: ignore[arg-type]


# Invariants of the programme rules, on top of tests/integration/ledger_checks.py.
PROGRAMME_INVARIANTS = {
    "hold accounts hold exactly the open holds": """
        SELECT a.account_id FROM member_accounts a
        LEFT JOIN (SELECT account_id, SUM(points) AS points FROM postings GROUP BY account_id) p
          ON p.account_id = a.account_id
        LEFT JOIN (SELECT member_id, SUM(points_held) AS points FROM holds
                   WHERE status = 'open' GROUP BY member_id) h ON h.member_id = a.member_id
        WHERE a.kind = 'member_hold' AND COALESCE(p.points, 0) <> COALESCE(h.points, 0)
    """,
    "every lot's points are remaining, consumed or expired": """
        WITH c AS MATERIALIZED (
               SELECT lot_id, SUM(points) AS points FROM lot_consumptions GROUP BY lot_id),
             x AS MATERIALIZED (
               SELECT lot_id, SUM(points) AS points FROM lot_expiries GROUP BY lot_id),
             -- what reversals took back from the earn that issued the lot
             r AS MATERIALIZED (
               SELECT parent_transaction_id AS transaction_id, -SUM(points_delta) AS points
               FROM journal_transactions WHERE parent_transaction_id IS NOT NULL
               GROUP BY parent_transaction_id)
        SELECT l.lot_id FROM lots l
        LEFT JOIN c ON c.lot_id = l.lot_id
        LEFT JOIN x ON x.lot_id = l.lot_id
        LEFT JOIN r ON r.transaction_id = l.transaction_id
        WHERE l.points <> l.remaining_points + COALESCE(c.points, 0) + COALESCE(x.points, 0)
                          + COALESCE(r.points, 0)
    """,
    "every journal transaction has exactly one event": """
        SELECT j.transaction_id FROM journal_transactions j
        LEFT JOIN events e ON e.member_id = j.member_id AND e.transaction_id = j.transaction_id
        GROUP BY j.member_id, j.transaction_id HAVING COUNT(e.event_id) <> 1
    """,
    "an event goes to the transaction's partner": """
        SELECT e.event_id FROM events e
        JOIN journal_transactions j
          ON j.member_id = e.member_id AND j.transaction_id = e.transaction_id
        WHERE e.partner_id <> j.partner_id
    """,
    "expiries post the lot's remainder to its issuer or the coalition": """
        SELECT x.transaction_id FROM lot_expiries x
        JOIN lots l ON l.member_id = x.member_id AND l.lot_id = x.lot_id
        JOIN journal_transactions j
          ON j.member_id = x.member_id AND j.transaction_id = x.transaction_id
        WHERE j.kind <> 'expire' OR j.partner_id <> l.partner_id OR j.points_delta <> -x.points
    """,
    # A referral bonus (hub-initiated) is all bonus; a partner's earn always has base points.
    "earn bonuses never exceed the earn": """
        SELECT b.transaction_id FROM earn_bonuses b
        JOIN journal_transactions j
          ON j.member_id = b.member_id AND j.transaction_id = b.transaction_id
        WHERE j.partner_id <> 'coalition-hub'
        GROUP BY b.member_id, b.transaction_id, j.points_delta
        HAVING SUM(b.points) >= j.points_delta
    """,
    "a referral bonus is exactly its bonus": """
        SELECT b.transaction_id FROM earn_bonuses b
        JOIN journal_transactions j
          ON j.member_id = b.member_id AND j.transaction_id = b.transaction_id
        WHERE j.partner_id = 'coalition-hub'
        GROUP BY b.member_id, b.transaction_id, j.points_delta
        HAVING SUM(b.points) <> j.points_delta
    """,
    "no budget is overspent and every budget point is a granted bonus": """
        SELECT p.promotion_id FROM promotions p
        LEFT JOIN (SELECT rule_id, SUM(points) AS points FROM earn_bonuses GROUP BY rule_id) b
          ON b.rule_id = 'promotion:' || p.promotion_id
        WHERE p.budget_points IS NOT NULL
          AND (p.spent_points > p.budget_points OR p.spent_points <> COALESCE(b.points, 0))
    """,
    "members' grants count every granted bonus of a capped promotion": """
        SELECT g.promotion_id
        FROM (SELECT promotion_id, SUM(points) AS points FROM promotion_member_grants
              GROUP BY promotion_id) g
        LEFT JOIN (SELECT rule_id, SUM(points) AS points FROM earn_bonuses GROUP BY rule_id) b
          ON b.rule_id = 'promotion:' || g.promotion_id
        WHERE g.points <> COALESCE(b.points, 0)
    """,
}


def assert_programme_sound(engine: Engine) -> None:
    assert_ledger_sound(engine)
    with engine.connect() as connection:
        broken = {
            name: rows
            for name, query in PROGRAMME_INVARIANTS.items()
            if (rows := [tuple(row) for row in connection.execute(text(query))])
        }
    assert not broken, f"programme invariants broken: {broken}"
    assert_money_budgets_sound(engine)


# Each bonus of a promotion with a money budget, priced at its earn's rate version.
MONEY_BUDGET_GRANTS = """
    SELECT p.promotion_id, p.budget_amount_minor, p.spent_amount_minor, b.points,
           r.issuance_price_minor_per_point
    FROM promotions p
    LEFT JOIN earn_bonuses b ON b.rule_id = 'promotion:' || p.promotion_id
    LEFT JOIN journal_transactions j
      ON j.member_id = b.member_id AND j.transaction_id = b.transaction_id
    LEFT JOIN rate_versions r ON r.rate_version_id = j.rate_version_id
    WHERE p.budget_amount_minor IS NOT NULL
"""


def assert_money_budgets_sound(engine: Engine) -> None:
    """No money budget is overspent, and each one's spend is exactly its bonuses at their
    earns' issuance prices, rounded up per grant (docs/promotions.md)."""
    expected: dict[str, tuple[int, int, int]] = {}
    with engine.connect() as connection:
        for promotion_id, budget, spent, points, price in connection.execute(
            text(MONEY_BUDGET_GRANTS)
        ):
            cost = 0 if points is None else math.ceil(points * Fraction(Decimal(price)))
            _, _, so_far = expected.get(promotion_id, (budget, spent, 0))
            expected[promotion_id] = (int(budget), int(spent), so_far + cost)
    for promotion_id, (budget, spent, granted_cost) in expected.items():
        assert spent == granted_cost <= budget, (promotion_id, budget, spent, granted_cost)

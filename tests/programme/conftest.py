"""Fixtures and helpers for the programme rules: a test programme, members, ledger calls."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import Engine, text

from coalition import operations
from coalition.domain.points import Money
from coalition.domain.promotions import Promotion
from coalition.domain.tiers import Tier, TierLadder
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations.holds import HoldResult
from coalition.operations.points import BurnCommand, EarnCommand, LedgerResult
from coalition.programme.config import Programme
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
# Without tiers or promotions: what a test earns under unless it passes its own programme.
PLAIN = Programme(TierLadder((Tier("member", "Member", 0, Decimal(1)),)), ())


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
    programme: Programme = PLAIN,
) -> LedgerResult:
    """Earn at `partner_id` under `programme`; test-air gives 1 point per euro (100 minor
    units)."""
    command = EarnCommand(
        request_id=new_id(),
        member=MemberReference(member_id=member_id),
        spend=Money(amount_minor, CURRENCY[partner_id]),
        occurred_at=occurred_at,
    )
    return operations.earn(UnitOfWork(engine), programme, partner_id, command, at or now())


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
    assert_grants_live(engine)


# Each budgeted or capped grant with its earn's points, what reversals took back of them,
# its bonus row and the earn's issuance price.
EARN_GRANTS = """
    SELECT g.promotion_id, g.member_id, g.cap_period, g.points, g.budget_points,
           g.budget_amount_minor, j.points_delta,
           COALESCE(c.points, 0), b.points, r.issuance_price_minor_per_point
    FROM promotion_earn_grants g
    JOIN journal_transactions j ON j.member_id = g.member_id AND j.transaction_id = g.transaction_id
    LEFT JOIN (SELECT parent_transaction_id, -SUM(points_delta) AS points
               FROM journal_transactions WHERE kind = 'reverse'
               GROUP BY parent_transaction_id) c ON c.parent_transaction_id = j.transaction_id
    LEFT JOIN earn_bonuses b
      ON b.member_id = g.member_id AND b.transaction_id = g.transaction_id
      AND b.rule_id = 'promotion:' || g.promotion_id
    LEFT JOIN rate_versions r ON r.rate_version_id = j.rate_version_id
"""


def live(part: int, points_total: int, points_reversed: int) -> int:
    """What of `part` of an earn is still live after `points_reversed` of it were reversed."""
    return part - points_reversed * part // points_total


def assert_grants_live(engine: Engine) -> None:
    """Every budget's spend and every member cap row is exactly the sum of its live grants
    (what reversals have not given back, docs/promotions.md), never over budget; a grant's
    money is its bonus at its earn's issuance price, rounded up."""
    spent_points: dict[str, int] = {}
    spent_minor: dict[str, int] = {}
    caps: dict[tuple[str, str, str], tuple[int, int]] = {}
    with engine.connect() as connection:
        money_budgeted = {
            row[0]
            for row in connection.execute(
                text("SELECT promotion_id FROM promotions WHERE budget_amount_minor IS NOT NULL")
            )
        }
        for (
            promotion_id,
            member_id,
            period,
            points,
            budget_points,
            amount_minor,
            total,
            reversed_points,
            bonus_points,
            price,
        ) in connection.execute(text(EARN_GRANTS)):
            assert bonus_points == points, ("a grant is its earn's bonus", promotion_id)
            assert budget_points in (0, points), (promotion_id, budget_points, points)
            if promotion_id in money_budgeted:
                assert amount_minor == math.ceil(points * Fraction(Decimal(price))), promotion_id
            else:
                assert amount_minor == 0, promotion_id
            spent_points[promotion_id] = spent_points.get(promotion_id, 0) + live(
                budget_points, total, reversed_points
            )
            spent_minor[promotion_id] = spent_minor.get(promotion_id, 0) + live(
                amount_minor, total, reversed_points
            )
            if period is not None and reversed_points < total:
                grants, so_far = caps.get((promotion_id, member_id, period), (0, 0))
                caps[(promotion_id, member_id, period)] = (
                    grants + 1,
                    so_far + live(points, total, reversed_points),
                )
        for promotion_id, budget, spent, budget_minor, spent_amount in connection.execute(
            text(
                "SELECT promotion_id, budget_points, spent_points, budget_amount_minor,"
                " spent_amount_minor FROM promotions"
            )
        ):
            assert spent == spent_points.get(promotion_id, 0), (promotion_id, spent)
            assert budget is None or spent <= budget, (promotion_id, budget, spent)
            assert spent_amount == spent_minor.get(promotion_id, 0), (promotion_id, spent_amount)
            assert budget_minor is None or spent_amount <= budget_minor, promotion_id
        rows = {
            (promotion_id, member_id, period): (int(grants), int(points))
            for promotion_id, member_id, period, grants, points in connection.execute(
                text(
                    "SELECT promotion_id, member_id, cap_period, grants, points"
                    " FROM promotion_member_grants"
                )
            )
        }
    assert rows == caps, "a member's cap rows count exactly its live grants"

"""Last month, replayed at its own instants: the traffic the demo then settles.

A period can only be settled once it is over, so the demo's closed period needs traffic that
happened in it. It is written through the hub's use cases (the functions the gRPC servicers
call) with the demo's clock in place of the servicers' `datetime.now`: each transaction's
`occurred_at` and its commit stamp (`create_time`) are the clock's instant, inside the period,
and every rule (rates in force, tiers, promotions, holds, refunds) applies as it would have
then. Nothing is edited behind the ledger's back.

The partners keep their own log of what they asked (`PartnerLog`): the report a partner sends
for reconciliation is built from it, not from the hub's tables.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from coalition import operations
from coalition.demo.output import say
from coalition.domain.errors import CoalitionError
from coalition.domain.points import Money
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.partners import daily_sales
from coalition.partners.manifest import PartnerManifest
from coalition.programme import tiers
from coalition.programme.config import Programme
from coalition.reports.period import Period
from coalition.store.schema import earn_bonuses
from coalition.store.unit_of_work import UnitOfWork

PEOPLE = ("Mei Lin", "Tom Okafor", "Ana Souza", "Kenji Sato", "Priya Nair", "Lukas Weber")
RANDOM_SEED = 20261123
RANDOM_OPERATIONS = 160
MEMBER_DAY = 8  # promotions.toml: "member-day" doubles earns on the 8th (Asia/Shanghai)
HOLD_TTL = timedelta(minutes=15)


@dataclass(frozen=True)
class LoggedOperation:
    """One line of a partner's own record: what it asked the hub, in report form."""

    request_id: str
    type: str
    points: int
    occurred_at: datetime
    member: str


@dataclass
class PartnerLog:
    operations: list[LoggedOperation] = field(default_factory=list)


@dataclass
class LastMonth:
    """What the replay leaves for the closing: the members and every partner's own log."""

    member_ids: dict[str, str]  # display name -> member id
    logs: dict[str, PartnerLog]
    transactions: int = 0


class DemoClock:
    """Instants inside the period: day D of it at HH:MM UTC, never outside it."""

    def __init__(self, period: Period) -> None:
        self.period = period

    def at(self, day: int, hour: int, minute: int = 0) -> datetime:
        instant = self.period.start + timedelta(days=day - 1, hours=hour, minutes=minute)
        assert self.period.start <= instant < self.period.end, instant
        return instant


class Replay:
    def __init__(
        self,
        engine: Engine,
        manifests: list[PartnerManifest],
        programme: Programme,
        clock: DemoClock,
    ) -> None:
        self.engine = engine
        self.programme = programme
        self.clock = clock
        self.by_kind = {manifest.kind: manifest for manifest in manifests}
        self.manifests = manifests
        self.state = LastMonth({}, {manifest.partner_id: PartnerLog() for manifest in manifests})
        self.tiers_seen: dict[str, str] = {}

    def partner(self, kind: str) -> PartnerManifest:
        if kind not in self.by_kind:
            raise RuntimeError(f"the demo needs a partner of kind {kind}")
        return self.by_kind[kind]

    def customer_id(self, partner_id: str, name: str) -> str:
        return f"{partner_id}-C{PEOPLE.index(name):04}"

    def enrol_everyone(self, at: datetime) -> None:
        for index, name in enumerate(PEOPLE):
            home = self.manifests[index % len(self.manifests)]
            enrolment = members.enroll(
                UnitOfWork(self.engine),
                home.partner_id,
                _request_id(),
                self.customer_id(home.partner_id, name),
                name,
                at,
            )
            member_id = enrolment.member.member_id
            for other in self.manifests:
                if other is not home:
                    members.link_partner_account(
                        UnitOfWork(self.engine),
                        other.partner_id,
                        _request_id(),
                        member_id,
                        self.customer_id(other.partner_id, name),
                        at,
                    )
            self.state.member_ids[name] = member_id
            say(
                f"   {name:<11} enrolled at {home.partner_id:<16} -> {member_id}, linked at "
                f"the {len(self.manifests) - 1} other brands"
            )

    def earn(
        self, kind: str, name: str, amount_minor: int, at: datetime, what: str
    ) -> operations.LedgerResult:
        manifest = self.partner(kind)
        command = operations.EarnCommand(
            request_id=_request_id(),
            member=MemberReference(member_id=self.state.member_ids[name]),
            spend=Money(amount_minor, manifest.currency),
            partner_reference=what,
        )
        result = operations.earn(
            UnitOfWork(self.engine), self.programme, manifest.partner_id, command, at
        )
        self._log(manifest, command.request_id, "earn", result, name)
        return result

    def burn(self, kind: str, name: str, points: int, at: datetime) -> operations.LedgerResult:
        manifest = self.partner(kind)
        command = operations.BurnCommand(
            request_id=_request_id(),
            member=MemberReference(member_id=self.state.member_ids[name]),
            points=points,
        )
        result = operations.burn(UnitOfWork(self.engine), manifest.partner_id, command, at)
        self._log(manifest, command.request_id, "burn", result, name)
        return result

    def reverse(
        self, kind: str, name: str, transaction_id: int, points: int, at: datetime, reason: str
    ) -> operations.LedgerResult:
        manifest = self.partner(kind)
        command = operations.ReverseCommand(_request_id(), transaction_id, points, reason)
        result = operations.reverse(UnitOfWork(self.engine), manifest.partner_id, command, at)
        self._log(manifest, command.request_id, "reverse", result, name)
        return result

    def _log(
        self,
        manifest: PartnerManifest,
        request_id: str,
        kind: str,
        result: operations.LedgerResult,
        name: str,
    ) -> None:
        self.state.transactions += 1
        self.state.logs[manifest.partner_id].operations.append(
            LoggedOperation(
                request_id,
                kind,
                abs(result.transaction.points_delta),
                result.transaction.occurred_at,
                self.customer_id(manifest.partner_id, name),
            )
        )

    def tier_of(self, name: str) -> str:
        with UnitOfWork(self.engine, read_only=True) as uow:
            return tiers.current_tier(
                uow, self.state.member_ids[name], self.programme.ladder
            ).tier.name

    def bonuses_of(self, transaction_id: int) -> list[tuple[str, int]]:
        with UnitOfWork(self.engine, read_only=True) as uow:
            rows = uow.connection.execute(
                select(earn_bonuses.c.rule_id, earn_bonuses.c.points)
                .where(earn_bonuses.c.transaction_id == transaction_id)
                .order_by(earn_bonuses.c.rule_id)
            ).all()
        return [(row.rule_id, row.points) for row in rows]


def replay(
    engine: Engine, manifests: list[PartnerManifest], programme: Programme, period: Period
) -> LastMonth:
    """The month's story under `programme`, section by section, at instants inside `period`."""
    clock = DemoClock(period)
    story = Replay(engine, manifests, programme, clock)
    say(f"\n1. {period.label}: one person, one identity across brands")
    story.enrol_everyone(clock.at(1, 9))

    say("\n2. Mei earns across brands: a tier upgrade, then a promotion on member day")
    _show(
        story,
        "supermarket",
        story.earn("supermarket", "Mei Lin", 52_000, clock.at(2, 18), "the weekly shop"),
        "spends 520.00 CNY: the weekly shop",
    )
    _show(
        story,
        "airline",
        story.earn("airline", "Mei Lin", 520_000, clock.at(3, 7), "PVG-LHR return"),
        "spends 5200.00 EUR: PVG-LHR return",
    )
    _show(
        story,
        "coffee_chain",
        story.earn("coffee_chain", "Mei Lin", 9_600, clock.at(5, 1), "two lattes"),
        "spends 96.00 CNY: two lattes",
    )
    # The 8th in Shanghai: 12:00 there is 04:00 UTC.
    _show(
        story,
        "coffee_chain",
        story.earn(
            "coffee_chain", "Mei Lin", 9_600, clock.at(MEMBER_DAY, 4), "two lattes, member day"
        ),
        "spends 96.00 CNY on member day",
    )

    say("\n3. A cross-brand burn: points earned flying pay for the cinema")
    _show(
        story,
        "cinema",
        story.burn("cinema", "Mei Lin", 1_200, clock.at(10, 19)),
        "burns 1200 points on 2 tickets",
    )

    say("\n4. A hold at the airline: authorised at check-in, captured at the gate")
    _hold(story, clock.at(14, 6))

    say("\n5. A refund: the supermarket reverses half of a coat")
    coat = story.earn("supermarket", "Mei Lin", 120_000, clock.at(16, 11), "a coat")
    _show(story, "supermarket", coat, "spends 1200.00 CNY: a coat")
    refund = story.reverse(
        "supermarket", "Mei Lin", coat.transaction.transaction_id, coat.points // 2,
        clock.at(18, 15), "coat returned, half refunded",
    )  # fmt: skip
    _show(story, "supermarket", refund, f"reverses half of #{coat.transaction.transaction_id}")

    say(f"\n6. The rest of the month: {RANDOM_OPERATIONS} earns and burns of the six members")
    counts = _everyday_traffic(story, clock)
    say("   " + ", ".join(f"{name}: {count}" for name, count in counts.items()))
    _daily_sales(story, clock)
    return story.state


# Total sales of their own tills (members' and others'), as two partners report them for the
# report's share of sales from members: the supermarket the 20th to the 27th (and a correction
# of the 21st), the coffee chain the 20th to the 24th.
DAILY_SALES = (("supermarket", range(20, 28), 900_000), ("coffee_chain", range(20, 25), 120_000))
CORRECTED_DAY = 21


def _daily_sales(story: Replay, clock: DemoClock) -> None:
    reported_at = clock.at(28, 9)
    for kind, days, base_minor in DAILY_SALES:
        manifest = story.partner(kind)
        for day in days:
            _report_sales(story, manifest, clock.at(day, 0), base_minor + 10_000 * day, reported_at)
        note = ""
        if kind == "supermarket":  # a till left out: the day's total again, as version 2
            amount_minor = base_minor + 10_000 * CORRECTED_DAY + 75_000
            _report_sales(story, manifest, clock.at(CORRECTED_DAY, 0), amount_minor, reported_at)
            note = f", then corrects the {CORRECTED_DAY}st"
        say(
            f"   {manifest.partner_id:<16} reports its total sales of the {days[0]}th to the "
            f"{days[-1]}th{note}"
        )


def _report_sales(
    story: Replay, manifest: PartnerManifest, day: datetime, amount_minor: int, at: datetime
) -> None:
    daily_sales.report_daily_sales(
        UnitOfWork(story.engine),
        manifest.partner_id,
        f"{manifest.partner_id}:back-office",
        _request_id(),
        day.date(),
        Money(amount_minor, manifest.currency),
        at,
    )


def _hold(story: Replay, at: datetime) -> None:
    air = story.partner("airline")
    member = MemberReference(member_id=story.state.member_ids["Mei Lin"])
    authorised = operations.authorize_burn(
        UnitOfWork(story.engine),
        air.partner_id,
        operations.AuthorizeCommand(_request_id(), member, HOLD_TTL, points=800),
        at,
    )
    say(
        f"   {air.partner_id:<16} {'holds 800 points for a seat upgrade':<42} "
        f"held {authorised.points:>5}  spendable {authorised.balance_points:>6}"
        f"  hold #{authorised.hold.hold_id}"
    )
    captured = operations.capture_burn(
        UnitOfWork(story.engine),
        air.partner_id,
        operations.CaptureCommand(_request_id(), authorised.hold.hold_id, 600),
        at + timedelta(minutes=5),
    )
    say(
        f"   {air.partner_id:<16} {'captures 600, releases the rest':<42} "
        f"{-captured.points:>+7} points  balance {captured.balance_points:>6}"
        f"  tx #{captured.transaction.transaction_id}"
    )
    story.state.transactions += 2


def _everyday_traffic(story: Replay, clock: DemoClock) -> dict[str, int]:
    generator = random.Random(RANDOM_SEED)
    counts = {"earned": 0, "burned": 0, "refused (insufficient points)": 0}
    kinds = list(story.by_kind)
    for index in range(RANDOM_OPERATIONS):
        kind = generator.choice(kinds)
        name = generator.choice(PEOPLE)
        # Spread over days 20..27, in order, so that the month's instants only move forward.
        at = clock.at(20 + index * 8 // RANDOM_OPERATIONS, 8, (index * 37) % 60)
        if generator.random() < 0.65:
            story.earn(kind, name, generator.randint(500, 60_000), at, "everyday")
            counts["earned"] += 1
            continue
        try:
            story.burn(kind, name, generator.randint(10, 400), at)
            counts["burned"] += 1
        except CoalitionError as error:
            if error.reason != "INSUFFICIENT_POINTS":
                raise
            counts["refused (insufficient points)"] += 1
    return counts


def _show(story: Replay, kind: str, result: operations.LedgerResult, what: str) -> None:
    transaction = result.transaction
    extras: list[Any] = []
    if transaction.kind == "earn":
        extras = [
            f"{rule} +{points}" for rule, points in story.bonuses_of(transaction.transaction_id)
        ]
    name = next(n for n, m in story.state.member_ids.items() if m == transaction.member_id)
    tier = ""
    if transaction.kind == "earn":
        tier_name = story.tier_of(name)
        upgraded = story.tiers_seen.get(name, tier_name) != tier_name
        story.tiers_seen[name] = tier_name
        tier = f"  tier {tier_name}{' (upgraded)' if upgraded else ''}"
    bonus = f"  ({', '.join(extras)})" if extras else ""
    say(
        f"   {story.partner(kind).partner_id:<16} {what:<42} {transaction.points_delta:>+7} points"
        f"  balance {result.balance_points:>6}  tx #{transaction.transaction_id}{tier}{bonus}"
    )


def _request_id() -> str:
    return str(uuid.uuid4())

"""`coalition demo`: the product's story end to end, through real gRPC calls on loopback.

Four partners of one group (coffee chain, supermarket, airline, cinema) issue and redeem one
currency against one member identity; retries are replayed, mistakes refused, refunds reversed.
"""

from __future__ import annotations

import random
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import Engine

from coalition.api.server import Hub
from coalition.client import HubClient, HubError
from coalition.ledger.totals import partner_totals
from coalition.partners import credentials
from coalition.partners.manifest import PartnerManifest, load_manifests
from coalition.partners.sync import sync_partners
from coalition.store import migrate
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, member_service_pb2, points_service_pb2

RANDOM_SEED = 20261123
RANDOM_OPERATIONS = 240
PEOPLE = ("Mei Lin", "Tom Okafor", "Ana Souza", "Kenji Sato", "Priya Nair", "Lukas Weber")


@dataclass
class PartnerClient:
    manifest: PartnerManifest
    hub: HubClient

    @property
    def partner_id(self) -> str:
        return self.manifest.partner_id


def run(database_url: str | None, partners_directory: Path) -> int:
    with _database(database_url) as url:
        engine = create_database_engine(url)
        migrate.prepare(engine)
        manifests = load_manifests(partners_directory)
        sync_partners(UnitOfWork(engine), manifests, datetime.now(UTC))
        _say(f"Ledger: {engine.url.render_as_string(hide_password=True)}")
        _say(
            f"Partners synced from {partners_directory}/: "
            + ", ".join(f"{m.partner_id} ({m.kind}, {m.currency})" for m in manifests)
        )
        hub = Hub(engine, "127.0.0.1:0").start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
                clients = [_client(engine, channel, manifest) for manifest in manifests]
                _story(clients)
        finally:
            hub.stop(grace_seconds=1)
        _print_partner_totals(engine)
        engine.dispose()
    return 0


@contextmanager
def _database(database_url: str | None) -> Iterator[str]:
    if database_url:
        yield database_url
        return
    with tempfile.TemporaryDirectory(prefix="coalition-demo-") as directory:
        yield f"sqlite:///{directory}/demo.db"


def _client(engine: Engine, channel: grpc.Channel, manifest: PartnerManifest) -> PartnerClient:
    issued = credentials.issue_key(
        UnitOfWork(engine), manifest.partner_id, "partner", datetime.now(UTC)
    )
    return PartnerClient(manifest, HubClient(channel, issued.api_key))


def _story(clients: list[PartnerClient]) -> None:
    coffee, market, air, cinema = _by_kind(
        clients, ("coffee_chain", "supermarket", "airline", "cinema")
    )
    _say("\n1. One person, one identity across brands")
    member_ids = []
    for index, person in enumerate(PEOPLE):
        home = clients[index % len(clients)]
        enrolled = home.hub.enroll_member(
            member_service_pb2.EnrollMemberRequest(
                request_id=_request_id(),
                partner_customer_id=f"{home.partner_id}-C{index:04}",
                display_name=person,
            )
        )
        member_ids.append(enrolled.member.member_id)
        for other in clients:
            if other is not home:
                other.hub.link_partner_account(
                    member_service_pb2.LinkPartnerAccountRequest(
                        request_id=_request_id(),
                        member_id=enrolled.member.member_id,
                        partner_customer_id=f"{other.partner_id}-C{index:04}",
                    )
                )
        _say(
            f"   {person:<11} enrolled at {home.partner_id:<16} -> {enrolled.member.member_id}"
            f", linked at the {len(clients) - 1} other brands"
        )
    mei = member_ids[0]

    _say("\n2. Mei earns at the coffee chain, the supermarket and the airline")
    _earn_spend(coffee, mei, 4_800, "a latte and a cake")
    _earn_spend(market, mei, 35_670, "the weekly shop")
    _show(
        air,
        air.hub.earn(
            points_service_pb2.EarnRequest(
                request_id=_request_id(),
                member=common_pb2.MemberReference(member_id=mei),
                native_points=5_000,
                partner_reference="miles conversion",
            )
        ),
        "converts 5000 Larkspur miles",
    )

    _say("\n3. Exactly once: the cinema's POS retries a burn after a timeout")
    burn = points_service_pb2.BurnRequest(
        request_id=_request_id(),
        member=common_pb2.MemberReference(member_id=mei),
        value=common_pb2.Money(amount_minor=1_250, currency=cinema.manifest.currency),
        partner_reference="2 tickets",
    )
    _show(cinema, cinema.hub.burn(burn), "pays 2 tickets with points")
    _show(cinema, cinema.hub.burn(burn), "same request_id again")
    burn.value.amount_minor = 2_500
    _expect_error(
        cinema,
        lambda: cinema.hub.burn(burn),
        "same request_id, another amount",
    )

    _say("\n4. Mistakes are refused and change nothing")
    _expect_error(
        coffee,
        lambda: coffee.hub.burn(
            points_service_pb2.BurnRequest(
                request_id=_request_id(),
                member=common_pb2.MemberReference(member_id=mei),
                points=10**9,
            )
        ),
        "burn more than the balance",
    )
    _expect_error(
        coffee,
        lambda: coffee.hub.earn(
            points_service_pb2.EarnRequest(
                request_id=_request_id(),
                member=common_pb2.MemberReference(member_id=mei),
                spend=common_pb2.Money(amount_minor=1_000, currency="EUR"),
            )
        ),
        "earn in a currency that is not the partner's",
    )

    _say("\n5. A refund: the supermarket reverses part of Mei's earn")
    earned = _earn_spend(market, mei, 12_000, "a coat")
    _show(
        market,
        market.hub.reverse(
            points_service_pb2.ReverseRequest(
                request_id=_request_id(),
                transaction_id=earned.transaction.transaction_id,
                points=earned.points // 2,
                reason="coat returned, half refunded",
            )
        ),
        f"reverses half of transaction {earned.transaction.transaction_id}",
    )

    _say(f"\n6. Everyday traffic: {RANDOM_OPERATIONS} random earns, burns and reversals")
    counts = _random_traffic(clients, member_ids)
    _say("   " + ", ".join(f"{name}: {count}" for name, count in counts.items()))

    _say("\n7. Balances, asked of the hub")
    for person, member_id in zip(PEOPLE, member_ids, strict=True):
        balance = coffee.hub.get_balance(
            points_service_pb2.GetBalanceRequest(
                member=common_pb2.MemberReference(member_id=member_id)
            )
        )
        _say(f"   {person:<11} {balance.balance_points:>8} points")
    listed = cinema.hub.list_transactions(
        points_service_pb2.ListTransactionsRequest(
            member=common_pb2.MemberReference(member_id=mei), page_size=3
        )
    )
    _say(
        f"   Mei's latest transactions at {cinema.partner_id}: "
        + "; ".join(
            f"#{t.transaction_id} {common_pb2.TransactionKind.Name(t.kind)[17:].lower()} "
            f"{t.points_delta:+}"
            for t in listed.transactions
        )
    )


def _random_traffic(clients: list[PartnerClient], member_ids: list[str]) -> dict[str, int]:
    generator = random.Random(RANDOM_SEED)
    counts = {"earned": 0, "burned": 0, "reversed": 0, "refused (insufficient points)": 0}
    earns: list[tuple[PartnerClient, str]] = []
    for _ in range(RANDOM_OPERATIONS):
        client = generator.choice(clients)
        member = common_pb2.MemberReference(member_id=generator.choice(member_ids))
        roll = generator.random()
        try:
            if roll < 0.6:
                response = client.hub.earn(
                    points_service_pb2.EarnRequest(
                        request_id=_request_id(),
                        member=member,
                        spend=common_pb2.Money(
                            amount_minor=generator.randint(500, 60_000),
                            currency=client.manifest.currency,
                        ),
                    )
                )
                earns.append((client, response.transaction.transaction_id))
                counts["earned"] += 1
            elif roll < 0.9:
                client.hub.burn(
                    points_service_pb2.BurnRequest(
                        request_id=_request_id(), member=member, points=generator.randint(10, 400)
                    )
                )
                counts["burned"] += 1
            elif earns:
                owner, transaction_id = earns.pop(generator.randrange(len(earns)))
                owner.hub.reverse(
                    points_service_pb2.ReverseRequest(
                        request_id=_request_id(),
                        transaction_id=transaction_id,
                        reason="order cancelled",
                    )
                )
                counts["reversed"] += 1
        except HubError as error:
            if error.reason not in ("INSUFFICIENT_POINTS", "POINTS_ALREADY_SPENT"):
                raise
            counts["refused (insufficient points)"] += 1
    return counts


def _earn_spend(
    client: PartnerClient, member_id: str, amount_minor: int, what: str
) -> points_service_pb2.EarnResponse:
    response = client.hub.earn(
        points_service_pb2.EarnRequest(
            request_id=_request_id(),
            member=common_pb2.MemberReference(member_id=member_id),
            spend=common_pb2.Money(amount_minor=amount_minor, currency=client.manifest.currency),
            partner_reference=what,
        )
    )
    _show(client, response, f"spends {amount_minor / 100:.2f} {client.manifest.currency} on {what}")
    return response


def _show(client: PartnerClient, response: Any, what: str) -> None:
    transaction = response.transaction
    replayed = "  (replayed: nothing written)" if response.replayed else ""
    _say(
        f"   {client.partner_id:<16} {what:<42} {transaction.points_delta:>+7} points"
        f"  balance {response.balance_points:>6}  tx #{transaction.transaction_id}{replayed}"
    )


def _expect_error(client: PartnerClient, call: Callable[[], object], what: str) -> None:
    try:
        call()
    except HubError as error:
        _say(f"   {client.partner_id:<16} {what:<42} -> {error.code.name} {error.reason}")
        return
    raise AssertionError(f"the hub accepted: {what}")


def _print_partner_totals(engine: Engine) -> None:
    _say("\n8. Per-partner totals, derived from the journal's postings")
    _say(
        f"   {'partner':<16} {'transactions':>12} {'issued':>9} {'redeemed':>9} "
        f"{'earn rev.':>9} {'burn rev.':>9}"
    )
    for totals in partner_totals(UnitOfWork(engine, read_only=True)):
        _say(
            f"   {totals.partner_id:<16} {totals.transactions:>12} {totals.points_issued:>9} "
            f"{totals.points_redeemed:>9} {totals.points_issued_reversed:>9} "
            f"{totals.points_redeemed_reversed:>9}"
        )


def _by_kind(clients: list[PartnerClient], kinds: tuple[str, ...]) -> list[PartnerClient]:
    by_kind = {client.manifest.kind: client for client in clients}
    missing = [kind for kind in kinds if kind not in by_kind]
    if missing:
        raise RuntimeError(f"the demo needs partners of kinds {', '.join(missing)}")
    return [by_kind[kind] for kind in kinds]


def _request_id() -> str:
    return str(uuid.uuid4())


def _say(line: str) -> None:
    print(line, flush=True)

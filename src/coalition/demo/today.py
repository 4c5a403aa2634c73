"""Today, through real gRPC calls on loopback: the hub as partners' systems see it.

A retried burn is replayed and a changed retry refused; mistakes are refused and change
nothing; balances and transaction lists are asked of the hub.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy import Engine

from coalition.api.server import Hub
from coalition.client import HubClient, HubError
from coalition.demo.last_month import PEOPLE, LastMonth
from coalition.demo.output import say
from coalition.partners import credentials
from coalition.partners.manifest import PartnerManifest
from coalition.programme.config import Programme
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, points_service_pb2


@dataclass
class PartnerClient:
    manifest: PartnerManifest
    hub: HubClient

    @property
    def partner_id(self) -> str:
        return self.manifest.partner_id


def story(
    engine: Engine,
    manifests: list[PartnerManifest],
    programme: Programme,
    month: LastMonth,
    first_section: int,
) -> int:
    """Today's sections, on a hub serving `programme`, numbered from `first_section`; the
    number of the next one."""
    hub = Hub(engine, "127.0.0.1:0", programme=programme).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
            clients = {m.kind: _client(engine, channel, m) for m in manifests}
            mei = month.member_ids["Mei Lin"]
            say(f"\n{first_section}. Today, over gRPC: the cinema's POS retries a burn")
            _exactly_once(clients["cinema"], mei)
            say(f"\n{first_section + 1}. Mistakes are refused and change nothing")
            _refusals(clients["coffee_chain"], mei)
            say(f"\n{first_section + 2}. Balances, asked of the hub")
            _balances(clients["coffee_chain"], clients["cinema"], month)
    finally:
        hub.stop(grace_seconds=1)
    return first_section + 3


def _client(engine: Engine, channel: grpc.Channel, manifest: PartnerManifest) -> PartnerClient:
    issued = credentials.issue_key(
        UnitOfWork(engine), manifest.partner_id, "partner", datetime.now(UTC)
    )
    return PartnerClient(manifest, HubClient(channel, issued.api_key))


def _exactly_once(cinema: PartnerClient, member_id: str) -> None:
    burn = points_service_pb2.BurnRequest(
        request_id=_request_id(),
        member=common_pb2.MemberReference(member_id=member_id),
        value=common_pb2.Money(amount_minor=1_250, currency=cinema.manifest.currency),
        partner_reference="2 tickets",
    )
    _show(cinema, cinema.hub.burn(burn), "pays 2 tickets with points")
    _show(cinema, cinema.hub.burn(burn), "same request_id again")
    burn.value.amount_minor = 2_500
    _expect_error(cinema, lambda: cinema.hub.burn(burn), "same request_id, another amount")


def _refusals(coffee: PartnerClient, member_id: str) -> None:
    member = common_pb2.MemberReference(member_id=member_id)
    _expect_error(
        coffee,
        lambda: coffee.hub.burn(
            points_service_pb2.BurnRequest(request_id=_request_id(), member=member, points=10**9)
        ),
        "burn more than the balance",
    )
    _expect_error(
        coffee,
        lambda: coffee.hub.earn(
            points_service_pb2.EarnRequest(
                request_id=_request_id(),
                member=member,
                spend=common_pb2.Money(amount_minor=1_000, currency="EUR"),
            )
        ),
        "earn in a currency that is not the partner's",
    )


def _balances(coffee: PartnerClient, cinema: PartnerClient, month: LastMonth) -> None:
    for person in PEOPLE:
        balance = coffee.hub.get_balance(
            points_service_pb2.GetBalanceRequest(
                member=common_pb2.MemberReference(member_id=month.member_ids[person])
            )
        )
        say(f"   {person:<11} {balance.balance_points:>8} points")
    listed = cinema.hub.list_transactions(
        points_service_pb2.ListTransactionsRequest(
            member=common_pb2.MemberReference(member_id=month.member_ids["Mei Lin"]), page_size=3
        )
    )
    say(
        f"   Mei's latest transactions at {cinema.partner_id}: "
        + "; ".join(
            f"#{t.transaction_id} {common_pb2.TransactionKind.Name(t.kind)[17:].lower()} "
            f"{t.points_delta:+}"
            for t in listed.transactions
        )
    )


def _show(client: PartnerClient, response: Any, what: str) -> None:
    transaction = response.transaction
    replayed = "  (replayed: nothing written)" if response.replayed else ""
    say(
        f"   {client.partner_id:<16} {what:<42} {transaction.points_delta:>+7} points"
        f"  balance {response.balance_points:>6}  tx #{transaction.transaction_id}{replayed}"
    )


def _expect_error(client: PartnerClient, call: Callable[[], object], what: str) -> None:
    try:
        call()
    except HubError as error:
        say(f"   {client.partner_id:<16} {what:<42} -> {error.code.name} {error.reason}")
        return
    raise AssertionError(f"the hub accepted: {what}")


def _request_id() -> str:
    return str(uuid.uuid4())

"""Partner isolation, RPC by RPC: partner B aims every call it may make at partner A's data.

Partner A (test-coffee) owns real data: members linked under its customer ids, earns, a burn,
an open hold, consent granted to it, a signed settlement statement, a reconciliation run with
an exception, its events and its API key. Partner B (test-air), with its partner key and a
merchant key (B's manifest is extended to allow one), then calls every RPC that a partner or
merchant role may call, enumerated from `api/server.py` (a new RPC without a case fails
`test_every_partner_callable_rpc_has_a_case`), aimed at A's data: A's transaction, hold,
statement and run ids, A's customer ids, A's request ids with A's exact payloads, A's partner
id.

Each case asserts the precise answer: another partner's object looks absent (NOT_FOUND, with
the same code and reason as an id nobody has), and a refused call writes no row. A's member,
which B may name by its coalition id (one identity), is seen only as docs/identity.md
("Privacy between partners") allows an unlinked partner: B may earn for it, and learns no
balance, profile, tier or consent of it from any answer or from its event stream; everything
that reads or spends for it is MEMBER_NOT_LINKED; its email and phone resolve to nothing.

Around each case nothing of A's may change: every row, whole, of every table with a
`partner_id` that belongs to a partner other than B; A's own view through the API (balance,
transactions, customer ids, statements, run, exceptions); and the row count of every table,
unless B legitimately acted for itself (a request id A also used, a customer id in B's own
namespace, B's earns for A's member, B's refusals, B's own report), which may add B's rows
only (and move the shared balance, for earns).

One setup per database (the shared fixtures are function-scoped), then every case in turn;
all failing cases are reported together.
"""

from __future__ import annotations

import base64
import enum
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from operator import methodcaller
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from sqlalchemy import Engine, select

from coalition.api.server import ROLES_BY_METHOD, SERVICE_DESCRIPTORS
from coalition.partners.sync import sync_partners
from coalition.settings import SECRET_ENVIRONMENT_VARIABLE, SECRET_FILE_ENVIRONMENT_VARIABLE
from coalition.settlement import keys, signing
from coalition.settlement.service import Signer
from coalition.store.schema import metadata
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import (
    common_pb2,
    event_service_pb2,
    member_service_pb2,
    partner_service_pb2,
    points_service_pb2,
    promotion_service_pb2,
    reconciliation_service_pb2,
    settlement_service_pb2,
)
from tests.conftest import AIR, COFFEE, api_key
from tests.end_to_end.support import by_id, expect_failure, failure_of, new_id, timestamp
from tests.reconciliation.conftest import Ledger as ReportLedger
from tests.reconciliation.conftest import as_csv
from tests.reconciliation.test_api import messages_of
from tests.reliability.support import row_counts
from tests.settlement.conftest import JANUARY, settle
from tests.settlement.conftest import Ledger as PastLedger
from tests.settlement.test_statements import january_traffic

pytestmark = pytest.mark.reliability

A = "test-coffee"
B = "test-air"
PARTNER_SCOPED_ROLES = frozenset({"partner", "merchant"})
CALL_TIMEOUT_SECONDS = 15.0
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
A_EMAIL, A_PHONE = "mei.lin@example.com", "+86 138 0013 8000"  # A's member's identifiers
NO_SUCH_TRANSACTION_ID = str(10**15)  # well formed, far beyond any id a test creates
Metadata = tuple[tuple[str, str], ...]

METHODS: dict[str, MethodDescriptor] = {
    method.name: method for service in SERVICE_DESCRIPTORS for method in service.methods
}


def path_of(name: str) -> str:
    method = METHODS[name]
    return f"/{method.containing_service.full_name}/{method.name}"


def partner_callable_rpcs() -> set[str]:
    """Every RPC a partner or merchant key may call, from the registered services."""
    return {
        path_of(name)
        for name in METHODS
        if ROLES_BY_METHOD.get(path_of(name), frozenset()) & PARTNER_SCOPED_ROLES
    }


@dataclass(frozen=True)
class Caller:
    """One API key on the channel; calls any RPC by its method name, with a deadline."""

    channel: grpc.Channel
    metadata: Metadata

    def __call__(self, name: str, request: Message | Iterable[Message]) -> Any:
        method = METHODS[name]
        arguments = {
            "request_serializer": methodcaller("SerializeToString"),
            "response_deserializer": message_factory.GetMessageClass(method.output_type).FromString,
        }
        path = path_of(name)
        if method.client_streaming:
            call = self.channel.stream_unary(path, **arguments)
        elif method.server_streaming:
            call = self.channel.unary_stream(path, **arguments)
        else:
            call = self.channel.unary_unary(path, **arguments)
        return call(request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS)


def by_customer(customer_id: str) -> common_pb2.MemberReference:
    return common_pb2.MemberReference(partner_customer_id=customer_id)


# Partner A's data, and the exact requests A sent (B replays some of them as its own).


@dataclass(frozen=True)
class PartnerAData:
    member_id: str
    customer_id: str  # linked to member_id by enrolment
    linked_customer_id: str  # linked to member_id by LinkPartnerAccount
    enrolment: member_service_pb2.EnrollMemberRequest
    second_enrolment: member_service_pb2.EnrollMemberRequest
    link: member_service_pb2.LinkPartnerAccountRequest
    earn: points_service_pb2.EarnRequest
    burn: points_service_pb2.BurnRequest
    authorize: points_service_pb2.AuthorizeBurnRequest
    consent: member_service_pb2.UpdateConsentRequest
    transaction_ids: tuple[str, ...]  # the earn, the burn and the hold's own transaction
    hold_id: str
    statement_id: str
    acknowledgement_signature: bytes  # A's genuine countersignature of its statement
    report: bytes  # A's reconciliation report (CSV), one of A's operations left out
    run_id: str


@dataclass(frozen=True)
class World:
    engine: Engine
    a: Caller
    b: Caller
    b_merchant: Caller
    a_data: PartnerAData
    b_statement_ids: tuple[str, ...]
    b_last_transaction_id: str  # B's newest transaction when the cases start


A_PROMOTION_ID, NO_SUCH_PROMOTION_ID = f"{A}.own", f"{A}.nothing"
A_PROMOTION_REQUEST_ID = "a-promotion-1"


def promotion_of_a(promotion_id: str = A_PROMOTION_ID) -> promotion_service_pb2.Promotion:
    return promotion_service_pb2.Promotion(
        promotion_id=promotion_id,
        starts_at=timestamp(datetime(2020, 1, 1, tzinfo=UTC)),
        ends_at=timestamp(datetime(2100, 1, 1, tzinfo=UTC)),
        bonus_points=5,
    )


def partner_a_requests(customer_id: str) -> dict[str, Message]:
    member = by_customer(customer_id)
    return {
        "enrolment": member_service_pb2.EnrollMemberRequest(
            request_id=new_id(),
            partner_customer_id=customer_id,
            display_name="Mei Lin",
            email=A_EMAIL,
            phone=A_PHONE,
        ),
        "second_enrolment": member_service_pb2.EnrollMemberRequest(
            request_id=new_id(), partner_customer_id=f"a-second-{new_id()}", display_name="Ann"
        ),
        "earn": points_service_pb2.EarnRequest(
            request_id=new_id(),
            member=member,
            spend=common_pb2.Money(amount_minor=50_000, currency="CNY"),
        ),
        "burn": points_service_pb2.BurnRequest(request_id=new_id(), member=member, points=10),
        "authorize": points_service_pb2.AuthorizeBurnRequest(
            request_id=new_id(), member=member, points=20
        ),
        "consent": member_service_pb2.UpdateConsentRequest(
            request_id=new_id(),
            member=member,
            changes=[
                member_service_pb2.ConsentChange(scope="profile.basic", granted=True),
                member_service_pb2.ConsentChange(scope="profile.balance", granted=True),
                member_service_pb2.ConsentChange(scope="profile.tier", granted=True),
            ],
            source="app",
        ),
    }


def with_acknowledgement_key(engine: Engine) -> Ed25519PrivateKey:
    """A's manifest declares its own countersigning key (as tests/settlement does)."""
    private_key = Ed25519PrivateKey.generate()
    encoded = base64.b64encode(signing.raw_public_key(private_key)).decode()
    sync_partners(
        UnitOfWork(engine), [replace(COFFEE, settlement_public_key=encoded)], datetime.now(UTC)
    )
    return private_key


def settle_january(engine: Engine, key_path: Path) -> None:
    """Past traffic of A and B, and January's signed statements for every partner."""
    january_traffic(PastLedger(engine))
    keys.generate(UnitOfWork(engine), key_path, datetime(2025, 12, 1, tzinfo=UTC))
    settle(engine, Signer.from_file(key_path), JANUARY, partner_id=None)


REPORTED_KINDS = ("earn", "burn", "reverse")  # holds are not reconciled


def submit_report_of_a(a: Caller, engine: Engine) -> tuple[bytes, str]:
    """A's report of its own operations, one left out: one exception in A's run."""
    journal = ReportLedger(engine, {}, datetime.now(UTC), datetime.now(UTC)).report_rows(A)
    # One row per operation (the journal rows repeat for each customer id linked to the member).
    operations = {row["request_id"]: row for row in journal if row["type"] in REPORTED_KINDS}
    rows = list(operations.values())
    report = as_csv(rows[:1] + rows[2:])  # inside the window the report's dates span
    run = a("SubmitPartnerReport", messages_of(report)).run
    assert (run.partner_id, run.missing_in_partner, run.exceptions_open) == (A, 1, 1), run
    return report, str(run.run_id)


def build_partner_a(
    a: Caller, engine: Engine, acknowledgement_key: Ed25519PrivateKey
) -> PartnerAData:
    customer_id, linked_customer_id = f"a-{new_id()}", f"a-linked-{new_id()}"
    requests = partner_a_requests(customer_id)
    member_id = str(a("EnrollMember", requests["enrolment"]).member.member_id)
    a("EnrollMember", requests["second_enrolment"])
    link = member_service_pb2.LinkPartnerAccountRequest(
        request_id=new_id(), member_id=member_id, partner_customer_id=linked_customer_id
    )
    a("LinkPartnerAccount", link)
    earned = a("Earn", requests["earn"])
    burned = a("Burn", requests["burn"])
    held = a("AuthorizeBurn", requests["authorize"])
    assert held.hold.status == points_service_pb2.HOLD_STATUS_OPEN
    a("UpdateConsent", requests["consent"])
    statement_id = f"{A}-{JANUARY:%Y%m%d}"
    statement = a(
        "GetSettlement", settlement_service_pb2.GetSettlementRequest(statement_id=statement_id)
    ).statement
    report, run_id = submit_report_of_a(a, engine)
    a(
        "CreatePromotion",
        promotion_service_pb2.CreatePromotionRequest(
            request_id=A_PROMOTION_REQUEST_ID, promotion=promotion_of_a()
        ),
    )
    return PartnerAData(
        member_id=member_id,
        customer_id=customer_id,
        linked_customer_id=linked_customer_id,
        enrolment=requests["enrolment"],
        second_enrolment=requests["second_enrolment"],
        link=link,
        earn=requests["earn"],
        burn=requests["burn"],
        authorize=requests["authorize"],
        consent=requests["consent"],
        transaction_ids=tuple(
            str(response.transaction.transaction_id) for response in (earned, burned, held)
        ),
        hold_id=str(held.hold.hold_id),
        statement_id=statement_id,
        acknowledgement_signature=acknowledgement_key.sign(
            signing.acknowledgement_message(statement.statement_hash)
        ),
        report=report,
        run_id=run_id,
    )


@pytest.fixture(autouse=True)
def identity_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A's member has an email and a phone: the hub needs its identity secret for them."""
    monkeypatch.setenv(SECRET_ENVIRONMENT_VARIABLE, secrets.token_hex(32))
    monkeypatch.delenv(SECRET_FILE_ENVIRONMENT_VARIABLE, raising=False)


@pytest.fixture
def world(engine: Engine, channel: grpc.Channel, tmp_path: Path) -> World:
    acknowledgement_key = with_acknowledgement_key(engine)
    # B's manifest also allows merchant keys, so that B's CRM can be aimed at A as well.
    sync_partners(
        UnitOfWork(engine), [replace(AIR, roles=("partner", "merchant"))], datetime.now(UTC)
    )
    settle_january(engine, tmp_path / "signing.pem")
    a = Caller(channel, api_key(engine, A))
    b = Caller(channel, api_key(engine, B))
    a_data = build_partner_a(a, engine, acknowledgement_key)
    # B's own member and earn come last: B's event stream has reached everything before.
    b_customer_id = f"b-{new_id()}"
    b(
        "EnrollMember",
        member_service_pb2.EnrollMemberRequest(
            request_id=new_id(), partner_customer_id=b_customer_id
        ),
    )
    b_earned = b(
        "Earn",
        points_service_pb2.EarnRequest(
            request_id=new_id(),
            member=by_customer(b_customer_id),
            spend=common_pb2.Money(amount_minor=2_000, currency="EUR"),
        ),
    )
    return World(
        engine=engine,
        a=a,
        b=b,
        b_merchant=Caller(channel, api_key(engine, B, "merchant")),
        a_data=a_data,
        b_statement_ids=(f"{B}-{JANUARY:%Y%m%d}",),
        b_last_transaction_id=str(b_earned.transaction.transaction_id),
    )


# What a case may change, and the snapshot that checks it.


class Effect(enum.Enum):
    NOTHING = "refused or read-only: no row of any table changes"
    AUDIT = "a read B is audited for: only profile_reads rows are added"
    REFUSAL_KEPT = "B was refused: only B's refusal is kept under its request id"
    OWN_WRITES = "B acted for itself: rows of other partners unchanged, shared balance may move"


TABLES_WITH_PARTNER_ID = tuple(
    table for table in metadata.sorted_tables if "partner_id" in table.columns
)
ALLOWED_COUNT_CHANGES = {
    Effect.NOTHING: frozenset(),
    Effect.AUDIT: frozenset({"profile_reads"}),
    Effect.REFUSAL_KEPT: frozenset({"idempotency_keys"}),
}


def rows_of_partners_other_than(engine: Engine, partner_id: str) -> dict[str, list[str]]:
    """Every row, whole, of every table with a partner_id, that another partner owns."""
    with engine.connect() as connection:
        return {
            table.name: sorted(
                repr(tuple(row))
                for row in connection.execute(
                    select(table).where(
                        table.c.partner_id.is_not(None), table.c.partner_id != partner_id
                    )
                )
            )
            for table in TABLES_WITH_PARTNER_ID
        }


def every_page(call: Callable[[str], Any], field: str) -> list[Message]:
    found: list[Message] = []
    page_token = ""
    for _ in range(100):
        page = call(page_token)
        found.extend(getattr(page, field))
        page_token = page.next_page_token
        if not page_token:
            return found
    raise AssertionError(f"more than 100 pages of {field}")


def transactions_page(
    caller: Caller, member: common_pb2.MemberReference | None, page_token: str
) -> points_service_pb2.ListTransactionsResponse:
    request = points_service_pb2.ListTransactionsRequest(
        member=member, page_size=500, page_token=page_token
    )
    response: points_service_pb2.ListTransactionsResponse = caller("ListTransactions", request)
    return response


def view_of_a(world: World) -> dict[str, object]:
    """What A itself sees of its data through the API (reads only: nothing is audited)."""
    a, data = world.a, world.a_data
    balance = a("GetBalance", points_service_pb2.GetBalanceRequest(member=by_id(data.member_id)))
    promotion = a(
        "GetPromotion", promotion_service_pb2.GetPromotionRequest(promotion_id=A_PROMOTION_ID)
    )
    return {
        "promotion": promotion,
        "balance": (balance.balance_points, balance.held_points),
        "transactions": every_page(partial(transactions_page, a, None), "transactions"),
        "customers": [
            a("ResolveMember", member_service_pb2.ResolveMemberRequest(partner_customer_id=c))
            for c in (
                data.customer_id,
                data.linked_customer_id,
                data.second_enrolment.partner_customer_id,
            )
        ],
        "statements": every_page(
            lambda token: a(
                "ListSettlements", settlement_service_pb2.ListSettlementsRequest(page_token=token)
            ),
            "statements",
        ),
        "run": a(
            "GetReconciliationRun",
            reconciliation_service_pb2.GetReconciliationRunRequest(run_id=data.run_id),
        ),
        "exceptions": every_page(
            lambda token: a(
                "ListReconciliationExceptions",
                reconciliation_service_pb2.ListReconciliationExceptionsRequest(
                    run_id=data.run_id, page_token=token
                ),
            ),
            "exceptions",
        ),
    }


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    others_rows: dict[str, list[str]]
    view: dict[str, object]

    @classmethod
    def take(cls, world: World) -> Snapshot:
        return cls(
            row_counts(world.engine),
            rows_of_partners_other_than(world.engine, B),
            view_of_a(world),
        )


def assert_only_allowed_changes(before: Snapshot, after: Snapshot, effect: Effect) -> None:
    changed_rows = {
        table: sorted(set(before.others_rows[table]) ^ set(after.others_rows[table]))[:4]
        for table in before.others_rows
        if before.others_rows[table] != after.others_rows[table]
    }
    assert not changed_rows, f"rows of other partners than B changed: {changed_rows}"
    ignored = {"balance"} if effect is Effect.OWN_WRITES else set()
    changed_view = [
        name
        for name in before.view
        if name not in ignored and before.view[name] != after.view[name]
    ]
    assert not changed_view, f"A's own view changed: {changed_view}"
    if effect is not Effect.OWN_WRITES:
        changed_tables = {
            table: (before.counts[table], after.counts[table])
            for table in before.counts
            if before.counts[table] != after.counts[table]
        }
        unexpected = set(changed_tables) - ALLOWED_COUNT_CHANGES[effect]
        assert not unexpected, f"row counts changed ({effect.value}): {changed_tables}"


# The cases: one per RPC a partner or merchant may call.


def refused_as_absent(
    world: World, call: Callable[[], object], reason: str, **metadata: str
) -> None:
    """NOT_FOUND with `reason` (what an id that exists nowhere gets), and no row written."""
    counts = row_counts(world.engine)
    failure = expect_failure(call, NOT_FOUND, reason)
    for key, value in metadata.items():
        assert failure.metadata.get(key) == value, failure.metadata
    assert row_counts(world.engine) == counts, f"the refused call wrote rows ({reason})"


def same_answer_as_for_nothing(call: Callable[[str], object], existing: str, absent: str) -> None:
    """A's object and an id nobody has get the same code and reason: B cannot tell A's
    object exists."""
    answers = []
    for target in (existing, absent):
        with pytest.raises(grpc.RpcError) as caught:
            call(target)
        failure = failure_of(caught.value)
        answers.append((failure.code, failure.reason, sorted(failure.metadata)))
    assert answers[0] == answers[1], answers


def member_of_a_by_customer_id(world: World, name: str, request: Message) -> None:
    refused_as_absent(
        world,
        lambda: world.b(name, request),
        "MEMBER_NOT_FOUND",
        partner_customer_id=world.a_data.customer_id,
    )


def member_of_a_not_linked(world: World, name: str, request: Message) -> None:
    """By A's member's coalition id: refused, since B has no link to the member."""
    counts = row_counts(world.engine)
    failure = expect_failure(
        lambda: world.b(name, request), FAILED_PRECONDITION, "MEMBER_NOT_LINKED"
    )
    assert failure.metadata == {"member_id": world.a_data.member_id, "partner_id": B}
    changed = {t for t, count in row_counts(world.engine).items() if counts[t] != count}
    assert changed <= {"idempotency_keys"}, f"the refused call wrote rows: {changed}"


def with_member(request: Message, member: common_pb2.MemberReference) -> Message:
    """`request` again, aimed at `member`, under a new request id when it has one."""
    aimed = type(request)()
    aimed.CopyFrom(request)
    aimed.member.CopyFrom(member)  # type: ignore[attr-defined]
    if "request_id" in aimed.DESCRIPTOR.fields_by_name:
        aimed.request_id = new_id()  # type: ignore[attr-defined]
    return aimed


def assert_balance_withheld(answer: Any) -> None:
    assert (answer.balance_points, answer.transaction.balance_points_after) == (0, 0), answer
    assert answer.transaction.balance_withheld


def case_earn(world: World) -> Effect:
    data = world.a_data
    member_of_a_by_customer_id(world, "Earn", data.earn)  # A's exact request, not A's replay
    # A request id that A used (for its enrolment) is B's to use: B's own, new earn.
    mine = world.b(
        "Earn",
        points_service_pb2.EarnRequest(
            request_id=data.enrolment.request_id,
            member=by_id(data.member_id),
            spend=common_pb2.Money(amount_minor=1_000, currency="EUR"),
        ),
    )
    assert not mine.replayed
    assert mine.transaction.partner_id == B
    assert mine.transaction.transaction_id not in data.transaction_ids
    assert_balance_withheld(mine)  # one identity to earn for, but not B's to look at
    return Effect.OWN_WRITES


def case_batch_earn(world: World) -> Effect:
    item = points_service_pb2.EarnRequest(
        request_id=new_id(),
        member=by_customer(world.a_data.customer_id),
        spend=common_pb2.Money(amount_minor=1_000, currency="EUR"),
    )
    all_or_nothing = points_service_pb2.BatchEarnRequest(
        items=[item], mode=points_service_pb2.BATCH_EARN_MODE_ALL_OR_NOTHING
    )
    refused_as_absent(world, lambda: world.b("BatchEarn", all_or_nothing), "MEMBER_NOT_FOUND")
    item.request_id = new_id()
    per_item = world.b(
        "BatchEarn",
        points_service_pb2.BatchEarnRequest(
            items=[item], mode=points_service_pb2.BATCH_EARN_MODE_PER_ITEM
        ),
    )
    (result,) = per_item.results
    assert (per_item.applied_count, per_item.failed_count) == (0, 1)
    assert (result.error.code, result.error.reason) == (NOT_FOUND.value[0], "MEMBER_NOT_FOUND")
    # By coalition id, B's own earns for A's member apply, and withhold the balance.
    by_member_id = points_service_pb2.BatchEarnRequest(
        items=[with_member(item, by_id(world.a_data.member_id)) for _ in range(2)],
        mode=points_service_pb2.BATCH_EARN_MODE_PER_ITEM,
    )
    earned = world.b("BatchEarn", by_member_id)
    assert (earned.applied_count, earned.failed_count) == (2, 0), earned
    for each in earned.results:
        assert_balance_withheld(each.earn)
    return Effect.OWN_WRITES


def case_burn(world: World) -> Effect:
    member_of_a_by_customer_id(world, "Burn", world.a_data.burn)
    for points in (1, 10**9):  # neither success nor INSUFFICIENT_POINTS would tell the balance
        request = with_member(world.a_data.burn, by_id(world.a_data.member_id))
        request.points = points  # type: ignore[attr-defined]
        member_of_a_not_linked(world, "Burn", request)
    return Effect.NOTHING


def case_reverse(world: World) -> Effect:
    def reverse(transaction_id: str, points: int = 0) -> object:
        request = points_service_pb2.ReverseRequest(
            request_id=new_id(), transaction_id=transaction_id, points=points, reason="refund"
        )
        return world.b("Reverse", request)

    for transaction_id in world.a_data.transaction_ids:
        for points in (0, 1):
            refused_as_absent(
                world,
                partial(reverse, transaction_id, points),
                "TRANSACTION_NOT_FOUND",
                transaction_id=transaction_id,
            )
    same_answer_as_for_nothing(reverse, world.a_data.transaction_ids[0], NO_SUCH_TRANSACTION_ID)
    return Effect.NOTHING


def case_authorize_burn(world: World) -> Effect:
    member_of_a_by_customer_id(world, "AuthorizeBurn", world.a_data.authorize)
    by_member_id = with_member(world.a_data.authorize, by_id(world.a_data.member_id))
    member_of_a_not_linked(world, "AuthorizeBurn", by_member_id)
    return Effect.NOTHING


def close_hold(world: World, name: str, hold_id: str) -> object:
    if name == "CaptureBurn":
        request: Message = points_service_pb2.CaptureBurnRequest(
            request_id=new_id(), hold_id=hold_id, points=5
        )
    else:
        request = points_service_pb2.VoidBurnRequest(request_id=new_id(), hold_id=hold_id)
    return world.b(name, request)


def hold_of_a_looks_absent(world: World, name: str) -> Effect:
    hold_id = world.a_data.hold_id
    refused_as_absent(world, lambda: close_hold(world, name, hold_id), "HOLD_NOT_FOUND")
    same_answer_as_for_nothing(
        lambda target: close_hold(world, name, target), hold_id, NO_SUCH_TRANSACTION_ID
    )
    return Effect.NOTHING


def case_capture_burn(world: World) -> Effect:
    return hold_of_a_looks_absent(world, "CaptureBurn")


def case_void_burn(world: World) -> Effect:
    return hold_of_a_looks_absent(world, "VoidBurn")


def case_quote(world: World) -> Effect:
    request = points_service_pb2.QuoteRequest(
        burn_points=10, member=by_customer(world.a_data.customer_id)
    )
    member_of_a_by_customer_id(world, "Quote", request)
    member_of_a_not_linked(world, "Quote", with_member(request, by_id(world.a_data.member_id)))
    # Without a member, a quote is the partner's own rates: nothing of A's member.
    plain = world.b("Quote", points_service_pb2.QuoteRequest(burn_points=10))
    assert (plain.balance_points, plain.sufficient_balance) == (0, False)
    return Effect.NOTHING


def case_get_balance(world: World) -> Effect:
    data = world.a_data
    request = points_service_pb2.GetBalanceRequest(member=by_customer(data.customer_id))
    member_of_a_by_customer_id(world, "GetBalance", request)
    # By coalition id too: the balance is shown only to partners linked to the member.
    for as_of in (None, datetime.now(UTC)):
        by_member_id = points_service_pb2.GetBalanceRequest(member=by_id(data.member_id))
        if as_of is not None:
            by_member_id.as_of.FromDatetime(as_of)
        member_of_a_not_linked(world, "GetBalance", by_member_id)
    return Effect.NOTHING


def case_list_transactions(world: World) -> Effect:
    data = world.a_data
    everything = every_page(partial(transactions_page, world.b, None), "transactions")
    of_a_member = every_page(
        partial(transactions_page, world.b, by_id(data.member_id)), "transactions"
    )
    assert world.b_last_transaction_id in {t.transaction_id for t in everything}
    for listed in (everything, of_a_member):
        assert {t.partner_id for t in listed} <= {B}
        assert not {t.transaction_id for t in listed} & set(data.transaction_ids)
    # B's own earns for A's member (case_earn) are listed, without the member's balance.
    assert of_a_member, "B's earns for A's member are B's own transactions"
    for transaction in of_a_member:
        assert transaction.balance_withheld and transaction.balance_points_after == 0
    by_a_customer = points_service_pb2.ListTransactionsRequest(member=by_customer(data.customer_id))
    member_of_a_by_customer_id(world, "ListTransactions", by_a_customer)
    return Effect.NOTHING


def case_enroll_member(world: World) -> Effect:
    """A's exact enrolment (A's request id and customer id) is a new enrolment for B: B's
    customer ids are B's own namespace; nothing of A's is replayed or reused."""
    enrolled = world.b("EnrollMember", world.a_data.second_enrolment)
    assert enrolled.created and not enrolled.replayed
    a_member = world.a(
        "ResolveMember",
        member_service_pb2.ResolveMemberRequest(
            partner_customer_id=world.a_data.second_enrolment.partner_customer_id
        ),
    ).member_id
    assert enrolled.member.member_id != a_member
    return Effect.OWN_WRITES


def case_link_partner_account(world: World) -> Effect:
    """A's exact link request, sent by B, links B's customer id: not a replay of A's. The
    link is what the rule asks for (the customer showed B the coalition id): B then sees the
    balance, and nothing more of A's; once B unlinks, B sees nothing again."""
    data = world.a_data
    linked = world.b("LinkPartnerAccount", data.link)
    assert not linked.replayed
    resolved = world.b(
        "ResolveMember",
        member_service_pb2.ResolveMemberRequest(partner_customer_id=data.linked_customer_id),
    )
    assert resolved.member_id == data.member_id
    balance = world.b(
        "GetBalance", points_service_pb2.GetBalanceRequest(member=by_id(data.member_id))
    )
    assert balance.balance_points == view_of_a(world)["balance"][0]  # type: ignore[index]
    profile = world.b(
        "GetMemberProfile", member_service_pb2.GetMemberProfileRequest(member=by_id(data.member_id))
    )
    assert list(profile.granted_scopes) == ["profile.balance"]  # A's grants stay A's
    assert profile.member.display_name == "" and profile.tier_id == ""
    world.b(
        "UnlinkPartnerAccount",
        member_service_pb2.UnlinkPartnerAccountRequest(
            request_id=new_id(), partner_customer_id=data.linked_customer_id
        ),
    )
    member_of_a_not_linked(
        world, "GetBalance", points_service_pb2.GetBalanceRequest(member=by_id(data.member_id))
    )
    return Effect.OWN_WRITES


def case_unlink_partner_account(world: World) -> Effect:
    request = member_service_pb2.UnlinkPartnerAccountRequest(
        request_id=new_id(), partner_customer_id=world.a_data.customer_id
    )
    refused_as_absent(
        world,
        lambda: world.b("UnlinkPartnerAccount", request),
        "PARTNER_CUSTOMER_NOT_LINKED",
        partner_customer_id=world.a_data.customer_id,
        partner_id=B,
    )
    return Effect.NOTHING


def case_resolve_member(world: World) -> Effect:
    customer_id = world.a_data.customer_id
    request = member_service_pb2.ResolveMemberRequest(partner_customer_id=customer_id)
    refused_as_absent(
        world,
        lambda: world.b("ResolveMember", request),
        "MEMBER_NOT_FOUND",
        partner_customer_id=customer_id,
    )
    # A's member's email and phone are found by nobody but its partners: for B exactly as an
    # identifier nobody has.
    for kind, identifier, nobody in (
        ("email", A_EMAIL, "nobody@example.com"),
        ("phone", A_PHONE, "+86 138 0000 0000"),
    ):

        def resolve(value: str, kind: str = kind) -> object:
            return world.b(
                "ResolveMember", member_service_pb2.ResolveMemberRequest(**{kind: value})
            )

        refused_as_absent(
            world, partial(resolve, identifier), "MEMBER_NOT_FOUND", identifier_kind=kind
        )
        same_answer_as_for_nothing(resolve, identifier, nobody)
    return Effect.NOTHING


def case_get_referral_code(world: World) -> Effect:
    request = member_service_pb2.GetReferralCodeRequest(
        partner_customer_id=world.a_data.customer_id
    )
    member_of_a_by_customer_id(world, "GetReferralCode", request)
    by_member_id = member_service_pb2.GetReferralCodeRequest(member_id=world.a_data.member_id)
    member_of_a_not_linked(world, "GetReferralCode", by_member_id)
    return Effect.NOTHING


def case_get_member_profile(world: World) -> Effect:
    """A's consent is A's: B's partner and merchant keys read no profile of A's member (not
    even an empty one), and nothing is logged."""
    data = world.a_data
    by_a_customer = member_service_pb2.GetMemberProfileRequest(member=by_customer(data.customer_id))
    by_member_id = member_service_pb2.GetMemberProfileRequest(member=by_id(data.member_id))
    for caller in (world.b, world.b_merchant):
        refused_as_absent(
            world, partial(caller, "GetMemberProfile", by_a_customer), "MEMBER_NOT_FOUND"
        )
        member_of_a_not_linked(replace(world, b=caller), "GetMemberProfile", by_member_id)
    return Effect.NOTHING


def case_update_consent(world: World) -> Effect:
    data = world.a_data
    member_of_a_by_customer_id(world, "UpdateConsent", data.consent)
    # A grant recorded by B for itself would open what the rule keeps closed: refused, and the
    # refusal is B's answer under B's request id.
    member_of_a_not_linked(world, "UpdateConsent", with_member(data.consent, by_id(data.member_id)))
    return Effect.REFUSAL_KEPT


def partner_record_of_a_looks_absent(world: World, name: str, request: Message) -> Effect:
    for caller in (world.b, world.b_merchant):
        refused_as_absent(world, partial(caller, name, request), "PARTNER_NOT_FOUND", partner_id=A)
    return Effect.NOTHING


def case_get_partner(world: World) -> Effect:
    request = partner_service_pb2.GetPartnerRequest(partner_id=A)
    return partner_record_of_a_looks_absent(world, "GetPartner", request)


def case_report_daily_sales(world: World) -> Effect:
    """B reports only its own sales: the request names no partner, the answer is B's, in
    B's currency (A's would be refused); B's merchant key may not report at all."""
    day = datetime.now(UTC).date().isoformat()
    request = partner_service_pb2.ReportDailySalesRequest(
        request_id=new_id(),
        sales_date=day,
        total_sales=common_pb2.Money(amount_minor=1_000, currency="EUR"),
    )
    reported = world.b("ReportDailySales", request).daily_sales
    assert (reported.partner_id, reported.version) == (B, 1)
    in_a_currency = partner_service_pb2.ReportDailySalesRequest(
        request_id=new_id(),
        sales_date=day,
        total_sales=common_pb2.Money(amount_minor=1_000, currency="CNY"),
    )
    expect_failure(
        lambda: world.b("ReportDailySales", in_a_currency),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CURRENCY_MISMATCH",
        ("total_sales.currency",),
    )
    expect_failure(
        lambda: world.b_merchant("ReportDailySales", request),
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_ALLOWED",
    )
    return Effect.OWN_WRITES


def case_get_contribution_share(world: World) -> Effect:
    request = partner_service_pb2.GetContributionShareRequest(partner_id=A, period="2026-01")
    return partner_record_of_a_looks_absent(world, "GetContributionShare", request)


def promotion_of_a_looks_absent(world: World, call: Callable[[str], object]) -> Effect:
    """A's promotion and an id nobody has get the same NOT_FOUND, and nothing is written."""
    for target in (A_PROMOTION_ID, NO_SUCH_PROMOTION_ID):
        refused_as_absent(
            world, lambda target=target: call(target), "PROMOTION_NOT_FOUND", promotion_id=target
        )
    same_answer_as_for_nothing(call, A_PROMOTION_ID, NO_SUCH_PROMOTION_ID)
    return Effect.NOTHING


def case_create_promotion(world: World) -> Effect:
    """B cannot create under A's id (nor learn that it exists: a partner's ids begin with its
    own id), even with A's request id and payload."""
    for promotion_id in (A_PROMOTION_ID, NO_SUCH_PROMOTION_ID):
        request = promotion_service_pb2.CreatePromotionRequest(
            request_id=A_PROMOTION_REQUEST_ID, promotion=promotion_of_a(promotion_id)
        )
        counts = row_counts(world.engine)
        expect_failure(
            lambda request=request: world.b("CreatePromotion", request),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ("promotion.promotion_id",),
        )
        assert row_counts(world.engine) == counts
    return Effect.NOTHING


def case_update_promotion(world: World) -> Effect:
    return promotion_of_a_looks_absent(
        world,
        lambda target: world.b(
            "UpdatePromotion",
            promotion_service_pb2.UpdatePromotionRequest(
                request_id=A_PROMOTION_REQUEST_ID, promotion=promotion_of_a(target)
            ),
        ),
    )


def case_pause_promotion(world: World) -> Effect:
    return promotion_of_a_looks_absent(
        world,
        lambda target: world.b(
            "PausePromotion",
            promotion_service_pb2.PausePromotionRequest(request_id=new_id(), promotion_id=target),
        ),
    )


def case_resume_promotion(world: World) -> Effect:
    return promotion_of_a_looks_absent(
        world,
        lambda target: world.b(
            "ResumePromotion",
            promotion_service_pb2.ResumePromotionRequest(request_id=new_id(), promotion_id=target),
        ),
    )


def case_get_promotion(world: World) -> Effect:
    return promotion_of_a_looks_absent(
        world,
        lambda target: world.b(
            "GetPromotion", promotion_service_pb2.GetPromotionRequest(promotion_id=target)
        ),
    )


def case_get_promotion_performance(world: World) -> Effect:
    period = datetime.now(UTC).strftime("%Y-%m")
    return promotion_of_a_looks_absent(
        world,
        lambda target: world.b(
            "GetPromotionPerformance",
            promotion_service_pb2.GetPromotionPerformanceRequest(
                promotion_id=target, period=period
            ),
        ),
    )


def case_list_promotions(world: World) -> Effect:
    listed = world.b("ListPromotions", promotion_service_pb2.ListPromotionsRequest())
    assert A_PROMOTION_ID not in [p.promotion_id for p in listed.promotions]
    return Effect.NOTHING


def case_list_rate_versions(world: World) -> Effect:
    request = partner_service_pb2.ListRateVersionsRequest(partner_id=A)
    return partner_record_of_a_looks_absent(world, "ListRateVersions", request)


def events_of_b_until(world: World, transaction_id: str) -> list[event_service_pb2.Event]:
    """B's stream from the start, read until B's transaction `transaction_id`: every event
    committed before it (A's included) has been past the stream by then."""
    stream = world.b("Subscribe", event_service_pb2.SubscribeRequest())
    seen: list[event_service_pb2.Event] = []
    try:
        for response in stream:
            seen.append(response.event)
            if response.event.transaction_id == transaction_id:
                return seen
    finally:
        stream.cancel()
    raise AssertionError(f"B's stream ended before its own event {transaction_id}: {seen}")


def case_subscribe(world: World) -> Effect:
    """B's stream carries B's own transactions only, and of A's member (which B earned for)
    neither the balance nor the tier."""
    data = world.a_data
    assert world.b_last_transaction_id in {
        e.transaction_id for e in events_of_b_until(world, world.b_last_transaction_id)
    }
    earned = world.b(
        "Earn",
        points_service_pb2.EarnRequest(
            request_id=new_id(),
            member=by_id(data.member_id),
            spend=common_pb2.Money(amount_minor=1_000, currency="EUR"),
        ),
    )
    streamed = events_of_b_until(world, earned.transaction.transaction_id)
    listed = every_page(partial(transactions_page, world.b, None), "transactions")
    transaction_ids = {e.transaction_id for e in streamed if e.transaction_id}
    assert transaction_ids <= {t.transaction_id for t in listed}  # B's own transactions only
    assert not transaction_ids & set(data.transaction_ids)
    of_a_member = [e for e in streamed if e.member_id == data.member_id]
    assert of_a_member, "B's earns for A's member are B's own events"
    for event in of_a_member:
        assert event.kind != event_service_pb2.EVENT_KIND_TIER_CHANGED, event
        assert event.balance_withheld and event.balance_points_after == 0, event
    return Effect.OWN_WRITES


def statement_request(name: str, statement_id: str, signature: bytes) -> Message:
    if name == "AcknowledgeSettlement":
        return settlement_service_pb2.AcknowledgeSettlementRequest(
            statement_id=statement_id, signature=signature
        )
    if name == "ListSettlementEntries":
        return settlement_service_pb2.ListSettlementEntriesRequest(statement_id=statement_id)
    return settlement_service_pb2.GetSettlementRequest(statement_id=statement_id)


def statement_of_a_looks_absent(world: World, name: str) -> Effect:
    data = world.a_data

    def call(statement_id: str) -> object:
        answer = world.b(
            name, statement_request(name, statement_id, data.acknowledgement_signature)
        )
        return list(answer) if name == "ListSettlementEntries" else answer

    refused_as_absent(
        world,
        lambda: call(data.statement_id),
        "STATEMENT_NOT_FOUND",
        statement_id=data.statement_id,
    )
    same_answer_as_for_nothing(call, data.statement_id, f"{A}-20990131")
    return Effect.NOTHING


def case_get_settlement(world: World) -> Effect:
    return statement_of_a_looks_absent(world, "GetSettlement")


def case_list_settlement_entries(world: World) -> Effect:
    return statement_of_a_looks_absent(world, "ListSettlementEntries")


def case_acknowledge_settlement(world: World) -> Effect:
    """Even with A's genuine countersignature, B cannot acknowledge A's statement."""
    return statement_of_a_looks_absent(world, "AcknowledgeSettlement")


def case_list_settlements(world: World) -> Effect:
    listed = every_page(
        lambda token: world.b(
            "ListSettlements", settlement_service_pb2.ListSettlementsRequest(page_token=token)
        ),
        "statements",
    )
    assert tuple(s.statement_id for s in listed) == world.b_statement_ids
    for caller_filter in (A, "no-such-partner"):
        request = settlement_service_pb2.ListSettlementsRequest(partner_id=caller_filter)
        refused_as_absent(
            world,
            partial(world.b, "ListSettlements", request),
            "PARTNER_NOT_FOUND",
            partner_id=caller_filter,
        )
    return Effect.NOTHING


def case_get_signing_keys(world: World) -> Effect:
    """Public keys are for everyone who verifies: the same answer for A, B and B's CRM."""
    request = settlement_service_pb2.GetSigningKeysRequest()
    published = world.a("GetSigningKeys", request)
    assert len(published.signing_keys) == 1
    for caller in (world.b, world.b_merchant):
        assert caller("GetSigningKeys", request) == published
    return Effect.NOTHING


def case_submit_partner_report(world: World) -> Effect:
    data = world.a_data
    refused_as_absent(
        world,
        lambda: world.b("SubmitPartnerReport", messages_of(data.report, A)),
        "PARTNER_NOT_FOUND",
        partner_id=A,
    )
    # A's rows submitted as B's own report match nothing: B's run sees only B's operations.
    run = world.b("SubmitPartnerReport", messages_of(data.report)).run
    assert run.partner_id == B and run.run_id != data.run_id
    assert (run.matched, run.mismatched, run.duplicated) == (0, 0, 0)
    assert run.missing_in_hub == run.report_rows > 0
    return Effect.OWN_WRITES


def run_of_a_looks_absent(world: World, name: str) -> Effect:
    def call(run_id: str) -> object:
        if name == "GetReconciliationRun":
            return world.b(
                name, reconciliation_service_pb2.GetReconciliationRunRequest(run_id=run_id)
            )
        return world.b(
            name, reconciliation_service_pb2.ListReconciliationExceptionsRequest(run_id=run_id)
        )

    refused_as_absent(world, lambda: call(world.a_data.run_id), "RUN_NOT_FOUND")
    same_answer_as_for_nothing(call, world.a_data.run_id, new_id())
    return Effect.NOTHING


def case_get_reconciliation_run(world: World) -> Effect:
    return run_of_a_looks_absent(world, "GetReconciliationRun")


def case_list_reconciliation_exceptions(world: World) -> Effect:
    return run_of_a_looks_absent(world, "ListReconciliationExceptions")


Case = Callable[[World], Effect]
CASES: dict[str, Case] = {
    path_of("Earn"): case_earn,
    path_of("BatchEarn"): case_batch_earn,
    path_of("Burn"): case_burn,
    path_of("Reverse"): case_reverse,
    path_of("AuthorizeBurn"): case_authorize_burn,
    path_of("CaptureBurn"): case_capture_burn,
    path_of("VoidBurn"): case_void_burn,
    path_of("Quote"): case_quote,
    path_of("GetBalance"): case_get_balance,
    path_of("ListTransactions"): case_list_transactions,
    path_of("EnrollMember"): case_enroll_member,
    path_of("LinkPartnerAccount"): case_link_partner_account,
    path_of("UnlinkPartnerAccount"): case_unlink_partner_account,
    path_of("ResolveMember"): case_resolve_member,
    path_of("GetReferralCode"): case_get_referral_code,
    path_of("GetMemberProfile"): case_get_member_profile,
    path_of("UpdateConsent"): case_update_consent,
    path_of("GetPartner"): case_get_partner,
    path_of("ListRateVersions"): case_list_rate_versions,
    path_of("ReportDailySales"): case_report_daily_sales,
    path_of("GetContributionShare"): case_get_contribution_share,
    path_of("Subscribe"): case_subscribe,
    path_of("GetSettlement"): case_get_settlement,
    path_of("ListSettlements"): case_list_settlements,
    path_of("ListSettlementEntries"): case_list_settlement_entries,
    path_of("AcknowledgeSettlement"): case_acknowledge_settlement,
    path_of("GetSigningKeys"): case_get_signing_keys,
    path_of("SubmitPartnerReport"): case_submit_partner_report,
    path_of("GetReconciliationRun"): case_get_reconciliation_run,
    path_of("ListReconciliationExceptions"): case_list_reconciliation_exceptions,
    path_of("CreatePromotion"): case_create_promotion,
    path_of("UpdatePromotion"): case_update_promotion,
    path_of("PausePromotion"): case_pause_promotion,
    path_of("ResumePromotion"): case_resume_promotion,
    path_of("GetPromotion"): case_get_promotion,
    path_of("ListPromotions"): case_list_promotions,
    path_of("GetPromotionPerformance"): case_get_promotion_performance,
}


def test_every_partner_callable_rpc_has_a_case() -> None:
    # Cases and calls name RPCs by method name: names must not repeat across services.
    assert len(METHODS) == sum(len(service.methods) for service in SERVICE_DESCRIPTORS)
    assert set(CASES) == partner_callable_rpcs()


def failures_of(world: World, cases: dict[str, Case]) -> Iterator[str]:
    for path, case in cases.items():
        try:
            before = Snapshot.take(world)
            effect = case(world)
            assert_only_allowed_changes(before, Snapshot.take(world), effect)
        except (AssertionError, grpc.RpcError, pytest.fail.Exception) as error:
            yield f"{path}: {type(error).__name__}: {error}"


def test_partner_b_reaches_none_of_partner_a_data(world: World) -> None:
    failures = list(failures_of(world, CASES))
    assert not failures, "\n\n".join(failures)

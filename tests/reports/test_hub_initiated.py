"""Hub-initiated transactions (referral bonuses): integrity, reconciliation, settlement,
reports and event streams agree on them, and no partner can reach their request ids."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import Engine, select, text

from coalition import operations
from coalition.domain.errors import NotFound
from coalition.domain.hub_partner import HUB_PARTNER_ID
from coalition.domain.points import Money
from coalition.events.stream import START, read_events
from coalition.identity.members import MemberReference
from coalition.operations import batch_earn
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.reconciliation import integrity
from coalition.reconciliation.matching import Deadline, ReportSubmission, submit_report
from coalition.reconciliation.runs import rfc3339
from coalition.reports import queries
from coalition.reports.period import month_period
from coalition.store.schema import journal_transactions
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, points_service_pb2, points_service_pb2_grpc
from tests.conftest import api_key
from tests.reconciliation.conftest import as_csv
from tests.reports.test_referrals import BONUS, NOW, balance, code_of, earn, enrol

pytestmark = pytest.mark.integration


def paid_referral(engine: Engine) -> tuple[str, str]:
    """alice (enrolled at Test Coffee) refers bob, whose first earn at Test Air pays both."""
    referrer = enrol(engine, "alice")
    referred = enrol(engine, "bob", code_of(engine, referrer))
    earn(engine, referred, "e1", NOW)
    return referrer, referred


def test_a_referral_bonus_is_hub_initiated_and_every_audit_agrees(engine: Engine) -> None:
    referrer, referred = paid_referral(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            select(journal_transactions.c.partner_id, journal_transactions.c.request_id)
            .where(journal_transactions.c.member_id.in_([referrer, referred]))
            .order_by(journal_transactions.c.transaction_id)
        ).all()
    assert [tuple(row) for row in rows] == [
        ("test-air", "e1"),
        (HUB_PARTNER_ID, f"hub/referral/{referred}/referred"),
        (HUB_PARTNER_ID, f"hub/referral/{referred}/referrer"),
    ]
    # integrity: every check holds, the idempotency one included
    report = integrity.prove(UnitOfWork(engine, read_only=True), None, None, lambda _: None)
    assert [result.name for result in report.failed] == []
    # reconciliation: the partner's one earn is all the hub expects of it
    with UnitOfWork(engine, read_only=True) as uow:
        occurred_at = uow.connection.execute(
            select(journal_transactions.c.occurred_at).where(
                journal_transactions.c.request_id == "e1"
            )
        ).scalar_one()
    content = as_csv(
        [
            {
                "request_id": "e1",
                "type": "earn",
                "points": 50,
                "occurred_at": rfc3339(occurred_at),
                "partner_reference": None,
                "member": None,
                "amount_minor": 5_000,
                "currency": "EUR",
            }
        ]
    )
    submission = ReportSubmission("test-air", "csv", None, None, "tester")
    run = submit_report(
        UnitOfWork(engine),
        submission,
        [content],
        datetime.now(UTC),
        Deadline(600),
        lambda phase, rows_read, bytes_read: None,
    ).run
    assert (run.matched, run.missing_in_partner, run.exceptions_total) == (1, 0, 0)
    # reports: one earn of 50 points, by the partner; the bonuses are not earns of anyone's
    with UnitOfWork(engine, read_only=True) as uow:
        period = month_period(NOW.year, NOW.month)
        assert queries.kind_totals(uow, period, queries.EARN_KINDS, None) == (1, 50)
        assert queries.kind_totals(uow, period, queries.EARN_KINDS, "test-air") == (1, 50)
        # the partner's stream and transaction list carry only its own transaction
        events = [(e.kind, e.member_id) for e in read_events(uow, "test-air", START, 100)]
    assert events == [("earned", referred)]
    listed = operations.list_transactions(UnitOfWork(engine), "test-air", None, None, 10)
    assert [record.request_id for record in listed] == ["e1"]
    assert balance(engine, referrer) == BONUS and balance(engine, referred) == 50 + BONUS


def test_no_partner_can_reverse_a_hub_initiated_bonus(engine: Engine) -> None:
    referrer, _ = paid_referral(engine)
    with engine.connect() as connection:
        bonus_id = connection.execute(
            select(journal_transactions.c.transaction_id).where(
                journal_transactions.c.member_id == referrer
            )
        ).scalar_one()
    command = operations.ReverseCommand(request_id="undo", transaction_id=bonus_id, points=0)
    with pytest.raises(NotFound):
        operations.reverse(UnitOfWork(engine), "test-air", command, NOW + timedelta(minutes=1))
    assert balance(engine, referrer) == BONUS


def test_a_partner_request_id_never_collides_with_the_hubs(engine: Engine) -> None:
    """A partner that sends, first, the request id a bonus would have used keeps earning, and
    the bonus is still paid; the hub's own ids are refused at the API."""
    referrer = enrol(engine, "alice")
    referred = enrol(engine, "bob", code_of(engine, referrer))
    for request_id in (f"referral:{referred}:referred", f"referral:{referred}:referrer"):
        earn(engine, referred, request_id, NOW)
    earn(engine, referred, "e3", NOW + timedelta(minutes=1))
    assert balance(engine, referred) == 150 + BONUS
    assert balance(engine, referrer) == BONUS


@pytest.mark.parametrize("request_id", ["hub/referral/m/referred", "hub/expire/lot/1/0"])
def test_the_api_refuses_hub_request_ids(
    engine: Engine, channel: grpc.Channel, request_id: str
) -> None:
    member_id = enrol(engine, "carol")
    stub = points_service_pb2_grpc.PointsServiceStub(channel)
    request = points_service_pb2.EarnRequest(
        request_id=request_id,
        member=common_pb2.MemberReference(member_id=member_id),
        spend=common_pb2.Money(amount_minor=5_000, currency="EUR"),
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.Earn(request, metadata=api_key(engine, "test-air"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert balance(engine, member_id) == 0


def test_migration_0010_rehomes_bonuses_paid_before_it(engine: Engine) -> None:
    """A database with bonuses in the old form (under the earning partner, `referral:` ids,
    their events on its stream) proves sound and private once 0010 has run."""
    referrer, referred = paid_referral(engine)
    with engine.begin() as connection:
        for role in ("referred", "referrer"):
            old_id, new_id = f"referral:{referred}:{role}", f"hub/referral/{referred}/{role}"
            connection.execute(
                text(
                    "UPDATE events SET partner_id = 'test-air' WHERE transaction_id = "
                    "(SELECT transaction_id FROM journal_transactions WHERE request_id = :new)"
                ),
                {"new": new_id},
            )
            connection.execute(
                text(
                    "UPDATE journal_transactions SET partner_id = 'test-air', request_id = :old "
                    "WHERE request_id = :new"
                ),
                {"old": old_id, "new": new_id},
            )
    failing = integrity.prove(UnitOfWork(engine, read_only=True), None, None, lambda _: None)
    assert [r.name for r in failing.failed] == ["idempotency_keys_map_to_one_transaction"]
    migration = importlib.import_module("coalition.store.migrations.versions.0010_hub_initiated")
    with engine.begin() as connection:
        migration.rehome(connection)
    report = integrity.prove(UnitOfWork(engine, read_only=True), None, None, lambda _: None)
    assert [result.name for result in report.failed] == []
    with UnitOfWork(engine, read_only=True) as uow:
        events = [e.member_id for e in read_events(uow, "test-air", START, 100)]
    assert events == [referred]
    assert balance(engine, referrer) == BONUS


def test_a_batch_with_a_partner_id_that_looks_like_a_bonus_loses_nothing(engine: Engine) -> None:
    """Found by an independent client: a per-item BatchEarn holding such an id failed
    whole (INTERNAL) when the bonus it triggered claimed the same id."""
    referrer = enrol(engine, "alice")
    referred = enrol(engine, "bob", code_of(engine, referrer))
    items = [
        operations.EarnCommand(
            request_id=request_id,
            member=MemberReference(member_id=referred),
            spend=Money(5_000, "EUR"),
            occurred_at=NOW,
        )
        for request_id in (f"referral:{referred}:referred", "b2")
    ]
    result = batch_earn.batch_earn(
        UnitOfWork(engine), DEFAULT_PROGRAMME, "test-air", items, False, NOW
    )
    assert result.applied_count == 2
    assert balance(engine, referred) == 100 + BONUS and balance(engine, referrer) == BONUS

"""Referrals on both databases: dual coalition-funded reward once, refusals, gRPC, report."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, func, select

from coalition import cli, operations
from coalition.domain.errors import CoalitionError
from coalition.domain.points import Money
from coalition.identity.members import MemberReference, enroll
from coalition.programme.config import DEFAULT_PROGRAMME, REFERRAL_BONUS_POINTS_DEFAULT
from coalition.referrals.service import get_referral_code
from coalition.store.schema import (
    earn_bonuses,
    journal_transactions,
    lots,
    member_accounts,
    postings,
    referrals,
)
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import member_service_pb2 as messages
from coalition.v1 import member_service_pb2_grpc
from tests.conftest import api_key
from tests.integration.ledger_checks import assert_ledger_sound

pytestmark = pytest.mark.integration

BONUS = REFERRAL_BONUS_POINTS_DEFAULT
NOW = datetime(2026, 7, 10, 12, tzinfo=UTC)


def enrol(engine: Engine, customer: str, code: str | None = None, at: datetime = NOW) -> str:
    enrolment = enroll(
        UnitOfWork(engine),
        "test-coffee",
        f"enrol-{customer}",
        customer,
        customer,
        at,
        referral_code=code,
    )
    return enrolment.member.member_id


def code_of(engine: Engine, member_id: str) -> str:
    return get_referral_code(
        UnitOfWork(engine), "test-coffee", MemberReference(member_id=member_id), NOW
    )[1]


def earn(engine: Engine, member_id: str, request_id: str, at: datetime) -> int:
    command = operations.EarnCommand(
        request_id=request_id,
        member=MemberReference(member_id=member_id),
        spend=Money(5_000, "EUR"),  # 50 points at test-air
        occurred_at=at,
    )
    return operations.earn(
        UnitOfWork(engine), DEFAULT_PROGRAMME, "test-air", command, at
    ).balance_points


def balance(engine: Engine, member_id: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(member_accounts.c.balance_points).where(
                    member_accounts.c.account_id == f"member:{member_id}"
                )
            ).scalar_one()
        )


def test_both_members_get_the_bonus_once_funded_by_the_coalition(engine: Engine) -> None:
    referrer = enrol(engine, "alice")
    code = code_of(engine, referrer)
    assert code == code_of(engine, referrer)  # stable once created
    referred = enrol(engine, "bob", code.lower())  # codes are case-insensitive
    earn(engine, referred, "e1", NOW)
    earn(engine, referred, "e2", NOW + timedelta(hours=1))
    assert balance(engine, referred) == 100 + BONUS
    assert balance(engine, referrer) == BONUS
    assert_ledger_sound(engine)
    with engine.connect() as connection:
        # a hub-initiated, coalition-funded earn (tests/reports/test_hub_initiated.py)
        credit = connection.execute(
            select(journal_transactions).where(journal_transactions.c.member_id == referrer)
        ).one()
        assert (credit.kind, credit.points_delta) == ("earn", BONUS)
        assert credit.reason == "referral bonus (referrer), coalition-funded"
        bonuses = connection.execute(
            select(
                earn_bonuses.c.rule_id, earn_bonuses.c.points, earn_bonuses.c.funding_partner_id
            ).order_by(earn_bonuses.c.rule_id)
        ).all()
        assert [tuple(b) for b in bonuses] == [
            ("referral:referred", BONUS, None),
            ("referral:referrer", BONUS, None),
        ]
        promotions_total = connection.execute(
            select(func.sum(postings.c.points)).where(
                postings.c.account_id == "coalition:promotions"
            )
        ).scalar_one()
        assert promotions_total == -2 * BONUS
        issuance_total = connection.execute(
            select(func.sum(postings.c.points)).where(
                postings.c.account_id == "partner:test-air:issuance"
            )
        ).scalar_one()
        assert issuance_total == -100  # the partner pays for its own points only
        bonus_lots = connection.execute(
            select(func.count()).where(lots.c.points == BONUS, lots.c.partner_id == "test-air")
        ).scalar_one()
        assert bonus_lots == 2
        row = connection.execute(select(referrals)).one()
        assert row.referrer_member_id == referrer and row.reward_time is not None


@pytest.mark.parametrize("case", ["self", "loop", "unknown"])
def test_refusals(engine: Engine, case: str) -> None:
    alice = enrol(engine, "alice")
    bob = enrol(engine, "bob", code_of(engine, alice))
    code, reason = {
        "self": (code_of(engine, alice), "SELF_REFERRAL"),
        "loop": (code_of(engine, bob), "REFERRAL_LOOP"),
        "unknown": ("NOSUCHCODE", "REFERRAL_CODE_NOT_FOUND"),
    }[case]
    with pytest.raises(CoalitionError) as raised:
        # alice again (her customer id resolves to her), now claiming to be referred
        enroll(
            UnitOfWork(engine),
            "test-coffee",
            "enrol-again",
            "alice",
            "alice",
            NOW,
            referral_code=code,
        )
    assert raised.value.reason == reason
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(referrals)).scalar_one() == 1


def test_referral_over_grpc(engine: Engine, channel: grpc.Channel) -> None:
    stub = member_service_pb2_grpc.MemberServiceStub(channel)
    metadata = api_key(engine, "test-coffee")
    alice = stub.EnrollMember(
        messages.EnrollMemberRequest(
            request_id="r1", partner_customer_id="alice", display_name="A"
        ),
        metadata=metadata,
    ).member.member_id
    code = stub.GetReferralCode(
        messages.GetReferralCodeRequest(partner_customer_id="alice"), metadata=metadata
    ).referral_code
    bob = stub.EnrollMember(
        messages.EnrollMemberRequest(
            request_id="r2", partner_customer_id="bob", display_name="B", referral_code=code
        ),
        metadata=metadata,
    )
    assert bob.created
    with pytest.raises(grpc.RpcError) as raised:
        stub.EnrollMember(
            messages.EnrollMemberRequest(
                request_id="r3", partner_customer_id="alice", display_name="A", referral_code=code
            ),
            metadata=metadata,
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with engine.connect() as connection:
        row = connection.execute(select(referrals)).one()
    assert (row.referrer_member_id, row.referred_member_id) == (alice, bob.member.member_id)


def test_report_counts_referrals(engine: Engine, database_url: str, tmp_path: Path) -> None:
    alice = enrol(engine, "alice", at=datetime(2026, 6, 1, tzinfo=UTC))
    code = code_of(engine, alice)
    bob = enrol(engine, "bob", code, at=datetime(2026, 7, 2, tzinfo=UTC))
    enrol(engine, "carol", code, at=datetime(2026, 7, 3, tzinfo=UTC))
    earn(engine, bob, "e1", datetime(2026, 7, 4, tzinfo=UTC))
    out = tmp_path / "report"
    assert cli.main(["report", "--db", database_url, "--period", "2026-07", "--out", str(out)]) == 0
    with (out / "programme_metrics.csv").open(newline="") as stream:
        metrics = dict(list(csv.reader(stream))[1:])
    assert metrics["referrals_made"] == "2"
    assert metrics["referrals_converted"] == "1"
    assert metrics["referral_conversion_rate"] == "0.5000"

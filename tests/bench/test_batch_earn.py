"""Batch earn against real SQLite and PostgreSQL: idempotency per item, both modes, both
paths (set-based, and item by item when the programme adds bonuses), ledger invariants."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from coalition import operations
from coalition.domain.errors import AlreadyExists, CoalitionError, FailedPrecondition, NotFound
from coalition.domain.points import Money
from coalition.domain.tiers import Tier, TierLadder
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations import batch_earn
from coalition.operations.points import EarnCommand
from coalition.programme.config import (
    DEFAULT_PROGRAMME,
    REFERRAL_BONUS_POINTS_DEFAULT,
    Programme,
)
from coalition.referrals.service import get_referral_code
from coalition.store.unit_of_work import UnitOfWork
from tests.citus import REQUEST_IDS_PER_MEMBER, skip_on_citus
from tests.integration.ledger_checks import assert_ledger_sound, remembered_refusals, row_counts

pytestmark = pytest.mark.integration

PARTNER_ID = "test-coffee"


def now() -> datetime:
    return datetime.now(UTC)


def enroll(engine: Engine) -> tuple[str, str]:
    customer_id = f"customer-{uuid.uuid4().hex}"
    enrolment = members.enroll(
        UnitOfWork(engine), PARTNER_ID, uuid.uuid4().hex, customer_id, "Mei Lin", now()
    )
    return enrolment.member.member_id, customer_id


def command(member_id: str, amount_minor: int = 1000, request_id: str = "") -> EarnCommand:
    return EarnCommand(
        request_id=request_id or uuid.uuid4().hex,
        member=MemberReference(member_id=member_id),
        spend=Money(amount_minor, "CNY"),
    )


def run(
    engine: Engine, programme: Programme, items: list, all_or_nothing: bool = False
) -> batch_earn.BatchEarnResult:
    return batch_earn.batch_earn(
        UnitOfWork(engine), programme, PARTNER_ID, items, all_or_nothing, now()
    )


TWO_TIERS = Programme(
    TierLadder(
        (
            Tier("member", "Member", 0, Decimal(1)),
            Tier("gold", "Gold", 500, Decimal("1.5")),
        )
    ),
    (),
)


@pytest.fixture(params=["set_based", "item_by_item"])
def programme(request: pytest.FixtureRequest) -> Programme:
    """The programme each test passes to every earn: one path or the other."""
    return DEFAULT_PROGRAMME if request.param == "set_based" else TWO_TIERS


def test_batch_applies_every_item_with_running_balances(engine: Engine, programme) -> None:
    first, _ = enroll(engine)
    second, _ = enroll(engine)
    items = [command(first, 50000), command(second, 100000), command(first, 150000)]
    result = run(engine, programme, items)
    assert (result.applied_count, result.replayed_count, result.failed_count) == (3, 0, 0)
    points = [o.result.points for o in result.outcomes]
    assert points == [100, 200, 300]
    assert result.outcomes[2].result.balance_points >= 400
    assert_ledger_sound(engine)
    assert row_counts(engine)["lots"] == 3


def test_per_item_mode_isolates_failures_and_writes_nothing_for_them(
    engine: Engine, programme
) -> None:
    member_id, customer_id = enroll(engine)
    by_customer = EarnCommand(
        uuid.uuid4().hex, MemberReference(partner_customer_id=customer_id), Money(500, "CNY")
    )
    items = [
        command(member_id),
        command("no-such-member"),
        command(member_id, amount_minor=5),  # earns no points
        by_customer,
    ]
    result = run(engine, programme, items)
    assert result.outcomes[0].result is not None
    assert isinstance(result.outcomes[1].error, NotFound)
    assert result.outcomes[2].error.reason == "NO_POINTS_EARNED"
    assert result.outcomes[3].result.transaction.member_id == member_id
    assert (result.applied_count, result.failed_count) == (2, 2)
    assert row_counts(engine)["idempotency_keys"] == 2 + 1  # + the enrolment's
    assert remembered_refusals(engine) == {
        (PARTNER_ID, items[1].request_id): "MEMBER_NOT_FOUND",
        (PARTNER_ID, items[2].request_id): "NO_POINTS_EARNED",
    }
    assert_ledger_sound(engine)


def test_a_failed_items_refusal_is_final_in_batches_and_for_unary_earn(
    engine: Engine, programme
) -> None:
    skip_on_citus(engine, REQUEST_IDS_PER_MEMBER)
    member_id, _ = enroll(engine)
    refused = command("no-such-member", request_id="r-1")
    first = run(engine, programme, [refused, command(member_id)])
    assert first.outcomes[0].error is not None
    again = run(engine, programme, [refused])
    assert again.outcomes[0].error is not None
    assert (again.outcomes[0].error.reason, again.outcomes[0].error.message) == (
        first.outcomes[0].error.reason,
        first.outcomes[0].error.message,
    )
    with pytest.raises(NotFound) as unary:
        operations.earn(UnitOfWork(engine), programme, PARTNER_ID, refused, now())
    assert unary.value.message == first.outcomes[0].error.message
    other_payload = run(engine, programme, [command(member_id, request_id="r-1")])
    assert isinstance(other_payload.outcomes[0].error, AlreadyExists)
    assert row_counts(engine)["journal_transactions"] == 1


def test_an_item_refused_by_unary_earn_first_is_refused_alike(engine: Engine, programme) -> None:
    member_id, _ = enroll(engine)
    with pytest.raises(FailedPrecondition) as unary:
        operations.earn(
            UnitOfWork(engine), programme, PARTNER_ID, command(member_id, 5, "r-1"), now()
        )
    result = run(engine, programme, [command(member_id, 5, "r-1"), command(member_id)])
    assert result.outcomes[0].error is not None
    assert result.outcomes[0].error.message == unary.value.message
    assert result.applied_count == 1


def test_all_or_nothing_fails_naming_the_item_and_writes_nothing(engine: Engine, programme) -> None:
    member_id, _ = enroll(engine)
    before = row_counts(engine)
    with pytest.raises(CoalitionError) as failure:
        run(engine, programme, [command(member_id), command("no-such-member")], all_or_nothing=True)
    assert failure.value.metadata["item_index"] == "1"
    assert row_counts(engine) == before
    assert remembered_refusals(engine) == {}  # the call failed whole: nothing is kept


def test_items_replay_across_batches_and_unary_earn(engine: Engine, programme) -> None:
    member_id, _ = enroll(engine)
    earned = operations.earn(
        UnitOfWork(engine), programme, PARTNER_ID, command(member_id, 1000, "u-1"), now()
    )
    first = run(
        engine, programme, [command(member_id, 2000, "b-1"), command(member_id, 1000, "u-1")]
    )
    assert first.outcomes[1].result.replayed
    assert first.outcomes[1].result.transaction.transaction_id == earned.transaction.transaction_id
    again = run(
        engine, programme, [command(member_id, 2000, "b-1"), command(member_id, 9000, "u-1")]
    )
    assert again.outcomes[0].result.replayed
    assert again.outcomes[0].result == first.outcomes[0].result.__class__(
        **{**first.outcomes[0].result.__dict__, "replayed": True}
    )
    assert isinstance(again.outcomes[1].error, AlreadyExists)
    unary = operations.earn(
        UnitOfWork(engine), programme, PARTNER_ID, command(member_id, 2000, "b-1"), now()
    )
    assert unary.replayed
    assert row_counts(engine)["journal_transactions"] == 2
    assert_ledger_sound(engine)


def test_request_id_repeated_within_a_batch(engine: Engine, programme) -> None:
    member_id, _ = enroll(engine)
    items = [
        command(member_id, 1000, "same"),
        command(member_id, 1000, "same"),
        command(member_id, 3000, "same"),
    ]
    result = run(engine, programme, items)
    assert not result.outcomes[0].result.replayed
    assert result.outcomes[1].result.replayed
    assert result.outcomes[1].result.transaction == result.outcomes[0].result.transaction
    assert isinstance(result.outcomes[2].error, AlreadyExists)
    assert row_counts(engine)["journal_transactions"] == 1
    assert_ledger_sound(engine)


def test_a_thousand_items_in_one_batch(engine: Engine) -> None:
    member_ids = [enroll(engine)[0] for _ in range(20)]
    items = [command(member_ids[i % 20], 1000 + i) for i in range(batch_earn.BATCH_EARN_ITEMS_MAX)]
    result = run(engine, DEFAULT_PROGRAMME, items, all_or_nothing=True)
    assert result.applied_count == batch_earn.BATCH_EARN_ITEMS_MAX
    assert row_counts(engine)["postings"] == 2 * batch_earn.BATCH_EARN_ITEMS_MAX
    assert_ledger_sound(engine)


def test_a_referred_members_first_earn_in_a_batch_pays_the_referral_reward_once(
    engine: Engine, programme
) -> None:
    referrer, _ = enroll(engine)
    code = get_referral_code(
        UnitOfWork(engine), PARTNER_ID, MemberReference(member_id=referrer), now()
    )[1]
    referred = members.enroll(
        UnitOfWork(engine), PARTNER_ID, "enrol-referred", "referred", "Bob", now(),
        referral_code=code,
    ).member.member_id  # fmt: skip
    result = run(engine, programme, [command(referred, 50_000), command(referred, 50_000)])
    assert result.applied_count == 2
    unary = operations.earn(
        UnitOfWork(engine), programme, PARTNER_ID, command(referred, 50_000), now()
    )
    bonus = REFERRAL_BONUS_POINTS_DEFAULT
    assert unary.balance_points == 3 * 100 + bonus  # paid once, on the batch's first item
    assert balance_of(engine, referrer) == bonus
    assert_ledger_sound(engine)


def test_concurrent_batches_naming_members_in_opposite_orders_never_deadlock(
    engine: Engine, database_url: str, programme
) -> None:
    """Item by item, locks were taken in item order: two such batches could deadlock."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: nothing to deadlock")
    member_ids = [enroll(engine)[0] for _ in range(6)]

    def batches(order: list[str]) -> int:
        return sum(
            run(engine, programme, [command(m) for m in order]).applied_count for _ in range(5)
        )

    with ThreadPoolExecutor(2) as pool:
        forward = pool.submit(batches, member_ids)
        backward = pool.submit(batches, member_ids[::-1])
        assert forward.result(timeout=60) + backward.result(timeout=60) == 2 * 5 * 6
    assert_ledger_sound(engine)


def balance_of(engine: Engine, member_id: str) -> int:
    reference = MemberReference(member_id=member_id)
    return operations.get_balance(
        UnitOfWork(engine), PARTNER_ID, reference, None, now()
    ).balance_points


@pytest.mark.parametrize("all_or_nothing", [False, True])
def test_an_item_whose_request_id_a_member_call_used_is_refused_as_reused(
    engine: Engine, programme, all_or_nothing: bool
) -> None:
    """Enrolment and link results are member ids, not transaction ids: an item reusing such a
    request id is REQUEST_ID_REUSED as a unary earn is, and the other items keep their fate."""
    skip_on_citus(engine, REQUEST_IDS_PER_MEMBER)
    member_id, _ = enroll(engine)
    members.enroll(UnitOfWork(engine), PARTNER_ID, "enrolled-1", "customer-x", "Ana", now())
    members.link_partner_account(
        UnitOfWork(engine), PARTNER_ID, "linked-1", member_id, "customer-y", now()
    )
    items = [command(member_id, request_id="enrolled-1"), command(member_id)]
    items += [command(member_id, request_id="linked-1")]
    if all_or_nothing:
        before = row_counts(engine)
        with pytest.raises(AlreadyExists) as failure:
            run(engine, programme, items, all_or_nothing=True)
        assert failure.value.reason == "REQUEST_ID_REUSED"
        assert failure.value.metadata["item_index"] == "0"
        assert row_counts(engine) == before
        return
    result = run(engine, programme, items)
    assert [o.error.reason if o.error else "applied" for o in result.outcomes] == [
        "REQUEST_ID_REUSED",
        "applied",
        "REQUEST_ID_REUSED",
    ]
    assert "operation" in result.outcomes[0].error.metadata["differing_fields"]
    assert_ledger_sound(engine)

"""Request ids whose first answer was a refusal: the refusal is final, and an attempt that
applied first always wins over a refusal being remembered (ledger/idempotency.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import Engine, text

from coalition import operations
from coalition.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from coalition.domain.points import Money
from coalition.identity import members, merge
from coalition.identity.identifiers import IdentifierHasher, normalise_email
from coalition.identity.members import MemberReference
from coalition.ledger import idempotency, journal, lots, writer
from coalition.ledger.accounts import member_account_id, partner_issuance_account_id
from coalition.ledger.idempotency import KeyedRequest
from coalition.operations import batch_burn, batch_earn, points
from coalition.operations.points import BurnCommand, EarnCommand
from coalition.operations.set_based import BatchItemOutcome
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.unit_of_work import UnitOfWork
from tests.integration.ledger_checks import (
    assert_ledger_sound,
    lock_waiters_query,
    remembered_refusals,
    row_counts,
)
from tests.integration.test_ledger import earn, enroll, now

pytestmark = pytest.mark.integration

T = TypeVar("T")
REFUSAL = FailedPrecondition("INSUFFICIENT_POINTS", "member m holds 0 points", {"member_id": "m"})


def burn_request(member_id: str, points: int, request_id: str) -> BurnCommand:
    return BurnCommand(request_id, MemberReference(member_id=member_id), points=points)


def keyed(command: BurnCommand) -> KeyedRequest:
    """The burn's keyed request, kept with its member as operations.burn keeps it."""
    fingerprint = points._fingerprint(command)
    member_id = command.member.member_id or ""
    return KeyedRequest("test-coffee", command.request_id, "burn", fingerprint, now(), member_id)


def test_every_ledger_refusal_is_repeated_to_a_retry_with_nothing_applied(engine: Engine) -> None:
    member_id = enroll(engine)
    command = EarnCommand("earn-1", MemberReference(member_id=member_id), spend=Money(4, "CNY"))
    with pytest.raises(FailedPrecondition) as first:
        operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, "test-coffee", command, now())
    with pytest.raises(FailedPrecondition) as again:
        operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, "test-coffee", command, now())
    assert first.value.reason == again.value.reason == "NO_POINTS_EARNED"
    assert (again.value.message, again.value.metadata) == (
        first.value.message,
        first.value.metadata,
    )
    missing = EarnCommand("earn-2", MemberReference(member_id="nobody"), spend=Money(9, "CNY"))
    for _ in range(2):
        with pytest.raises(NotFound):
            operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, "test-coffee", missing, now())
    assert remembered_refusals(engine) == {
        ("test-coffee", "earn-1"): "NO_POINTS_EARNED",
        ("test-coffee", "earn-2"): "MEMBER_NOT_FOUND",
    }
    assert row_counts(engine, ["journal_transactions"]) == {"journal_transactions": 0}


def test_a_refusal_stays_final_when_the_request_could_be_applied_later(engine: Engine) -> None:
    """The case it exists for: a queued first attempt running after its refused retry."""
    member_id = enroll(engine)
    command = burn_request(member_id, 10, "burn-1")
    with pytest.raises(FailedPrecondition):
        operations.burn(UnitOfWork(engine), "test-coffee", command, now())
    earn(engine, member_id, 50_000)  # 100 points: the burn could now be paid
    rows_before = row_counts(engine)
    with pytest.raises(FailedPrecondition) as late:
        operations.burn(UnitOfWork(engine), "test-coffee", command, now())
    assert late.value.reason == "INSUFFICIENT_POINTS"
    assert late.value.metadata["balance_points"] == "0"  # the first answer, word for word
    assert row_counts(engine) == rows_before
    assert_ledger_sound(engine)


def test_remembering_a_refusal_yields_to_an_attempt_that_applied_first(engine: Engine) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 50_000)
    command = burn_request(member_id, 10, "burn-1")
    applied = operations.burn(UnitOfWork(engine), "test-coffee", command, now())
    with UnitOfWork(engine) as uow:
        claim = idempotency.remember_refusal(uow, keyed(command), REFUSAL)
        uow.commit()
    assert claim.replayed_result_id == str(applied.transaction.transaction_id)
    assert remembered_refusals(engine) == {}


def test_remembering_a_refusal_twice_repeats_the_first_and_a_new_payload_is_reuse(
    engine: Engine,
) -> None:
    command = burn_request("m", 10, "burn-1")
    for _ in range(2):
        with UnitOfWork(engine) as uow:
            try:
                idempotency.remember_refusal(uow, keyed(command), REFUSAL)
                uow.commit()
            except FailedPrecondition as repeated:
                assert (repeated.reason, repeated.message) == (REFUSAL.reason, REFUSAL.message)
    other_payload = burn_request("m", 11, "burn-1")
    with UnitOfWork(engine) as uow, pytest.raises(AlreadyExists) as reused:
        idempotency.remember_refusal(uow, keyed(other_payload), REFUSAL)
    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert remembered_refusals(engine) == {("test-coffee", "burn-1"): "INSUFFICIENT_POINTS"}


def test_a_refusal_waits_for_an_uncommitted_attempt_and_then_replays_it(
    engine: Engine, database_url: str
) -> None:
    """PostgreSQL: the refusal's claim blocks on the other attempt's claim until it commits."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: no two claims are ever in flight")
    member_id = enroll(engine)
    earn(engine, member_id, 50_000)
    command = burn_request(member_id, 10, "burn-1")
    member_locked, release = threading.Event(), threading.Event()

    def hold_the_member_lock() -> None:
        # The burn claims its request id first, then waits here for its member's lock.
        with UnitOfWork(engine) as uow:
            journal.lock_member_balance(uow, member_id)
            member_locked.set()
            assert release.wait(10)

    def remember() -> str | None:
        with UnitOfWork(engine) as uow:
            claim = idempotency.remember_refusal(uow, keyed(command), REFUSAL)
            uow.commit()
            return claim.replayed_result_id

    with ThreadPoolExecutor(3) as pool:
        holder = pool.submit(hold_the_member_lock)
        assert member_locked.wait(10)
        first = pool.submit(operations.burn, UnitOfWork(engine), "test-coffee", command, now())
        assert wait_for_lock_waits(engine, 1), "the burn did not wait on its member's lock"
        refusal = pool.submit(remember)
        assert wait_for_lock_waits(engine, 2), "the refusal's claim did not wait on the lock"
        assert not refusal.done()
        release.set()
        holder.result(timeout=10)
        applied = first.result(timeout=10)
        assert refusal.result(timeout=10) == str(applied.transaction.transaction_id)
    assert remembered_refusals(engine) == {}


def test_a_groups_claim_waits_for_a_concurrent_one_before_it_locks_any_member(
    engine: Engine, database_url: str
) -> None:
    """PostgreSQL: a group's claims and member locks travel in one statement, claims first.
    While its claim waits for another transaction's claim of the same id, the group holds no
    member lock, so that transaction can still lock the member and commit (were the locks
    first, the two would wait on each other)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: no two claims are ever in flight")
    member_id = enroll(engine)
    request = keyed(burn_request(member_id, 10, "burn-1"))
    claimed, go_on = threading.Event(), threading.Event()

    def first_attempt() -> dict[str, int]:
        with UnitOfWork(engine) as uow:
            idempotency.claim_many(uow, [(request, None)])
            claimed.set()
            assert go_on.wait(10)
            uow.connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            balances = journal.lock_member_balances(uow, {member_id})
            uow.commit()
            return balances

    def group() -> tuple[set[tuple[str, str]], dict[str, int]]:
        with UnitOfWork(engine) as uow:
            return idempotency.claim_many(uow, [(request, None)], locking={member_id})

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(first_attempt)
        assert claimed.wait(10)
        grouped = pool.submit(group)
        assert wait_for_lock_waits(engine, 1), "the group's claim did not wait"
        go_on.set()
        assert first.result(timeout=10) == {member_account_id(member_id): 0}
        keys, balances = grouped.result(timeout=10)
    assert keys == set(), "the id was the first attempt's"
    assert balances == {member_account_id(member_id): 0}


def test_a_refusal_for_the_hubs_own_misconfiguration_is_not_kept(engine: Engine) -> None:
    """IDENTIFIER_KEY_MISMATCH says the hub runs with the wrong identity secret: once the
    operator restores it, the same request must apply."""
    right, wrong = IdentifierHasher(b"r" * 32), IdentifierHasher(b"w" * 32)

    def enrol_tom(hasher: IdentifierHasher) -> members.Enrolment:
        details = members.EnrolmentDetails(identifiers=(normalise_email("tom@example.com"),))
        return members.enroll(
            UnitOfWork(engine), "test-coffee", "enrol-tom", "C-2", "Tom", now(),
            details=details, hasher=hasher,
        )  # fmt: skip

    first = members.EnrolmentDetails(identifiers=(normalise_email("mei@example.com"),))
    members.enroll(
        UnitOfWork(engine), "test-coffee", "enrol-mei", "C-1", "Mei", now(),
        details=first, hasher=right,
    )  # fmt: skip
    with pytest.raises(FailedPrecondition) as refused:
        enrol_tom(wrong)
    assert refused.value.reason == "IDENTIFIER_KEY_MISMATCH"
    assert remembered_refusals(engine) == {}
    assert enrol_tom(right).created


def test_an_earn_that_lost_a_race_with_a_merge_applies_to_the_survivor_on_retry(
    engine: Engine, database_url: str
) -> None:
    """MEMBER_MERGED from a merge that committed while the earn waited for the member's lock
    tells the client to retry: it is not the request's final answer, and the retry (same
    request id) resolves the customer id to the survivor and applies."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: a merge cannot commit between resolve and lock")
    survivor_id = enroll(engine)
    duplicate = members.enroll(UnitOfWork(engine), "test-coffee", "e-1", "C-dup", "Mei", now())
    duplicate_id = duplicate.member.member_id
    earn(engine, duplicate_id, 5_000)
    command = EarnCommand(
        "earn-1", MemberReference(partner_customer_id="C-dup"), Money(10_000, "CNY")
    )
    raced = while_a_merge_commits(
        engine,
        survivor_id,
        duplicate_id,
        lambda: operations.earn(
            UnitOfWork(engine), DEFAULT_PROGRAMME, "test-coffee", command, now()
        ),
    )
    with pytest.raises(FailedPrecondition) as refused:
        raced.result(timeout=10)
    assert refused.value.reason == "MEMBER_MERGED"
    assert remembered_refusals(engine) == {}
    retried = operations.earn(UnitOfWork(engine), DEFAULT_PROGRAMME, "test-coffee", command, now())
    assert (retried.transaction.member_id, retried.replayed) == (survivor_id, False)
    assert_ledger_sound(engine)


@pytest.mark.parametrize("operation", ["earn", "burn"])
def test_a_group_refuses_only_the_member_a_merge_closed_while_it_waited(
    engine: Engine, database_url: str, operation: str
) -> None:
    """A group of two members whose first was merged while the group waited for its lock:
    that call hears MEMBER_MERGED (not kept: a retry applies to the survivor), the other
    applies in the same transaction, and nothing is posted to the merged member."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: a merge cannot commit between resolve and lock")
    survivor_id, other_id = enroll(engine), enroll(engine)
    duplicate = members.enroll(UnitOfWork(engine), "test-coffee", "e-1", "C-dup", "Mei", now())
    duplicate_id = duplicate.member.member_id
    for member_id in (duplicate_id, other_id):
        earn(engine, member_id, 5_000)
    reference = MemberReference(partner_customer_id="C-dup")
    commands: list[EarnCommand] | list[BurnCommand] = (
        [
            EarnCommand("group-1", reference, Money(10_000, "CNY")),
            EarnCommand("group-2", MemberReference(member_id=other_id), Money(10_000, "CNY")),
        ]
        if operation == "earn"
        else [
            BurnCommand("group-1", reference, points=3),
            BurnCommand("group-2", MemberReference(member_id=other_id), points=3),
        ]
    )

    def group() -> list[BatchItemOutcome]:
        calls = [("test-coffee", command) for command in commands]
        if operation == "earn":
            return list(
                batch_earn.earn_many(UnitOfWork(engine), DEFAULT_PROGRAMME, calls, now()).outcomes
            )
        return list(batch_burn.burn_many(UnitOfWork(engine), calls, now()))  # type: ignore[arg-type]

    refused, applied = while_a_merge_commits(engine, survivor_id, duplicate_id, group).result(10)
    assert refused.error is not None and refused.error.reason == "MEMBER_MERGED"
    assert refused.error.metadata["survivor_member_id"] == survivor_id
    assert applied.result is not None and applied.result.transaction.member_id == other_id
    assert remembered_refusals(engine) == {}
    with UnitOfWork(engine) as uow:
        assert journal.member_balance(uow, duplicate_id) == 0
    (retried,) = group()[:1]
    assert retried.result is not None and retried.result.transaction.member_id == survivor_id
    assert_ledger_sound(engine)


def direct_entry(
    member_id: str, points: int, lot_moves: tuple[writer.LotMove, ...] = ()
) -> writer.JournalEntry:
    """An earn (points > 0, issuing its lot) or a burn (< 0, of `lot_moves`), handed to the
    writer as it stands."""
    return writer.JournalEntry(
        kind="earn" if points > 0 else "burn",
        partner_id="test-coffee",
        member_id=member_id,
        request_id=f"direct-{uuid.uuid4().hex}",
        occurred_at=now(),
        postings=(
            writer.Posting(member_account_id(member_id), points),
            writer.Posting(partner_issuance_account_id("test-coffee"), -points),
        ),
        lot=writer.NewLot("test-coffee", points, None) if points > 0 else None,
        lot_moves=lot_moves,
    )


def test_the_writer_posts_nothing_to_a_merged_member(engine: Engine) -> None:
    """The writer's last line: entries that post to a merged member raise MembersMerged
    (naming its survivor) before any row is written, whatever else the call writes; the
    caller's transaction goes on (a group commits its other calls) with nothing of them."""
    survivor_id, duplicate_id, other_id = enroll(engine), enroll(engine), enroll(engine)
    merge.merge_members(UnitOfWork(engine), "ops", "merge-1", survivor_id, duplicate_id, now())
    before = row_counts(engine)
    entries = [direct_entry(other_id, 5), direct_entry(duplicate_id, 5)]
    with UnitOfWork(engine) as uow:
        journal.lock_member_balances(uow, {other_id, duplicate_id})
        with pytest.raises(writer.MembersMerged) as merged:
            writer.write(uow, entries, now())
        uow.commit()
    assert merged.value.survivors == {duplicate_id: survivor_id}
    assert row_counts(engine) == before


def test_the_writer_moves_no_balance_below_zero(engine: Engine) -> None:
    """A debit the balance cannot cover refuses the whole call INSUFFICIENT_POINTS, its
    credits included, and writes nothing; the same call within the balance writes it all."""
    member_id, other_id = enroll(engine), enroll(engine)
    with UnitOfWork(engine) as uow:
        journal.lock_member_balances(uow, {member_id})
        writer.write(uow, [direct_entry(member_id, 10)], now())
        uow.commit()
    before = row_counts(engine)
    too_much = [direct_entry(other_id, 7), direct_entry(member_id, 4), direct_entry(member_id, -15)]
    with UnitOfWork(engine) as uow:
        journal.lock_member_balances(uow, {member_id, other_id})
        with pytest.raises(FailedPrecondition) as refused:
            writer.write(uow, too_much, now())
        uow.commit()
    assert refused.value.reason == "INSUFFICIENT_POINTS"
    assert refused.value.metadata == {"member_id": member_id, "points_requested": "11"}
    assert row_counts(engine) == before
    with UnitOfWork(engine) as uow:
        journal.lock_member_balances(uow, {member_id, other_id})
        (moves,) = lots.consumptions(uow, [(member_id, 10)])
        within = [direct_entry(other_id, 7), direct_entry(member_id, 4)]
        within.append(direct_entry(member_id, -10, moves))
        records = writer.write(uow, within, now())
        uow.commit()
    assert [r.balance_points_after for r in records] == [7, 14, 4]
    assert_ledger_sound(engine)


def while_a_merge_commits(
    engine: Engine, survivor_id: str, duplicate_id: str, call: Callable[[], T]
) -> Future[T]:
    """`call()`, started while a merge of `duplicate_id` into `survivor_id` waits for the
    duplicate's lock, so that the call (which has resolved the duplicate already) waits behind
    the merge and the merge commits first; returned once the merge committed."""
    pool = ThreadPoolExecutor(2)
    with engine.connect() as holder:
        # Another session holds the duplicate's lock; the merge queues on it first, then the
        # call.
        holder.execute(
            text(
                "SELECT 1 FROM member_accounts WHERE member_id = :member"
                " AND account_id = :id FOR UPDATE"
            ),
            {"member": duplicate_id, "id": f"member:{duplicate_id}"},
        )
        merged = pool.submit(
            merge.merge_members, UnitOfWork(engine), "ops", "merge-1", survivor_id, duplicate_id,
            now(),
        )  # fmt: skip
        assert wait_for_lock_waits(engine, 1)
        raced = pool.submit(call)
        assert wait_for_lock_waits(engine, 2)
        holder.rollback()
        assert merged.result(timeout=10).points_moved == 10
    pool.shutdown(wait=False)
    return raced


def wait_for_lock_waits(engine: Engine, sessions: int, timeout_seconds: float = 10.0) -> bool:
    """Whether `sessions` sessions of this database are seen waiting on locks in time."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(lock_waiters_query(connection)).scalar_one() >= sessions:
                return True
        time.sleep(0.01)
    return False

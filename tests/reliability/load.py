"""Random partner traffic against one or more hubs, and the pure-Python model it is checked by.

Each worker thread is one partner's POS: it earns, burns and reverses for members of a shared
pool, reads balances, and retries: every mutation is sent until the hub gives a definitive
answer, with the SAME request_id, to a random hub, sometimes with a deadline too short to
finish and sometimes again after it succeeded. What each worker saw is recorded; afterwards
`replay_journal` rebuilds every balance from the journal alone and `check_outcomes` compares
the model, the hub's caches and what the clients were told.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy import Engine, text

from coalition.v1 import common_pb2, points_service_pb2, points_service_pb2_grpc
from tests.integration.ledger_checks import remembered_refusals

CURRENCY = {"test-coffee": "CNY", "test-air": "EUR", "test-cinema": "GBP"}
CALL_TIMEOUT_SECONDS = 15.0
SHORT_DEADLINE_SECONDS = (0.001, 0.01, 0.05)
ATTEMPTS_MAX = 200  # per request: retries are bounded too
RETRY_PAUSE_SECONDS = 0.1  # 200 tries outlast a database restart of several seconds
# Answers that mean "not applied, and never will be for this payload".
DEFINITIVE_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
# Answers after which the client must retry with the same request_id.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass
class Applied:
    partner_id: str
    request_id: str
    transaction_id: str
    points_delta: int


@dataclass
class Observations:
    """What one worker was told; merged over all workers at the end."""

    applied: dict[tuple[str, str], Applied] = field(default_factory=dict)
    # A refusal is final, also after attempts whose outcome the client never learnt: the hub
    # remembers it under the request_id, so a late attempt repeats it (ledger/idempotency.py).
    refused: dict[tuple[str, str], str] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    negative_balances_seen: list[tuple[str, int]] = field(default_factory=list)
    replays: int = 0
    refusals_repeated: int = 0
    operations: int = 0

    def merge(self, other: Observations) -> None:
        self.applied.update(other.applied)
        self.refused.update(other.refused)
        for code, count in other.codes.items():
            self.codes[code] += count
        self.negative_balances_seen.extend(other.negative_balances_seen)
        self.replays += other.replays
        self.refusals_repeated += other.refusals_repeated
        self.operations += other.operations


class Worker:
    def __init__(
        self,
        channels: list[grpc.Channel],
        partner_id: str,
        metadata: Any,
        member_ids: list[str],
        seed: int,
    ) -> None:
        self._stubs = [points_service_pb2_grpc.PointsServiceStub(channel) for channel in channels]
        self._partner_id = partner_id
        self._metadata = metadata
        self._member_ids = member_ids
        self._random = random.Random(seed)
        self._own_transactions: list[str] = []
        self.seen = Observations()
        self.failure: BaseException | None = None

    def run(self, operations: int, stop: threading.Event) -> None:
        try:
            for _ in range(operations):
                if stop.is_set():
                    return
                self._one_operation()
        except BaseException as error:  # reported by the test, never swallowed
            self.failure = error

    def _one_operation(self) -> None:
        choice = self._random.random()
        member = common_pb2.MemberReference(member_id=self._random.choice(self._member_ids))
        request_id = uuid.uuid4().hex
        if choice < 0.15:
            self._read_balance(member)
            return
        if choice < 0.55:
            method = "Earn"
            request: Any = points_service_pb2.EarnRequest(
                request_id=request_id,
                member=member,
                spend=common_pb2.Money(
                    amount_minor=self._random.randint(1, 50_000),
                    currency=CURRENCY[self._partner_id],
                ),
            )
        elif choice < 0.85 or not self._own_transactions:
            method = "Burn"
            request = points_service_pb2.BurnRequest(
                request_id=request_id, member=member, points=self._random.randint(1, 400)
            )
        else:
            method = "Reverse"
            request = points_service_pb2.ReverseRequest(
                request_id=request_id,
                transaction_id=self._random.choice(self._own_transactions),
                points=self._random.choice((0, 1, self._random.randint(1, 300))),
                reason="refund",
            )
        self.seen.operations += 1
        self._mutate(method, request)

    def _mutate(self, method: str, request: Any) -> None:
        key = (self._partner_id, request.request_id)
        first: Any = None
        refusal: str | None = None
        for _attempt in range(ATTEMPTS_MAX):
            timeout = (
                self._random.choice(SHORT_DEADLINE_SECONDS)
                if self._random.random() < 0.1
                else CALL_TIMEOUT_SECONDS
            )
            try:
                response = getattr(self._random.choice(self._stubs), method)(
                    request, metadata=self._metadata, timeout=timeout
                )
            except grpc.RpcError as error:
                code = error.code()
                self.seen.codes[code.name] += 1
                if code in RETRYABLE:
                    time.sleep(RETRY_PAUSE_SECONDS * self._random.uniform(0.5, 1.0))
                    continue
                assert code in DEFINITIVE_REFUSALS, f"{method} answered {code}: {error.details()}"
                if first is not None:
                    raise AssertionError(
                        f"{method} {key} refused after it was applied: {code}"
                    ) from error
                answer = f"{method} {code.name} {error.details()}"
                if refusal is None:
                    refusal = answer
                    # Sometimes the client re-sends a refusal too: it must hear it again.
                    if self._random.random() < 0.3:
                        continue
                    break
                assert answer == refusal, f"{key} first refused as {refusal}, then as {answer}"
                self.seen.refusals_repeated += 1
                break
            if refusal is not None:
                raise AssertionError(f"{method} {key} applied after it was refused: {refusal}")
            self.seen.codes["OK"] += 1
            self._check_balance(response.transaction.member_id, response.balance_points)
            if first is None:
                first = response
                # Sometimes the client retries a success too (a lost answer, as far as it knows).
                if self._random.random() < 0.3:
                    continue
                break
            assert response.replayed, f"{method} {key} applied twice"
            assert response.transaction.transaction_id == first.transaction.transaction_id
            self.seen.replays += 1
            break
        else:
            raise AssertionError(f"{method} {key}: no definitive answer in {ATTEMPTS_MAX} tries")
        if refusal is not None:
            self.seen.refused[key] = refusal
            return
        transaction = first.transaction
        self.seen.applied[key] = Applied(
            self._partner_id,
            request.request_id,
            transaction.transaction_id,
            transaction.points_delta,
        )
        if method != "Reverse":
            self._own_transactions.append(transaction.transaction_id)

    def _read_balance(self, member: common_pb2.MemberReference) -> None:
        for _attempt in range(ATTEMPTS_MAX):
            try:
                response = self._random.choice(self._stubs).GetBalance(
                    points_service_pb2.GetBalanceRequest(member=member),
                    metadata=self._metadata,
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            except grpc.RpcError as error:
                self.seen.codes[error.code().name] += 1
                assert error.code() in RETRYABLE, f"GetBalance answered {error.code()}"
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            self.seen.codes["OK"] += 1
            self._check_balance(member.member_id, response.balance_points)
            return

    def _check_balance(self, member_id: str, balance_points: int) -> None:
        if balance_points < 0:
            self.seen.negative_balances_seen.append((member_id, balance_points))


def run_workers(workers: list[Worker], operations: int, stop: threading.Event) -> Observations:
    threads = [
        threading.Thread(target=worker.run, args=(operations, stop), daemon=True)
        for worker in workers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
        assert not thread.is_alive(), "a load worker hung"
    merged = Observations()
    for worker in workers:
        if worker.failure is not None:
            raise worker.failure
        merged.merge(worker.seen)
    return merged


@dataclass(frozen=True)
class JournalRow:
    transaction_id: int
    kind: str
    partner_id: str
    member_id: str
    points_delta: int
    balance_points_after: int
    request_id: str
    parent_transaction_id: int | None


def journal(engine: Engine) -> list[JournalRow]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT transaction_id, kind, partner_id, member_id, points_delta,"
                " balance_points_after, request_id, parent_transaction_id"
                " FROM journal_transactions ORDER BY transaction_id"
            )
        )
        return [JournalRow(*row) for row in rows]


def replay_journal(rows: list[JournalRow]) -> dict[str, int]:
    """Every member's balance, rebuilt from the journal alone by the ledger's rules: a balance
    never goes negative, a reversal never exceeds what is left of its parent, and each member's
    balance_points_after chains from the previous one."""
    balances: dict[str, int] = defaultdict(int)
    left_to_reverse: dict[int, int] = {}
    for row in sorted(rows, key=lambda row: row.transaction_id):
        balances[row.member_id] += row.points_delta
        assert balances[row.member_id] >= 0, f"negative balance after {row}"
        assert balances[row.member_id] == row.balance_points_after, f"broken chain at {row}"
        if row.parent_transaction_id is None:
            left_to_reverse[row.transaction_id] = abs(row.points_delta)
            continue
        left_to_reverse[row.parent_transaction_id] -= abs(row.points_delta)
        assert left_to_reverse[row.parent_transaction_id] >= 0, f"over-reversed by {row}"
    return dict(balances)


def cached_balances(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT member_id, balance_points FROM member_accounts WHERE kind = 'member'")
        )
        return {member_id: int(points) for member_id, points in rows}


def check_outcomes(engine: Engine, seen: Observations) -> dict[str, int]:
    """The journal against the model and against what the clients were told; the model."""
    rows = journal(engine)
    model = replay_journal(rows)
    cached = cached_balances(engine)
    assert {m: p for m, p in cached.items() if p or m in model} == {
        m: p for m, p in model.items() if p or m in cached
    }, "balance caches differ from the journal replay"
    assert not seen.negative_balances_seen, seen.negative_balances_seen[:5]
    by_request: dict[tuple[str, str], list[JournalRow]] = defaultdict(list)
    for row in rows:
        by_request[(row.partner_id, row.request_id)].append(row)
    duplicated = {key: rows for key, rows in by_request.items() if len(rows) > 1}
    assert not duplicated, f"request ids applied more than once: {duplicated}"
    for key, applied in seen.applied.items():
        assert key in by_request, f"{key} was answered as applied but is not in the journal"
        (row,) = by_request[key]
        assert str(row.transaction_id) == applied.transaction_id
        assert row.points_delta == applied.points_delta
    remembered = remembered_refusals(engine)
    for key, outcome in seen.refused.items():
        assert key not in by_request, f"{key} was refused ({outcome}) but is in the journal"
        # The load sends only well-formed requests, so every refusal came from the ledger.
        assert key in remembered, f"{key} was refused ({outcome}) but its answer is not kept"
    mutations = {
        (row.partner_id, row.request_id) for row in rows if not row.request_id.startswith("setup-")
    }
    lost = mutations - set(seen.applied)
    assert not lost, f"journal rows no client was told about: {sorted(lost)[:5]}"
    return model

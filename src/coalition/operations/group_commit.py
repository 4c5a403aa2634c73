"""Group commit: concurrent earns and burns of one hub process, gathered into one database
transaction.

Every earn, unary or batch, goes through one set-based path (`batch_earn.earn_many`), and
every burn through another (`batch_burn.burn_many`), both on one frame
(operations/set_based.py): claims, member resolution, locks in account-id order, the domain
rules, one call of the ledger writer, results. A unary call alone is a group of one. Under
load, the calls that arrive while a group is being committed form the next group, so the
statements and the commit of a group are shared by all its calls:

- a request waits for nothing when the hub is idle: the committer takes whatever is queued the
  moment it is free; a window (`serve --group-window-ms`, default 0) makes it wait that long
  after the first queued call, or until the group is full, to gather more;
- a group holds at most `GROUP_SIZE_MAX` calls of one operation (`serve --group-size-max`):
  burns of any partners; earns of any partners the programme adds nothing to (the set-based
  path), or of one partner it adds to (item by item); its members are locked in one ordered
  statement, so concurrent groups never deadlock;
- a refusal of one call (NO_POINTS_EARNED, INSUFFICIENT_POINTS, ...) is that call's answer,
  kept under its request id in the same transaction, and never rolls back the others;
- no answer leaves before its group's transaction committed; a database fault answers every
  call of the group UNAVAILABLE (each retry applies at most once, by its request id);
- any other failure of a group (a bug one input triggers) is retried one call per
  transaction, so that only the call that causes it fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from coalition.domain.errors import CoalitionError, DeadlineExceeded, Unavailable
from coalition.operations import batch_burn, batch_earn
from coalition.operations.points import BurnCommand, EarnCommand, LedgerResult
from coalition.operations.set_based import BatchItemOutcome
from coalition.programme.config import Programme
from coalition.settings import DEFAULT_GROUP_COMMIT, GROUP_WINDOW_MS_MAX
from coalition.store import citus, deadlines
from coalition.store.engine import CITUS_INFO_KEY, create_committer_engine
from coalition.store.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

# The defaults; `serve --group-size-max` and `--group-window-ms` set them per hub (settings.py).
GROUP_SIZE_MAX = DEFAULT_GROUP_COMMIT.size_max
GROUP_WINDOW_SECONDS = DEFAULT_GROUP_COMMIT.window_ms / 1000
# Groups committing at once in one process, each on its own connection: while one waits for
# the database, the next forms and goes. Members are locked in one global order, so
# concurrent groups never deadlock.
COMMITTER_THREADS = 1
# How long a group may wait on locks when none of its callers set a deadline.
GROUP_WAIT_SECONDS_MAX = 30.0
# A group of callers with the longest deadlines waits on locks up to this much longer than
# the earliest of them asked (it then hears <OPERATION>_NOT_COMMITTED_IN_TIME, as on any
# timeout).
DEADLINE_SLACK_SECONDS = 1.0
# A call with less time left than this when its group starts is answered
# <OPERATION>_NOT_COMMITTED_IN_TIME and not applied: its answer could not reach it in time, and
# the caller's own clock runs a little ahead of the hub's view of its deadline.
DEADLINE_MARGIN_SECONDS = 0.05
QUEUE_LENGTH_MAX = 4096  # calls waiting in one process; past it, callers are refused
assert 0 < GROUP_SIZE_MAX <= batch_earn.BATCH_EARN_ITEMS_MAX, "a group is a batch"
BURN_GROUP = "burn"  # every burn goes set-based; no earn group key is this (batch_earn)
assert BURN_GROUP != batch_earn.SET_BASED_GROUP


@dataclass(frozen=True)
class Answer:
    result: LedgerResult
    balance_visible: bool  # whether the calling partner may see the member's balance


@dataclass
class _Pending:
    partner_id: str
    command: EarnCommand | BurnCommand
    deadline_monotonic: float
    answer: Future[Answer] = field(default_factory=Future)

    @property
    def operation(self) -> str:
        return "earn" if isinstance(self.command, EarnCommand) else "burn"


class Committer:
    """The committer threads of one hub process, on connections of their own (store/engine.py,
    `create_committer_engine`); servicer threads wait on them."""

    def __init__(
        self,
        engine: Engine,
        programme: Programme,
        group_size_max: int = GROUP_SIZE_MAX,
        window_seconds: float = GROUP_WINDOW_SECONDS,
        threads: int = COMMITTER_THREADS,
    ) -> None:
        assert 0 < group_size_max <= batch_earn.BATCH_EARN_ITEMS_MAX
        assert 0 <= window_seconds <= GROUP_WINDOW_MS_MAX / 1000, "a longer one is a latency bug"
        self._engine = create_committer_engine(engine, threads, GROUP_WAIT_SECONDS_MAX)
        self._own_engine = self._engine is not engine
        self._programme = programme  # the hub's, for every group (api/server.py)
        self._group_size_max = group_size_max
        self._window_seconds = window_seconds
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._citus: bool | None = None  # whether the database is Citus, once known
        assert 0 < threads <= 16
        self._threads = [
            threading.Thread(target=self._run, name=f"earn-committer-{index}", daemon=True)
            for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def earn(self, partner_id: str, command: EarnCommand, timeout_seconds: float | None) -> Answer:
        """Queue the earn, wait for its group to commit, and return its answer (or raise)."""
        return self._submit(
            _Pending(partner_id, command, _deadline(timeout_seconds)), timeout_seconds
        )

    def burn(self, partner_id: str, command: BurnCommand, timeout_seconds: float | None) -> Answer:
        """Queue the burn, wait for its group to commit, and return its answer (or raise)."""
        return self._submit(
            _Pending(partner_id, command, _deadline(timeout_seconds)), timeout_seconds
        )

    def _submit(self, pending: _Pending, timeout_seconds: float | None) -> Answer:
        with self._ready:
            assert not self._stopping, "the hub is stopping"
            if len(self._queue) >= QUEUE_LENGTH_MAX:
                raise overloaded(QUEUE_LENGTH_MAX)
            self._queue.append(pending)
            self._ready.notify()
        # Without a deadline gRPC reports an immense time left; the group's own lock waits are
        # bounded (GROUP_WAIT_SECONDS_MAX), so such a caller simply waits for its answer.
        wait_seconds = timeout_seconds if (timeout_seconds or 0) < GROUP_WAIT_SECONDS_MAX else None
        try:
            return pending.answer.result(timeout=wait_seconds)
        except TimeoutError:
            # The caller's deadline passed first; its group may still commit, and a retry
            # with the same request id replays what it did.
            raise not_committed_in_time(pending.operation) from None

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
        if self._own_engine:
            self._engine.dispose()

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            try:
                groups = self._split(taken, _now())
            except Exception as error:  # the database is down, say: every earn hears it
                if not isinstance(error, CoalitionError | DBAPIError):
                    logger.exception("grouping %d earns failed", len(taken))
                for pending in taken:
                    pending.answer.set_exception(error)
                continue
            for group in groups:
                self._commit(group)

    def _take(self) -> list[_Pending] | None:
        """Up to GROUP_SIZE_MAX queued earns, oldest first (None: stopping)."""
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._ready.wait()
            # The window runs from the moment a call is queued: the calls arriving meanwhile
            # (each a notify) do not end it, only a full group or the window's end does.
            window_ends = time.monotonic() + self._window_seconds
            while len(self._queue) < self._group_size_max and not self._stopping:
                seconds_left = window_ends - time.monotonic()
                if seconds_left <= 0:
                    break
                self._ready.wait(seconds_left)
            count = min(len(self._queue), self._group_size_max)
            return [self._queue.popleft() for _ in range(count)]

    def _split(self, taken: list[_Pending], now: datetime) -> list[list[_Pending]]:
        """The calls taken, as groups that share a path: the burns; the earns of all the
        partners the programme adds nothing to; the earns of each partner it adds to
        (batch_earn.group_keys). On Citus, each of those again by its member's shard."""
        earning = {pending.partner_id for pending in taken if pending.operation == "earn"}
        # A read: on SQLite a read-only unit of work takes no write lock (store/engine.py).
        splitting = UnitOfWork(self._engine, read_only=True)
        keys = batch_earn.group_keys(splitting, self._programme, earning, now) if earning else {}
        shards = self._shards(taken) if len(taken) > 1 and self._is_citus() else {}
        groups: dict[tuple[str, str], list[_Pending]] = {}
        for index, pending in enumerate(taken):
            key = keys[pending.partner_id] if pending.operation == "earn" else BURN_GROUP
            groups.setdefault((key, shards.get(index, "")), []).append(pending)
        return list(groups.values())

    def _is_citus(self) -> bool:
        if self._citus is None:
            with self._engine.connect() as connection:
                self._citus = bool(connection.info.get(CITUS_INFO_KEY, False))
        return self._citus

    def _shards(self, taken: list[_Pending]) -> dict[int, str]:
        """Each call's shard, by its index in `taken`: a group written on one shard commits in
        one phase, one written on several in two (PREPARE TRANSACTION on each worker). A call
        whose member is not found (a customer id not linked) is a group of its own. A member
        merged into one on another shard still makes its group a two-phase commit: correct,
        and rare."""
        customers = [
            (p.partner_id, p.command.member.partner_customer_id)
            for p in taken
            if p.command.member.partner_customer_id is not None
        ]
        with self._engine.connect() as connection:
            linked = citus.linked_members(connection, customers) if customers else {}
            member_ids = [_member_id(pending, linked) for pending in taken]
            shard_ids = citus.member_shards(connection, [m for m in member_ids if m])
            connection.rollback()
        return {
            index: str(shard_ids[member_id]) if member_id else f"alone:{index}"
            for index, member_id in enumerate(member_ids)
        }

    def _commit(self, group: list[_Pending]) -> None:
        # A call whose deadline passed while it queued behind a group that waited (on a
        # locked member, say) has heard <OPERATION>_NOT_COMMITTED_IN_TIME: it is not applied,
        # so that no group waits on locks for callers that are gone.
        group = _live(group, time.monotonic())
        if not group:
            return
        try:
            self._answer(group, _now())
        except (CoalitionError, DBAPIError) as error:
            for pending in group:  # the whole group failed alike: UNAVAILABLE, say
                pending.answer.set_exception(error)
        except batch_earn.PathsDiffer:
            for pending in group:  # a promotion started since the split: one by one
                self._commit([pending])
        except Exception as error:
            if len(group) == 1:
                group[0].answer.set_exception(error)  # the interceptor logs it, INTERNAL
                return
            logger.exception("a group of %d earns failed; retrying them one by one", len(group))
            for pending in group:
                self._commit([pending])

    def _answer(self, group: list[_Pending], now: datetime) -> None:
        monotonic = time.monotonic()
        # The group waits on locks as long as its most patient caller (store/deadlines.py);
        # the committer's connections bound their waits at GROUP_WAIT_SECONDS_MAX themselves,
        # so a group says so only when it must end sooner (a SET LOCAL round trip).
        seconds_left = max(p.deadline_monotonic for p in group) - monotonic
        session_bound = seconds_left >= GROUP_WAIT_SECONDS_MAX - DEADLINE_SLACK_SECONDS
        with deadlines.call_deadline(None if session_bound else seconds_left):
            outcomes = _outcomes(UnitOfWork(self._engine), self._programme, group, now)
        for pending, outcome in zip(group, outcomes, strict=True):
            if outcome.error is not None:
                pending.answer.set_exception(outcome.error)
            else:
                assert outcome.result is not None
                pending.answer.set_result(Answer(outcome.result, outcome.balance_visible))


def _member_id(pending: _Pending, linked: dict[tuple[str, str], str]) -> str | None:
    """The member the call names, or is linked to; None when no link is known."""
    member = pending.command.member
    if member.member_id is not None:
        return member.member_id
    assert member.partner_customer_id is not None
    return linked.get((pending.partner_id, member.partner_customer_id))


def _live(group: list[_Pending], monotonic: float) -> list[_Pending]:
    """The calls of `group` with time left; the others are answered."""
    live: list[_Pending] = []
    for pending in group:
        if pending.deadline_monotonic - DEADLINE_MARGIN_SECONDS > monotonic:
            live.append(pending)
        else:
            pending.answer.set_exception(not_committed_in_time(pending.operation))
    return live


def _outcomes(
    uow: UnitOfWork, programme: Programme, group: list[_Pending], now: datetime
) -> Sequence[BatchItemOutcome]:
    """The group's outcomes, in its order, from the set-based path of its operation."""
    earns = [(p.partner_id, p.command) for p in group if isinstance(p.command, EarnCommand)]
    burns = [(p.partner_id, p.command) for p in group if isinstance(p.command, BurnCommand)]
    assert not (earns and burns), "a group is of one operation"
    if burns:
        return batch_burn.burn_many(uow, burns, now, require_sight=True)  # partners' calls
    return batch_earn.earn_many(uow, programme, earns, now).outcomes


def overloaded(queue_length_max: int) -> Unavailable:
    """UNAVAILABLE / HUB_OVERLOADED: more calls are waiting in this process than it queues."""
    return Unavailable(
        "HUB_OVERLOADED",
        f"more than {queue_length_max} earns and burns are waiting on this hub process; "
        "retry later",
        {"queue_length_max": str(queue_length_max)},
    )


def not_committed_in_time(operation: str) -> DeadlineExceeded:
    """DEADLINE_EXCEEDED / EARN_NOT_COMMITTED_IN_TIME (BURN_...): the caller's deadline passed
    while its call waited for its group; it may still apply, once, and a retry replays it."""
    message = (
        f"the deadline passed before the {operation}'s transaction committed; retry with the "
        "same request_id to learn its outcome"
    )
    if operation == "burn":
        return DeadlineExceeded("BURN_NOT_COMMITTED_IN_TIME", message, {})
    return DeadlineExceeded("EARN_NOT_COMMITTED_IN_TIME", message, {})


def _deadline(timeout_seconds: float | None) -> float:
    wait_seconds = GROUP_WAIT_SECONDS_MAX if timeout_seconds is None else timeout_seconds
    return time.monotonic() + min(wait_seconds, GROUP_WAIT_SECONDS_MAX)


def _now() -> datetime:
    return datetime.now(UTC)

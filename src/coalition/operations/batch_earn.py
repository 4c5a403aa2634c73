"""Batch earn: up to 1,000 earns in one unit of work, for bulk loads.

Each item keeps the contract of a single earn: its own request id (claimed in this same
database transaction, replayed or refused as REQUEST_ID_REUSED exactly as `Earn` would, with
the same fingerprint, so a batch item and a unary earn replay each other), one balanced
journal transaction, a lot, the member's guarded balance cache, the partner event, the tier
qualifying points, the referral reward of a referred member's first qualifying earn. The
caller chooses all-or-nothing (the first failing item fails the whole call, naming the item,
and nothing is written) or per-item results (a failing item writes nothing but its refusal,
kept under its request id as `Earn` keeps it; the others are applied).

Both paths first lock every member the batch names, and the referrers it may reward, in one
SELECT ... FOR UPDATE in account-id order, so concurrent batches never deadlock.
- set-based, when the programme can add nothing to an earn of this partner (no promotion for
  it, one tier with multiplier 1): a fixed number of statements per batch whatever its size
  (multi-row INSERTs), plus two per referral reward. Every failure an item can have is found
  before the first ledger write.
- item by item otherwise: the building blocks of `operations.earn` inside one transaction,
  each item in a savepoint in per-item mode.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select

from coalition.domain import points as rules
from coalition.domain.errors import (
    CoalitionError,
    DeadlineExceeded,
    Unavailable,
)
from coalition.domain.points import RateVersion
from coalition.domain.promotions import Promotion
from coalition.identity import privacy
from coalition.identity.members import resolve
from coalition.identity.privacy import BALANCE
from coalition.ledger import idempotency, journal, writer
from coalition.ledger.accounts import member_account_id, partner_issuance_account_id
from coalition.ledger.idempotency import (
    KeyedRequest,
    answer_of_existing_claim,
    claim_request,
    is_final,
    remember_refusal,
)
from coalition.ledger.idempotency import record_result as record_claim_result
from coalition.ledger.journal import JournalEntry, Posting, TransactionRecord
from coalition.ledger.writer import NewLot
from coalition.operations import promotions
from coalition.operations.points import (
    EarnCommand,
    LedgerResult,
    _check_points_bound,
    _fingerprint,
    _occurred_at,
    _points_earned,
    earn_basis_field,
    post_earn,
)
from coalition.partners.catalog import Partner, PartnerTerms, partner_terms
from coalition.programme.config import Programme, active_programme
from coalition.referrals import rewards as referral_rewards
from coalition.store import driver
from coalition.store.driver import IN_LIST, Statement
from coalition.store.schema import (
    journal_transactions,
    partner_links,
)
from coalition.store.unit_of_work import UnitOfWork

BATCH_EARN_ITEMS_MAX = 1000
OPERATION = "earn"


@dataclass(frozen=True)
class BatchItemOutcome:
    result: LedgerResult | None = None
    error: CoalitionError | None = None
    # Whether the partner that asked may see the member's balance (identity/privacy.py), read
    # in the same transaction: an answer carries the balance only then.
    balance_visible: bool = False


@dataclass(frozen=True)
class BatchEarnResult:
    outcomes: tuple[BatchItemOutcome, ...]

    @property
    def applied_count(self) -> int:
        return sum(1 for o in self.outcomes if o.result is not None and not o.result.replayed)

    @property
    def replayed_count(self) -> int:
        return sum(1 for o in self.outcomes if o.result is not None and o.result.replayed)

    @property
    def failed_count(self) -> int:
        return sum(1 for o in self.outcomes if o.error is not None)


def earn(uow: UnitOfWork, partner_id: str, command: EarnCommand, now: datetime) -> LedgerResult:
    """One earn: a group of one through the same path as a batch and the hub's group commit
    (operations/group_commit.py), so all three claim, refuse and write alike."""
    (outcome,) = earn_many(uow, [(partner_id, command)], now).outcomes
    if outcome.error is not None:
        raise outcome.error
    assert outcome.result is not None
    return outcome.result


def earn_many(
    uow: UnitOfWork, earns: Sequence[tuple[str, EarnCommand]], now: datetime
) -> BatchEarnResult:
    """Independent earns, each (partner, command), in one unit of work, each with its own
    answer: a refusal of one is kept under its request id and never rolls back another.

    Earns of partners the programme adds nothing to go set-based together, whatever their
    partners; earns the programme may add to go item by item, one partner per call
    (`group_keys`). A call whose partners no longer share a path (a promotion started since
    the caller grouped them) raises `PathsDiffer`, before anything is written."""
    return _run(uow, earns, False, now)


class PathsDiffer(Exception):
    """The earns of one call no longer share a path: the caller splits them."""


def group_keys(uow: UnitOfWork, partner_ids: Iterable[str], now: datetime) -> dict[str, str]:
    """Each partner's group key: every partner the programme adds nothing to shares
    SET_BASED_GROUP; any other is a group of its own (from the promotion catalogue's cache)."""
    programme = active_programme()
    with uow:
        return {
            partner_id: SET_BASED_GROUP
            if _programme_adds_nothing(
                programme, promotions.candidates(uow, programme, partner_id, now)
            )
            else partner_id
            for partner_id in partner_ids
        }


SET_BASED_GROUP = ""  # no partner id is empty


def overloaded(queue_length_max: int) -> Unavailable:
    """UNAVAILABLE / HUB_OVERLOADED: more earns are waiting in this process than it queues."""
    return Unavailable(
        "HUB_OVERLOADED",
        f"more than {queue_length_max} earns are waiting on this hub process; retry later",
        {"queue_length_max": str(queue_length_max)},
    )


def not_committed_in_time() -> DeadlineExceeded:
    """DEADLINE_EXCEEDED / EARN_NOT_COMMITTED_IN_TIME: the caller's deadline passed while its
    earn waited for its group; the earn may still apply, once, and a retry replays it."""
    return DeadlineExceeded(
        "EARN_NOT_COMMITTED_IN_TIME",
        "the deadline passed before the earn's transaction committed; retry with the same "
        "request_id to learn its outcome",
        {},
    )


def batch_earn(
    uow: UnitOfWork,
    partner_id: str,
    items: Sequence[EarnCommand | CoalitionError],
    all_or_nothing: bool,
    now: datetime,
) -> BatchEarnResult:
    """Apply `items` (commands, or the error parsing that item found) in one unit of work."""
    return _run(uow, [(partner_id, item) for item in items], all_or_nothing, now)


def _run(
    uow: UnitOfWork,
    items: Sequence[tuple[str, EarnCommand | CoalitionError]],
    all_or_nothing: bool,
    now: datetime,
) -> BatchEarnResult:
    assert 0 < len(items) <= BATCH_EARN_ITEMS_MAX, "the API bounds the batch size"
    partner_ids = sorted({partner_id for partner_id, _ in items})
    programme = active_programme()
    with uow:
        candidates = {p: promotions.candidates(uow, programme, p, now) for p in partner_ids}
        explain_from_ledger: set[str] | None = None  # None: every earn's
        if all(_programme_adds_nothing(programme, c) for c in candidates.values()):
            batch = _SetBasedBatch(uow, all_or_nothing, now)
            outcomes = batch.run(items)
            explain_from_ledger = set(batch.referrers)  # a referral bonus may have been paid
        else:
            if len(partner_ids) > 1:
                raise PathsDiffer()
            (partner_id,) = partner_ids
            commands = [item for _, item in items]
            outcomes = _earn_item_by_item(
                uow, partner_id, commands, all_or_nothing, now, candidates[partner_id]
            )
        outcomes = _explained(uow, outcomes, explain_from_ledger)
        outcomes = _with_balance_sight(uow, [partner_id for partner_id, _ in items], outcomes)
        uow.commit()
    return BatchEarnResult(tuple(outcomes))


def _with_balance_sight(
    uow: UnitOfWork, partner_ids: Sequence[str], outcomes: Sequence[BatchItemOutcome]
) -> list[BatchItemOutcome]:
    """Each applied outcome, told whether its partner may see the member's balance."""
    pairs = {
        (partner_id, outcome.result.transaction.member_id)
        for partner_id, outcome in zip(partner_ids, outcomes, strict=True)
        if outcome.result is not None
    }
    seen = privacy.sights_of_pairs(uow, pairs)
    return [
        BatchItemOutcome(
            result=outcome.result,
            balance_visible=seen[(partner_id, outcome.result.transaction.member_id)].sees(BALANCE),
        )
        if outcome.result is not None
        else outcome
        for partner_id, outcome in zip(partner_ids, outcomes, strict=True)
    ]


def _explained(
    uow: UnitOfWork, outcomes: list[BatchItemOutcome], from_ledger: set[str] | None
) -> list[BatchItemOutcome]:
    """Each earn's explanation: read from what the ledger recorded for replays and for earns
    the programme may have added to (members in `from_ledger`, or all when None); an earn of
    the set-based path without a referral is its base points alone, known in memory."""
    read = [
        o.result.transaction
        for o in outcomes
        if o.result is not None
        and (
            o.result.replayed
            or from_ledger is None
            or o.result.transaction.member_id in from_ledger
        )
    ]
    explained = promotions.explanations(uow, read)
    return [
        o
        if o.result is None
        else BatchItemOutcome(
            result=replace(
                o.result,
                explanation=explained.get(o.result.transaction.transaction_id)
                or promotions.plain_explanation(o.result.transaction),
            )
        )
        for o in outcomes
    ]


def _programme_adds_nothing(programme: Programme, candidates: tuple[Promotion, ...]) -> bool:
    tiers = programme.ladder.tiers
    return not candidates and len(tiers) == 1 and tiers[0].earn_multiplier == 1


def _for_item(index: int, error: CoalitionError) -> CoalitionError:
    """The item's own error, naming the item (all-or-nothing fails the call with it)."""
    error.metadata["item_index"] = str(index)
    error.message = f"item {index}: {error.message}"
    return error


def _replayed(record: TransactionRecord) -> LedgerResult:
    """The response as first sent: when it was new, nothing of it was reversed yet."""
    record = replace(record, points_reversed=0)
    return LedgerResult(record, abs(record.points_delta), record.balance_points_after, True)


# --- set-based path -------------------------------------------------------------------------


@dataclass
class _Item:
    index: int
    partner_id: str
    command: EarnCommand
    request: KeyedRequest
    error: CoalitionError | None = None  # found before any write
    occurred_at: datetime | None = None
    rate: RateVersion | None = None
    points: int = 0
    member_id: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Request ids are the partner's own: (partner, request id) names one request."""
        return (self.partner_id, self.command.request_id)


USABLE_MEMBERS = Statement(
    f"SELECT member_id FROM members WHERE member_id {IN_LIST} %s"
    " AND merged_into_member_id IS NULL AND forget_time IS NULL"
)


class _SetBasedBatch:
    """Earns of any partners the programme adds nothing to, in a fixed number of statements
    whatever their number and partners."""

    def __init__(self, uow: UnitOfWork, all_or_nothing: bool, now: datetime):
        self.uow = uow
        self.connection = uow.connection
        self.all_or_nothing = all_or_nothing
        self.now = now
        self.outcomes: list[BatchItemOutcome | None] = []
        self.referrers: dict[str, str] = {}  # referred member -> referrer, reward unpaid

    def run(
        self, commands: Sequence[tuple[str, EarnCommand | CoalitionError]]
    ) -> list[BatchItemOutcome]:
        self.outcomes = [None] * len(commands)
        items, duplicates = self._parse(commands)
        terms = {p: partner_terms(self.uow, p) for p in sorted({i.partner_id for i in items})}
        # In the order a single earn checks them: the time, the member, the rate and points.
        self._check_times(terms, items)
        self._resolve_members(items)
        self._compute(terms, items)
        # All-or-nothing remembers nothing: a failing item fails the call before any write.
        claimed = self._claim(
            [item for item in items if item.error is None or not self.all_or_nothing]
        )
        self._settle_unclaimed([item for item in items if item.key not in claimed])
        for item in items:
            if item.key in claimed and item.error is not None:
                self._fail(item.index, item.error)  # claimed with its refusal, now final
        applied = [item for item in items if item.key in claimed and item.error is None]
        applied = self._lock_members(applied)
        if applied:
            self._write(terms, applied)
            self._reward_referrals(applied)
        self._settle_duplicates(items, duplicates)
        assert all(outcome is not None for outcome in self.outcomes)
        return [outcome for outcome in self.outcomes if outcome is not None]

    def _fail(self, index: int, error: CoalitionError) -> None:
        if self.all_or_nothing:
            raise _for_item(index, error)
        self.outcomes[index] = BatchItemOutcome(error=error)

    def _parse(
        self, commands: Sequence[tuple[str, EarnCommand | CoalitionError]]
    ) -> tuple[list[_Item], list[_Item]]:
        items: list[_Item] = []
        duplicates: list[_Item] = []
        seen: set[tuple[str, str]] = set()
        for index, (partner_id, command) in enumerate(commands):
            if isinstance(command, CoalitionError):
                self._fail(index, command)
                continue
            item = _Item(index, partner_id, command, _keyed_request(partner_id, command, self.now))
            if item.key in seen:
                duplicates.append(item)  # judged against its first occurrence
            else:
                seen.add(item.key)
                items.append(item)
        return items, duplicates

    def _check_times(self, terms: Mapping[str, PartnerTerms], items: list[_Item]) -> None:
        for item in items:
            try:
                partner = terms[item.partner_id].partner
                item.occurred_at = _occurred_at(item.command.occurred_at, self.now, partner)
            except CoalitionError as error:
                item.error = error

    def _compute(self, terms: Mapping[str, PartnerTerms], items: list[_Item]) -> None:
        """Rates and points, in memory: past rate versions never change."""
        for item in items:
            if item.error is not None:
                continue
            assert item.occurred_at is not None
            partner_terms_of_item = terms[item.partner_id]
            try:
                item.rate = partner_terms_of_item.rate_at(item.occurred_at)
                item.points = _points_earned(
                    partner_terms_of_item.partner,
                    item.rate,
                    item.command.spend,
                    item.command.native_points,
                )
            except CoalitionError as error:
                item.error = error

    def _resolve_members(self, items: list[_Item]) -> None:
        """Member ids in a few reads; anything unusual (unknown, merged, forgotten) is resolved
        one by one by `resolve`, so that it fails or redirects exactly as a single earn."""
        linked = self._linked_customers(items)
        candidates: dict[int, str | None] = {}
        for item in items:
            if item.error is None:
                reference = item.command.member
                candidates[item.index] = (
                    reference.member_id
                    if reference.member_id is not None
                    else linked.get((item.partner_id, reference.partner_customer_id or ""))
                )
        member_ids = sorted({m for m in candidates.values() if m is not None})
        usable = (
            {row[0] for row in driver.execute(self.uow, USABLE_MEMBERS, (member_ids,))}
            if member_ids
            else set()
        )
        for item in items:
            if item.error is not None:
                continue
            candidate = candidates[item.index]
            if candidate in usable:
                item.member_id = candidate
                continue
            try:
                item.member_id = resolve(self.uow, item.partner_id, item.command.member)
            except CoalitionError as error:
                item.error = error

    def _linked_customers(self, items: list[_Item]) -> dict[tuple[str, str], str]:
        """(partner, partner customer id) -> member, for the items that name a customer id:
        one read per partner that names any."""
        by_partner: dict[str, set[str]] = defaultdict(set)
        for item in items:
            customer_id = item.command.member.partner_customer_id
            if item.error is None and customer_id is not None:
                by_partner[item.partner_id].add(customer_id)
        linked: dict[tuple[str, str], str] = {}
        for partner_id, customer_ids in sorted(by_partner.items()):
            rows = self.connection.execute(
                select(partner_links.c.partner_customer_id, partner_links.c.member_id).where(
                    partner_links.c.partner_id == partner_id,
                    partner_links.c.partner_customer_id.in_(sorted(customer_ids)),
                )
            )
            linked.update(((partner_id, customer_id), member) for customer_id, member in rows)
        return linked

    def _claim(self, items: list[_Item]) -> set[tuple[str, str]]:
        """Claim the request ids, a failing item's with its refusal as its final answer
        (idempotency.py); the ids already claimed by a committed request are left alone."""
        if not items:
            return set()
        # Each claim is kept with its member (ledger/idempotency.py), resolved just before.
        for item in items:
            item.request = replace(item.request, member_id=item.member_id or "")
        return idempotency.claim_many(self.uow, [(item.request, item.error) for item in items])

    def _settle_unclaimed(self, items: list[_Item]) -> None:
        """Items whose request id was applied before are replayed or refused as a reuse, as a
        single earn would (its claim comes first); the rest fail with their own error."""
        if not items:
            return
        claims = idempotency.existing_claims(self.uow, [item.key for item in items])
        # Only earns' results are transaction ids (an enrolment's is a member id); a claim of
        # another operation is refused as a reuse below.
        replayed_ids = sorted(
            int(claim.result_id)
            for claim in claims.values()
            if claim.operation == OPERATION and claim.result_id is not None
        )
        records = {
            record.transaction_id: record for record in _find_transactions(self.uow, replayed_ids)
        }
        for item in items:
            claim = claims.get(item.key)
            if claim is None:
                assert item.error is not None, "an unclaimed request id is claimed by another"
                self._fail(item.index, item.error)
                continue
            try:
                answer_of_existing_claim(
                    item.command.request_id,
                    claim.fingerprint,
                    item.request.canonical_fingerprint,
                    claim.refusal,
                )
            except CoalitionError as answer:
                self._fail(item.index, answer)
                continue
            assert claim.result_id is not None, "a committed claim records its result or refusal"
            record = records[int(claim.result_id)]
            self.outcomes[item.index] = BatchItemOutcome(result=_replayed(record))

    def _lock_members(self, items: list[_Item]) -> list[_Item]:
        """Lock every member account of the batch, and of the referrers it may reward, in one
        account-id order (SQLite already serialises writers), then refuse members merged
        meanwhile."""
        if not items:
            return items
        member_ids = {item.member_id or "" for item in items}
        self.referrers = referral_rewards.pending_referrers(self.uow, member_ids)
        journal.lock_member_balances(self.uow, member_ids | set(self.referrers.values()))
        merged = journal.merged_members(self.uow, (item.member_id or "" for item in items))
        if not merged:
            return items
        kept: list[_Item] = []
        for item in items:
            if item.member_id not in merged:
                kept.append(item)
                continue
            try:
                journal.lock_member_balance(self.uow, item.member_id or "")
                raise AssertionError("a merged member is refused")
            except CoalitionError as error:
                # MEMBER_MERGED tells the client to retry (with the survivor): no final answer,
                # so the claim is given up and a retry applies (idempotency.is_final).
                assert not is_final(error), "a race with a merge is retried, never kept"
                idempotency.release_claim(self.uow, item.request)
                self._fail(item.index, error)  # all-or-nothing: the call fails here
        return kept

    def _write(self, terms: Mapping[str, PartnerTerms], items: list[_Item]) -> None:
        """Every applied item through the ledger's one writer, in one call."""
        items.sort(key=lambda item: item.index)
        entries = [self._entry(terms[item.partner_id].partner, item) for item in items]
        records = writer.write(self.uow, entries, self.now, results=[i.key for i in items])
        for item, record in zip(items, records, strict=True):
            result = LedgerResult(record, item.points, record.balance_points_after, False)
            self.outcomes[item.index] = BatchItemOutcome(result=result)

    def _entry(self, partner: Partner, item: _Item) -> JournalEntry:
        """An earn with nothing from the programme: member +p, issuance -p, a lot of p."""
        assert item.member_id is not None and item.rate is not None
        assert item.occurred_at is not None and item.points > 0
        _check_points_bound(item.points, earn_basis_field(item.command))
        spend = item.command.spend
        return JournalEntry(
            kind=OPERATION,
            partner_id=item.partner_id,
            member_id=item.member_id,
            request_id=item.command.request_id,
            occurred_at=item.occurred_at,
            postings=(
                Posting(member_account_id(item.member_id), item.points),
                Posting(partner_issuance_account_id(item.partner_id), -item.points),
            ),
            rate_version_id=item.rate.rate_version_id,
            amount_minor=spend.amount_minor if spend else None,
            currency=spend.currency if spend else None,
            native_points=item.command.native_points,
            partner_reference=item.command.partner_reference,
            lot=NewLot(
                item.partner_id,
                item.points,
                rules.lot_expiry(item.occurred_at, partner.points_validity_months),
            ),
            qualifying_points=item.points,
            qualifying_month_of=item.occurred_at,
        )

    def _reward_referrals(self, items: list[_Item]) -> None:
        """The referral reward of a referred member's first qualifying earn, as `Earn` pays it
        (its referrer is already locked, in order, by `_lock_members`)."""
        for item in sorted(items, key=lambda item: item.index):
            outcome = self.outcomes[item.index]
            if item.member_id in self.referrers and outcome is not None and outcome.result:
                referral_rewards.reward_after_earn(self.uow, outcome.result.transaction, self.now)

    def _settle_duplicates(self, items: list[_Item], duplicates: list[_Item]) -> None:
        """A request id repeated within the batch is judged against its first occurrence, as
        if the two had been sent one after the other."""
        first_by_key = {item.key: item for item in items}
        for duplicate in duplicates:
            first = first_by_key[duplicate.key]
            outcome = self.outcomes[first.index]
            assert outcome is not None
            try:
                answer_of_existing_claim(
                    duplicate.command.request_id,
                    first.request.canonical_fingerprint,
                    duplicate.request.canonical_fingerprint,
                    None,
                )
            except CoalitionError as reused:
                self._fail(duplicate.index, reused)
                continue
            if outcome.result is not None:
                self.outcomes[duplicate.index] = BatchItemOutcome(
                    result=_replayed(outcome.result.transaction)
                )
            else:
                assert outcome.error is not None
                self._fail(duplicate.index, outcome.error)


def _find_transactions(uow: UnitOfWork, transaction_ids: list[int]) -> list[TransactionRecord]:
    if not transaction_ids:
        return []
    statement = journal.select_transactions().where(
        journal_transactions.c.transaction_id.in_(transaction_ids)
    )
    return journal.records_from_rows(uow, uow.connection.execute(statement))


# --- item-by-item path ----------------------------------------------------------------------


def _earn_item_by_item(
    uow: UnitOfWork,
    partner_id: str,
    items: Sequence[EarnCommand | CoalitionError],
    all_or_nothing: bool,
    now: datetime,
    candidates: tuple[Promotion, ...],
) -> list[BatchItemOutcome]:
    _lock_in_order(uow, partner_id, items)
    promotions.lock_budgets(uow, candidates)  # after the members', in one order
    outcomes: list[BatchItemOutcome] = []
    for index, command in enumerate(items):
        if isinstance(command, CoalitionError):
            if all_or_nothing:
                raise _for_item(index, command)
            outcomes.append(BatchItemOutcome(error=command))
            continue
        if all_or_nothing:
            try:
                result = _earn_one(uow, partner_id, command, now)
            except CoalitionError as error:
                raise _for_item(index, error) from error
            outcomes.append(BatchItemOutcome(result=result))
            continue
        savepoint = uow.connection.begin_nested()
        try:
            result = _earn_one(uow, partner_id, command, now)
        except CoalitionError as error:
            savepoint.rollback()
            outcomes.append(_refused(uow, _member_request(uow, partner_id, command, now), error))
        else:
            savepoint.commit()
            outcomes.append(BatchItemOutcome(result=result))
    return outcomes


def _lock_in_order(
    uow: UnitOfWork, partner_id: str, items: Sequence[EarnCommand | CoalitionError]
) -> None:
    """Take every lock the items will need up front, in one order: item by item, two
    batches naming the same members in different orders would otherwise deadlock."""
    member_ids: set[str] = set()
    for command in items:
        if isinstance(command, EarnCommand):
            try:
                member_ids.add(resolve(uow, partner_id, command.member))
            except CoalitionError:
                continue  # the item fails with this error when its turn comes
    referrers = referral_rewards.pending_referrers(uow, member_ids)
    journal.lock_member_balances(uow, member_ids | set(referrers.values()))


def _refused(uow: UnitOfWork, request: KeyedRequest, error: CoalitionError) -> BatchItemOutcome:
    """A refused item's answer becomes final, as a unary earn's does; when the id was
    answered before (or meanwhile), that first answer is the item's."""
    if not is_final(error):
        return BatchItemOutcome(error=error)
    try:
        claim = remember_refusal(uow, request, error)
    except CoalitionError as first_answer:
        return BatchItemOutcome(error=first_answer)
    if claim.replayed_result_id is None:
        return BatchItemOutcome(error=error)
    record = journal.find_transaction(uow, int(claim.replayed_result_id))
    assert record is not None, "an idempotency key points at its transaction"
    return BatchItemOutcome(result=_replayed(record))


def _keyed_request(partner_id: str, command: EarnCommand, now: datetime) -> KeyedRequest:
    return KeyedRequest(partner_id, command.request_id, OPERATION, _fingerprint(command), now)


def _member_request(
    uow: UnitOfWork, partner_id: str, command: EarnCommand, now: datetime
) -> KeyedRequest:
    """The earn's keyed request with the member it names, whose rows keep the claim ('' when
    it names none: the earn refuses it, and the refusal is kept there)."""
    request = _keyed_request(partner_id, command, now)
    try:
        return replace(request, member_id=resolve(uow, partner_id, command.member))
    except CoalitionError:
        return request


def _earn_one(
    uow: UnitOfWork, partner_id: str, command: EarnCommand, now: datetime
) -> LedgerResult:
    """`operations.earn` without its own unit of work (the batch commits once)."""
    claim = claim_request(uow, _member_request(uow, partner_id, command, now))
    if claim.replayed_result_id is not None:
        record = journal.find_transaction(uow, int(claim.replayed_result_id))
        assert record is not None, "an idempotency key points at its transaction"
        return _replayed(record)
    record = post_earn(uow, partner_id, command, now)
    record_claim_result(
        uow, partner_id, command.request_id, str(record.transaction_id), record.member_id
    )
    return LedgerResult(record, abs(record.points_delta), record.balance_points_after, False)

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from coalition.domain import points as rules
from coalition.domain.errors import (
    CoalitionError,
)
from coalition.domain.promotions import Promotion
from coalition.identity import privacy
from coalition.identity.members import resolve
from coalition.identity.privacy import BALANCE
from coalition.ledger import journal, writer
from coalition.ledger.accounts import member_account_id, partner_issuance_account_id
from coalition.ledger.idempotency import (
    KeyedRequest,
    claim_request,
    is_final,
    remember_refusal,
)
from coalition.ledger.idempotency import record_result as record_claim_result
from coalition.ledger.journal import JournalEntry, Posting
from coalition.ledger.writer import NewLot, TransactionRecord
from coalition.operations import promotions
from coalition.operations.points import (
    EarnCommand,
    LedgerResult,
    _check_points_bound,
    _fingerprint,
    _points_earned,
    earn_basis_field,
    post_earn,
)
from coalition.operations.set_based import (
    BatchItemOutcome,
    Item,
    SetBasedGroup,
    for_item,
    replayed,
)
from coalition.partners.catalog import Partner, PartnerTerms
from coalition.programme.config import Programme
from coalition.referrals import rewards as referral_rewards
from coalition.store.unit_of_work import UnitOfWork

__all__ = ["BatchItemOutcome"]

BATCH_EARN_ITEMS_MAX = 1000
OPERATION = "earn"


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


def earn(
    uow: UnitOfWork, programme: Programme, partner_id: str, command: EarnCommand, now: datetime
) -> LedgerResult:
    """One earn: a group of one through the same path as a batch and the hub's group commit
    (operations/group_commit.py), so all three claim, refuse and write alike."""
    (outcome,) = earn_many(uow, programme, [(partner_id, command)], now).outcomes
    if outcome.error is not None:
        raise outcome.error
    assert outcome.result is not None
    return outcome.result


def earn_many(
    uow: UnitOfWork,
    programme: Programme,
    earns: Sequence[tuple[str, EarnCommand]],
    now: datetime,
) -> BatchEarnResult:
    """Independent earns, each (partner, command), in one unit of work, each with its own
    answer: a refusal of one is kept under its request id and never rolls back another.

    Earns of partners the programme adds nothing to go set-based together, whatever their
    partners; earns the programme may add to go item by item, one partner per call
    (`group_keys`). A call whose partners no longer share a path (a promotion started since
    the caller grouped them) raises `PathsDiffer`, before anything is written."""
    return _run(uow, programme, earns, False, now)


class PathsDiffer(Exception):
    """The earns of one call no longer share a path: the caller splits them."""


def group_keys(
    uow: UnitOfWork, programme: Programme, partner_ids: Iterable[str], now: datetime
) -> dict[str, str]:
    """Each partner's group key: every partner the programme adds nothing to shares
    SET_BASED_GROUP; any other is a group of its own (from the promotion catalogue's cache)."""
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


def batch_earn(
    uow: UnitOfWork,
    programme: Programme,
    partner_id: str,
    items: Sequence[EarnCommand | CoalitionError],
    all_or_nothing: bool,
    now: datetime,
) -> BatchEarnResult:
    """Apply `items` (commands, or the error parsing that item found) in one unit of work."""
    return _run(uow, programme, [(partner_id, item) for item in items], all_or_nothing, now)


def _run(
    uow: UnitOfWork,
    programme: Programme,
    items: Sequence[tuple[str, EarnCommand | CoalitionError]],
    all_or_nothing: bool,
    now: datetime,
) -> BatchEarnResult:
    assert 0 < len(items) <= BATCH_EARN_ITEMS_MAX, "the API bounds the batch size"
    partner_ids = sorted({partner_id for partner_id, _ in items})
    with uow:
        candidates = {p: promotions.candidates(uow, programme, p, now) for p in partner_ids}
        explain_from_ledger: set[str] | None = None  # None: every earn's
        linked_pairs: set[tuple[str, str]] = set()  # (partner, member) links read already
        sights: dict[tuple[str, str], privacy.Sight] = {}  # sights read already
        if all(_programme_adds_nothing(programme, c) for c in candidates.values()):
            batch = _SetBasedBatch(uow, programme, all_or_nothing, now)
            outcomes = batch.run(items)
            explain_from_ledger = set(batch.referrers)  # a referral bonus may have been paid
            linked_pairs, sights = batch.linked_pairs, batch.sights
        else:
            if len(partner_ids) > 1:
                raise PathsDiffer()
            (partner_id,) = partner_ids
            commands = [item for _, item in items]
            outcomes = _earn_item_by_item(
                uow, programme, partner_id, commands, all_or_nothing, now, candidates[partner_id]
            )
        outcomes = _explained(uow, outcomes, explain_from_ledger)
        outcomes = _with_balance_sight(
            uow, [partner_id for partner_id, _ in items], outcomes, linked_pairs, sights
        )
        uow.commit()
    return BatchEarnResult(tuple(outcomes))


def _with_balance_sight(
    uow: UnitOfWork,
    partner_ids: Sequence[str],
    outcomes: Sequence[BatchItemOutcome],
    linked_pairs: set[tuple[str, str]],
    sights: Mapping[tuple[str, str], privacy.Sight],
) -> list[BatchItemOutcome]:
    """Each applied outcome, told whether its partner may see the member's balance
    (`linked_pairs`, `sights`: the links and sights read already in this transaction)."""
    pairs = {
        (partner_id, outcome.result.transaction.member_id)
        for partner_id, outcome in zip(partner_ids, outcomes, strict=True)
        if outcome.result is not None
    }
    seen = privacy.sights_of_pairs(uow, pairs, linked_pairs, sights)
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
            result=o.result.explained(
                explained.get(o.result.transaction.transaction_id)
                or promotions.plain_explanation(o.result.transaction)
            )
        )
        for o in outcomes
    ]


def _programme_adds_nothing(programme: Programme, candidates: tuple[Promotion, ...]) -> bool:
    tiers = programme.ladder.tiers
    return not candidates and len(tiers) == 1 and tiers[0].earn_multiplier == 1


# --- set-based path -------------------------------------------------------------------------


class _SetBasedBatch(SetBasedGroup[EarnCommand]):
    """Earns of any partners the programme adds nothing to, in a fixed number of statements
    whatever their number and partners."""

    operation = OPERATION
    usable_members_sql = referral_rewards.USABLE_MEMBERS_AND_PENDING_REFERRERS

    def __init__(self, uow: UnitOfWork, programme: Programme, all_or_nothing: bool, now: datetime):
        super().__init__(uow, all_or_nothing, now)
        self.programme = programme  # its referral defaults and campaigns
        self.referrers: dict[str, str] = {}  # referred member -> referrer, reward unpaid
        self.referrers_read: set[str] = set()  # the members whose referrer is in `referrers`

    def _prepare(
        self, terms: Mapping[str, PartnerTerms], items: list[Item[EarnCommand]]
    ) -> list[Item[EarnCommand]]:
        # In the order a single earn checks them: the time, the member, the rate and points.
        self._check_times(terms, items)
        self._resolve_members(items)
        self._compute(terms, items)
        return items

    def _compute(self, terms: Mapping[str, PartnerTerms], items: list[Item[EarnCommand]]) -> None:
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

    def _note_extras(self, extras: Mapping[str, str | None]) -> None:
        """The referrers of the usable members whose reward is unpaid, read with them (the
        referrers are locked with the members; the reward itself is claimed under the locks,
        referrals/rewards.py)."""
        self.referrers.update((m, r) for m, r in extras.items() if r is not None)
        self.referrers_read = set(extras)

    def _more_members_to_lock(self, member_ids: set[str]) -> set[str]:
        """The referrers the group may reward, locked with its members, in the same order:
        read with the usable members, or now for a member resolved one by one (a merge's
        survivor, say)."""
        unread = member_ids - self.referrers_read
        if unread:
            self.referrers.update(referral_rewards.pending_referrers(self.uow, unread))
        return {self.referrers[m] for m in member_ids if m in self.referrers}

    def _apply(self, terms: Mapping[str, PartnerTerms], items: list[Item[EarnCommand]]) -> None:
        """Every applied item through the ledger's one writer, in one call, then the referral
        rewards the earns earned."""

        def write(
            kept: list[Item[EarnCommand]],
        ) -> list[tuple[Item[EarnCommand], TransactionRecord]]:
            if not kept:
                return []
            entries = [self._entry(terms[item.partner_id].partner, item) for item in kept]
            records = writer.write(self.uow, entries, self.now, results=[i.key for i in kept])
            return list(zip(kept, records, strict=True))

        written = self._refusing_merged(items, write)
        for item, record in written:
            self._answer(item, record)
        self._reward_referrals([item for item, _ in written])

    def _entry(self, partner: Partner, item: Item[EarnCommand]) -> JournalEntry:
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

    def _reward_referrals(self, items: list[Item[EarnCommand]]) -> None:
        """The referral reward of a referred member's first qualifying earn, as `Earn` pays it
        (its referrer is already locked, in order, by `_lock_members`)."""
        for item in sorted(items, key=lambda item: item.index):
            outcome = self.outcomes[item.index]
            if item.member_id in self.referrers and outcome is not None and outcome.result:
                referral_rewards.reward_after_earn(
                    self.uow, self.programme, outcome.result.transaction, self.now
                )


# --- item-by-item path ----------------------------------------------------------------------


def _earn_item_by_item(
    uow: UnitOfWork,
    programme: Programme,
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
                raise for_item(index, command)
            outcomes.append(BatchItemOutcome(error=command))
            continue
        if all_or_nothing:
            try:
                result = _earn_one(uow, programme, partner_id, command, now)
            except CoalitionError as error:
                raise for_item(index, error) from error
            outcomes.append(BatchItemOutcome(result=result))
            continue
        savepoint = uow.connection.begin_nested()
        try:
            result = _earn_one(uow, programme, partner_id, command, now)
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
    return BatchItemOutcome(result=replayed(record))


def _keyed_request(partner_id: str, command: EarnCommand, now: datetime) -> KeyedRequest:
    return KeyedRequest(partner_id, command.request_id, OPERATION, _fingerprint(command), now)


def _member_request(
    uow: UnitOfWork, partner_id: str, command: EarnCommand, now: datetime
) -> KeyedRequest:
    """The earn's keyed request with the member it names, whose rows keep the claim ('' when
    it names none: the earn refuses it, and the refusal is kept there)."""
    request = _keyed_request(partner_id, command, now)
    try:
        return request.with_member(resolve(uow, partner_id, command.member))
    except CoalitionError:
        return request


def _earn_one(
    uow: UnitOfWork, programme: Programme, partner_id: str, command: EarnCommand, now: datetime
) -> LedgerResult:
    """`operations.earn` without its own unit of work (the batch commits once)."""
    claim = claim_request(uow, _member_request(uow, partner_id, command, now))
    if claim.replayed_result_id is not None:
        record = journal.find_transaction(uow, int(claim.replayed_result_id))
        assert record is not None, "an idempotency key points at its transaction"
        return replayed(record)
    record = post_earn(uow, programme, partner_id, command, now)
    record_claim_result(
        uow, partner_id, command.request_id, str(record.transaction_id), record.member_id
    )
    return LedgerResult(record, abs(record.points_delta), record.balance_points_after, False)

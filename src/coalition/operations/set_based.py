"""Set-based groups: many requests of one kind, of any partners and members, in one unit of
work and a fixed number of statements whatever their number.

Earns (operations/batch_earn.py) and burns (operations/batch_burn.py) share this frame. Each
item keeps the contract of its unary call: its own request id, claimed in this transaction
(`idempotency.claim_many`), replayed, refused as REQUEST_ID_REUSED or answered with its first
refusal exactly as the unary call would be, with the same fingerprint; a refusal of one item
is kept under its request id and never rolls back the others. The steps:

1. parse: items, and request ids repeated within the group (judged against their first);
2. prepare (the kind's own): the checks a unary call makes before its claim, in its order
   (the time, the member, the rate and points);
3. claim every request id at once, a failing item's with its refusal, and lock the members
   in the same round trip, in account-id order (concurrent groups never deadlock);
4. settle what was claimed before: replays, reuses, first refusals;
5. apply (the kind's own): the entries through the ledger's one writer, in one call; the
   ledger's first read under the locks refuses members merged while the group waited for
   them (`_refusing_merged`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from coalition.domain.errors import CoalitionError
from coalition.domain.points import RateVersion
from coalition.identity import privacy
from coalition.identity.members import resolve
from coalition.ledger import idempotency, journal, writer
from coalition.ledger.accounts import member_account_id
from coalition.ledger.idempotency import KeyedRequest, answer_of_existing_claim, is_final
from coalition.ledger.journal import TransactionRecord
from coalition.operations.points import (
    BurnCommand,
    EarnCommand,
    LedgerResult,
    _fingerprint,
    _occurred_at,
)
from coalition.partners.catalog import PartnerTerms, partner_terms
from coalition.store import driver
from coalition.store.driver import IN_LIST, Statement
from coalition.store.unit_of_work import UnitOfWork

Command = TypeVar("Command", EarnCommand, BurnCommand)
Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchItemOutcome:
    result: LedgerResult | None = None
    error: CoalitionError | None = None
    # Whether the partner that asked may see the member's balance (identity/privacy.py), read
    # in the same transaction: an answer carries the balance only then.
    balance_visible: bool = False


@dataclass
class Item(Generic[Command]):
    index: int
    partner_id: str
    command: Command
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


# The links of any partners' customer ids, in one statement: the pairs asked for are picked
# out of the rows (a customer id another partner also uses is read and dropped).
LINKED_CUSTOMERS = Statement(
    "SELECT partner_id, partner_customer_id, member_id FROM partner_links"
    f" WHERE partner_customer_id {IN_LIST} %s AND partner_id {IN_LIST} %s"
)
# Those of the members neither merged nor forgotten, and the kind's `extra` of each (none).
USABLE_MEMBERS = (
    "SELECT member_id, CAST(NULL AS TEXT) AS extra FROM members"
    f" WHERE member_id {IN_LIST} %s AND merged_into_member_id IS NULL AND forget_time IS NULL"
)


class SetBasedGroup(Generic[Command]):
    """The frame of a set-based group; a kind supplies `operation`, `_prepare` and `_apply`."""

    operation: ClassVar[str]  # the claims' operation, as the unary call names it
    # The group's first read, `_usable_members`: rows of (member_id, extra) for the members
    # neither merged nor forgotten, without and with the sights (identity/privacy.with_sights).
    usable_members_sql: ClassVar[str] = USABLE_MEMBERS
    usable_members: ClassVar[Statement]
    usable_members_and_sights: ClassVar[Statement]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.usable_members = Statement(cls.usable_members_sql)
        cls.usable_members_and_sights = privacy.with_sights(cls.usable_members_sql)

    def __init__(self, uow: UnitOfWork, all_or_nothing: bool, now: datetime):
        self.uow = uow
        self.all_or_nothing = all_or_nothing
        self.now = now
        self.outcomes: list[BatchItemOutcome | None] = []
        self.balances: dict[str, int] = {}  # by member id, read under the group's locks
        # (partner, member) pairs read linked in this transaction, by the items' customer ids:
        # their sight need not read the link again (identity/privacy.sights_of_pairs).
        self.linked_pairs: set[tuple[str, str]] = set()
        # The sights read with the usable members, by (partner, member) (`_usable_members`).
        self.sights: dict[tuple[str, str], privacy.Sight] = {}

    def run(
        self, commands: Sequence[tuple[str, Command | CoalitionError]]
    ) -> list[BatchItemOutcome]:
        self.outcomes = [None] * len(commands)
        parsed, duplicates = self._parse(commands)
        terms = {p: partner_terms(self.uow, p) for p in sorted({i.partner_id for i in parsed})}
        items = self._prepare(terms, parsed)
        # All-or-nothing remembers nothing: a failing item fails the call before any write.
        claimed = self._claim_and_lock(
            [item for item in items if item.error is None or not self.all_or_nothing]
        )
        self._settle_unclaimed([item for item in items if item.key not in claimed])
        for item in items:
            if item.key in claimed and item.error is not None:
                self._fail(item.index, item.error)  # claimed with its refusal, now final
        applied = [item for item in items if item.key in claimed and item.error is None]
        if applied:
            self._apply(terms, sorted(applied, key=lambda item: item.index))
        self._settle_duplicates(parsed, duplicates)
        assert all(outcome is not None for outcome in self.outcomes)
        return [outcome for outcome in self.outcomes if outcome is not None]

    def _prepare(
        self, terms: Mapping[str, PartnerTerms], items: list[Item[Command]]
    ) -> list[Item[Command]]:
        """Set each item's member, rate and points, or its error; return the items that go on
        to their claims (an item refused before its claim is answered here)."""
        raise NotImplementedError

    def _apply(self, terms: Mapping[str, PartnerTerms], items: list[Item[Command]]) -> None:
        """Write the claimed items (in item order, their members locked) and answer them."""
        raise NotImplementedError

    def _usable_members(self, pairs: set[tuple[str, str]]) -> set[str]:
        """The members of `pairs` (partner, member) neither merged nor forgotten, their extras
        noted (`_note_extras`), and in the same round trip the pairs' sights (not on Citus,
        whose links are distributed by customer id: identity/privacy.sights_of_pairs)."""
        member_ids = sorted({member_id for _, member_id in pairs})
        rows: list[Any]  # (partner id, member id, scope, granted, extra)
        if self.uow.is_citus:
            rows = [
                (None, member_id, None, None, extra)
                for member_id, extra in driver.execute(self.uow, self.usable_members, (member_ids,))
            ]
        else:
            partner_ids = sorted({partner_id for partner_id, _ in pairs})
            parameters = (member_ids, partner_ids, member_ids, member_ids, partner_ids)
            rows = driver.fetch_all(self.uow, self.usable_members_and_sights, parameters)
            sight_rows = [
                (p, m, scope, granted) for p, m, scope, granted, _ in rows if p is not None
            ]
            self.sights = privacy.sights_from_rows(pairs, sight_rows)
        extras = {member_id: extra for p, member_id, _, _, extra in rows if p is None}
        self._note_extras(extras)
        return set(extras)

    def _note_extras(self, extras: Mapping[str, str | None]) -> None:
        """The kind's extra of each usable member (an earn's: its referrer)."""

    def _more_members_to_lock(self, member_ids: set[str]) -> set[str]:
        """Members the kind writes to besides the items' own (an earn's referrers)."""
        return set()

    def _fail(self, index: int, error: CoalitionError) -> None:
        if self.all_or_nothing:
            raise for_item(index, error)
        self.outcomes[index] = BatchItemOutcome(error=error)

    def _answer(self, item: Item[Command], record: TransactionRecord) -> None:
        result = LedgerResult(record, item.points, record.balance_points_after, False)
        self.outcomes[item.index] = BatchItemOutcome(result=result)

    def _parse(
        self, commands: Sequence[tuple[str, Command | CoalitionError]]
    ) -> tuple[list[Item[Command]], list[Item[Command]]]:
        items: list[Item[Command]] = []
        duplicates: list[Item[Command]] = []
        seen: set[tuple[str, str]] = set()
        for index, (partner_id, command) in enumerate(commands):
            if isinstance(command, CoalitionError):
                self._fail(index, command)
                continue
            item = Item(index, partner_id, command, self._keyed_request(partner_id, command))
            if item.key in seen:
                duplicates.append(item)  # judged against its first occurrence
            else:
                seen.add(item.key)
                items.append(item)
        return items, duplicates

    def _keyed_request(self, partner_id: str, command: Command) -> KeyedRequest:
        return KeyedRequest(
            partner_id, command.request_id, self.operation, _fingerprint(command), self.now
        )

    def _check_times(self, terms: Mapping[str, PartnerTerms], items: list[Item[Command]]) -> None:
        for item in items:
            if item.error is not None:
                continue
            try:
                partner = terms[item.partner_id].partner
                item.occurred_at = _occurred_at(item.command.occurred_at, self.now, partner)
            except CoalitionError as error:
                item.error = error

    def _resolve_members(self, items: list[Item[Command]]) -> None:
        """Member ids in a few reads; anything unusual (unknown, merged, forgotten) is resolved
        one by one by `resolve`, so that it fails or redirects exactly as a unary call."""
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
        pairs = {
            (item.partner_id, member_id)
            for item in items
            if (member_id := candidates.get(item.index)) is not None
        }
        usable = self._usable_members(pairs) if pairs else set()
        for item in items:
            if item.error is not None:
                continue
            candidate = candidates[item.index]
            if candidate is not None and candidate in usable:
                item.member_id = candidate
                if item.command.member.partner_customer_id is not None:
                    self.linked_pairs.add((item.partner_id, candidate))
                continue
            try:
                item.member_id = resolve(self.uow, item.partner_id, item.command.member)
            except CoalitionError as error:
                item.error = error

    def _linked_customers(self, items: list[Item[Command]]) -> dict[tuple[str, str], str]:
        """(partner, partner customer id) -> member, for the items that name a customer id:
        one read whatever their partners (on Citus, pruned to the shards of `partner_links`
        that hold those customer ids)."""
        wanted = {
            (item.partner_id, item.command.member.partner_customer_id)
            for item in items
            if item.error is None and item.command.member.partner_customer_id is not None
        }
        if not wanted:
            return {}
        partner_ids = sorted({partner_id for partner_id, _ in wanted})
        customer_ids = sorted({customer_id for _, customer_id in wanted})
        rows = driver.execute(self.uow, LINKED_CUSTOMERS, (customer_ids, partner_ids))
        return {
            (partner_id, customer_id): member_id
            for partner_id, customer_id, member_id in rows
            if (partner_id, customer_id) in wanted
        }

    def _claim_and_lock(self, items: list[Item[Command]]) -> set[tuple[str, str]]:
        """Claim the request ids, a failing item's with its refusal as its final answer
        (idempotency.py; the ids already claimed by a committed request are left alone), then
        lock the member accounts of the items that may apply, and the others the kind writes
        to, in one account-id order (concurrent groups never deadlock; SQLite already
        serialises writers). An item found a replay once its claim is read keeps its lock."""
        if not items:
            return set()
        # Each claim is kept with its member (ledger/idempotency.py), resolved just before.
        for item in items:
            item.request = item.request.with_member(item.member_id or "")
        member_ids = {item.member_id or "" for item in items if item.error is None}
        claimed, locked = idempotency.claim_many(
            self.uow,
            [(item.request, item.error) for item in items],
            locking=member_ids | self._more_members_to_lock(member_ids),
        )
        self.balances = {
            member_id: locked[member_account_id(member_id)] for member_id in member_ids
        }
        return claimed

    def _settle_unclaimed(self, items: list[Item[Command]]) -> None:
        """Items whose request id was applied before are replayed or refused as a reuse, as a
        unary call would (its claim comes first); the rest fail with their own error."""
        if not items:
            return
        claims = idempotency.existing_claims(self.uow, [item.key for item in items])
        # Only this kind's results are its transaction ids (an enrolment's is a member id); a
        # claim of another operation is refused as a reuse below.
        replayed_ids = sorted(
            int(claim.result_id)
            for claim in claims.values()
            if claim.operation == self.operation and claim.result_id is not None
        )
        records = {
            record.transaction_id: record
            for record in journal.find_transactions(self.uow, replayed_ids)
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
            self.outcomes[item.index] = BatchItemOutcome(result=replayed(record))

    def _refusing_merged(
        self, items: list[Item[Command]], attempt: Callable[[list[Item[Command]]], Result]
    ) -> Result:
        """`attempt(items)`, where the ledger refuses members merged while the group waited for
        their locks (writer.MembersMerged, read after the locks and before anything is
        written): those items are refused MEMBER_MERGED and the others attempted again. Once
        the ledger has read them unmerged, they stay so: a merge needs the locks held here."""
        while True:
            try:
                return attempt(items)
            except writer.MembersMerged as merged:
                kept = [i for i in items if not self._refused_as_merged(i, merged.survivors)]
                assert len(kept) < len(items), "the ledger names a member of the group"
                items = kept

    def _refused_as_merged(self, item: Item[Command], survivors: Mapping[str, str]) -> bool:
        survivor_member_id = survivors.get(item.member_id or "")
        if survivor_member_id is None:
            return False
        error = writer.member_merged(item.member_id or "", survivor_member_id)
        # MEMBER_MERGED tells the client to retry (with the survivor): no final answer, so the
        # claim is given up and a retry applies (idempotency.is_final).
        assert not is_final(error), "a race with a merge is retried, never kept"
        idempotency.release_claim(self.uow, item.request)
        self._fail(item.index, error)  # all-or-nothing: the call fails here
        return True

    def _settle_duplicates(
        self, items: Collection[Item[Command]], duplicates: list[Item[Command]]
    ) -> None:
        """A request id repeated within the group is judged against its first occurrence, as
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
                    result=replayed(outcome.result.transaction)
                )
            else:
                assert outcome.error is not None
                self._fail(duplicate.index, outcome.error)


def for_item(index: int, error: CoalitionError) -> CoalitionError:
    """The item's own error, naming the item (all-or-nothing fails the call with it)."""
    error.metadata["item_index"] = str(index)
    error.message = f"item {index}: {error.message}"
    return error


def replayed(record: TransactionRecord) -> LedgerResult:
    """The response as first sent: when it was new, nothing of it was reversed yet."""
    record = replace(record, points_reversed=0)
    return LedgerResult(record, abs(record.points_delta), record.balance_points_after, True)

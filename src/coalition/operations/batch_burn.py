"""Burns, unary ones gathered by the hub's group commit (operations/group_commit.py), in one
unit of work and a fixed number of statements whatever their number (operations/set_based.py).

Each burn keeps the contract of a unary Burn, checked in its order:

1. a partner's request (`require_sight`, the API's) must see the member's balance, which the
   answer tells: MEMBER_NOT_FOUND, MEMBER_NOT_LINKED, SCOPE_NOT_GRANTED are answered before
   any claim, as the privacy check at the door answers other RPCs (api/privacy.py);
2. the request id is claimed; the time, the rate and the points are checked, a refusal kept
   under the id;
3. under the group's member locks, each member's due changes are posted first (holds past
   their TTL released, lots past expiry expired: ledger/availability.py), then the burns of a
   member are checked against its balance in item order: one that the balance cannot cover
   is refused INSUFFICIENT_POINTS, kept under its id, and the others still apply;
4. the lots are consumed earliest expiry first, in one read for the group (ledger/lots.py),
   and every burn is written through the ledger's one writer, in one call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from coalition.domain.errors import CoalitionError
from coalition.identity import privacy
from coalition.identity.privacy import BALANCE
from coalition.ledger import availability, idempotency, lots, writer
from coalition.ledger.accounts import member_account_id, partner_redemption_account_id
from coalition.ledger.journal import JournalEntry, Posting
from coalition.operations.points import (
    BurnCommand,
    LedgerResult,
    _points_burned,
    require_available,
)
from coalition.operations.set_based import BatchItemOutcome, Item, SetBasedGroup
from coalition.partners.catalog import PartnerTerms
from coalition.store.unit_of_work import UnitOfWork

OPERATION = "burn"
Items = list[Item[BurnCommand]]


def burn(uow: UnitOfWork, partner_id: str, command: BurnCommand, now: datetime) -> LedgerResult:
    """One burn: a group of one through the same path as the hub's group commit."""
    (outcome,) = burn_many(uow, [(partner_id, command)], now)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.result is not None
    return outcome.result


def burn_many(
    uow: UnitOfWork,
    burns: Sequence[tuple[str, BurnCommand]],
    now: datetime,
    require_sight: bool = False,
) -> tuple[BatchItemOutcome, ...]:
    """Independent burns, each (partner, command), in one unit of work, each with its own
    answer: a refusal of one is kept under its request id and never rolls back another.
    `require_sight`: refuse a burn whose partner does not see the member's balance."""
    assert burns, "something to burn"
    with uow:
        outcomes = _Burns(uow, False, now, require_sight).run(burns)
        uow.commit()
    # Under `require_sight` every burn answered with a result, a replay too, passed the sight.
    return tuple(
        replace(outcome, balance_visible=require_sight) if outcome.result is not None else outcome
        for outcome in outcomes
    )


class _Burns(SetBasedGroup[BurnCommand]):
    operation = OPERATION

    def __init__(self, uow: UnitOfWork, all_or_nothing: bool, now: datetime, require_sight: bool):
        super().__init__(uow, all_or_nothing, now)
        self.require_sight = require_sight

    def _prepare(
        self, terms: Mapping[str, PartnerTerms], items: list[Item[BurnCommand]]
    ) -> list[Item[BurnCommand]]:
        self._resolve_members(items)
        if self.require_sight:
            items = self._visible(items)
        self._check_times(terms, items)
        for item in items:
            if item.error is not None:
                continue
            assert item.occurred_at is not None
            partner = terms[item.partner_id]
            command = item.command
            try:
                item.rate = partner.rate_at(item.occurred_at)
                item.points = _points_burned(
                    partner.partner, item.rate, command.points, command.value, "value"
                )
            except CoalitionError as error:
                item.error = error
        return items

    def _visible(self, items: list[Item[BurnCommand]]) -> list[Item[BurnCommand]]:
        """The items whose caller sees the member's balance; the others are answered now,
        before their claims (identity/privacy.py)."""
        pairs = {(i.partner_id, i.member_id) for i in items if i.member_id is not None}
        sights = privacy.sights_of_pairs(self.uow, pairs, self.linked_pairs, self.sights)
        visible: list[Item[BurnCommand]] = []
        for item in items:
            refusal = item.error
            if item.member_id is not None:
                sight = sights[(item.partner_id, item.member_id)]
                refusal = privacy.refusal_of(item.partner_id, sight, BALANCE)
            if refusal is None:
                visible.append(item)
            else:
                self._fail(item.index, refusal)
        return visible

    def _apply(self, terms: Mapping[str, PartnerTerms], items: list[Item[BurnCommand]]) -> None:

        def spendable_of(kept: Items) -> tuple[Items, availability.Debitable]:
            balances = {i.member_id or "": self.balances[i.member_id or ""] for i in kept}
            return kept, availability.lock_members_for_debit(self.uow, balances, self.now)

        # Before any burn is judged: a member merged meanwhile shows a balance of 0.
        items, debitable = self._refusing_merged(items, spendable_of)
        spendable = debitable.spendable_points
        covered: Items = []
        for item in items:
            assert item.member_id is not None
            try:
                require_available(item.member_id, spendable[item.member_id], item.points)
            except CoalitionError as refusal:
                idempotency.record_refusal(self.uow, item.request, refusal)
                self._fail(item.index, refusal)
                continue
            spendable[item.member_id] -= item.points
            covered.append(item)
        if not covered:
            return
        debits = [(i.member_id or "", i.points) for i in covered]
        moves = lots.consumptions(self.uow, debits, debitable.lot_pages)
        entries = [_entry(item, lot_moves) for item, lot_moves in zip(covered, moves, strict=True)]
        records = writer.write(self.uow, entries, self.now, results=[i.key for i in covered])
        for item, record in zip(covered, records, strict=True):
            self._answer(item, record)


def _entry(item: Item[BurnCommand], lot_moves: tuple[writer.LotMove, ...]) -> JournalEntry:
    """A burn: member -p, redemption +p, the lots it consumes."""
    assert item.member_id is not None and item.rate is not None
    assert item.occurred_at is not None and item.points > 0
    value = item.command.value
    return JournalEntry(
        kind=OPERATION,
        partner_id=item.partner_id,
        member_id=item.member_id,
        request_id=item.command.request_id,
        occurred_at=item.occurred_at,
        postings=(
            Posting(member_account_id(item.member_id), -item.points),
            Posting(partner_redemption_account_id(item.partner_id), item.points),
        ),
        rate_version_id=item.rate.rate_version_id,
        amount_minor=value.amount_minor if value else None,
        currency=value.currency if value else None,
        partner_reference=item.command.partner_reference,
        lot_moves=lot_moves,
    )

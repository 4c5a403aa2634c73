"""Ledger service functions: earn, burn, reverse, quote, balances and transaction lists.

Each mutation runs in one unit of work: claim the request id, lock the member, apply the
domain rules, post one balanced journal transaction, record the result, commit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import datetime

from sqlalchemy import func, select

from coalition.domain import points as rules
from coalition.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from coalition.domain.occurrence import occurred_at_of
from coalition.domain.points import Money, RateVersion
from coalition.identity.members import MemberReference, resolve, surviving_member_id
from coalition.ledger import availability, holds, journal, lots
from coalition.ledger.accounts import (
    member_account_id,
    partner_issuance_account_id,
    partner_redemption_account_id,
)
from coalition.ledger.idempotency import KeyedRequest, apply_once
from coalition.ledger.journal import JournalEntry, Posting, TransactionRecord
from coalition.ledger.writer import LotMove, NewLot
from coalition.operations import promotions
from coalition.partners.catalog import Partner, partner_terms
from coalition.programme.config import Programme
from coalition.referrals import rewards as referral_rewards
from coalition.store import citus
from coalition.store.schema import journal_transactions, postings
from coalition.store.unit_of_work import UnitOfWork

# Clocks of partner systems drift; a purchase "in the future" beyond this is a mistake.


@dataclass(frozen=True)
class EarnCommand:
    request_id: str
    member: MemberReference
    spend: Money | None = None
    native_points: int | None = None
    occurred_at: datetime | None = None
    partner_reference: str | None = None

    def __post_init__(self) -> None:
        assert (self.spend is None) != (self.native_points is None), "spend or native points"


@dataclass(frozen=True)
class BurnCommand:
    request_id: str
    member: MemberReference
    points: int | None = None
    value: Money | None = None
    occurred_at: datetime | None = None
    partner_reference: str | None = None

    def __post_init__(self) -> None:
        assert (self.points is None) != (self.value is None), "points or value"


@dataclass(frozen=True)
class ReverseCommand:
    request_id: str
    transaction_id: int
    points: int  # 0: everything not reversed yet
    reason: str | None = None


@dataclass(frozen=True)
class QuoteCommand:
    earn_spend: Money | None = None
    earn_native_points: int | None = None
    burn_value: Money | None = None
    burn_points: int | None = None
    occurred_at: datetime | None = None
    member: MemberReference | None = None

    @property
    def is_burn(self) -> bool:
        return self.burn_value is not None or self.burn_points is not None


@dataclass(frozen=True)
class LedgerResult:
    transaction: TransactionRecord
    points: int
    balance_points: int
    replayed: bool
    # An earn's: what it credited (operations/promotions.py); None for other operations.
    explanation: promotions.EarnExplanation | None = None

    def explained(self, explanation: promotions.EarnExplanation) -> LedgerResult:
        """This result with its explanation (not `dataclasses.replace`, three times dearer:
        every earn of every group comes here)."""
        return LedgerResult(
            self.transaction, self.points, self.balance_points, self.replayed, explanation
        )


@dataclass(frozen=True)
class QuoteResult:
    points: int
    value: Money | None
    rate_version_id: str
    balance_points: int | None
    sufficient_balance: bool | None


@dataclass(frozen=True)
class Balance:
    member_id: str
    balance_points: int  # spendable: what a burn can take
    as_of: datetime
    held_points: int = 0  # reserved by open burn holds; owned = balance + held


def post_earn(
    uow: UnitOfWork, programme: Programme, partner_id: str, command: EarnCommand, now: datetime
) -> TransactionRecord:
    """Everything an earn writes but its request id's result, under `programme` (tiers,
    promotions, referral defaults): the caller records that and commits (`earn` at once, a
    batch once for all its items)."""
    terms = partner_terms(uow, partner_id)
    partner = terms.partner
    occurred_at = _occurred_at(command.occurred_at, now, partner)
    member_id = resolve(uow, partner_id, command.member)
    rate = terms.rate_at(occurred_at)
    points_earned = _points_earned(partner, rate, command.spend, command.native_points)
    journal.lock_member_balance(uow, member_id)
    award = promotions.award_for_earn(
        uow,
        programme,
        partner_id,
        member_id,
        occurred_at,
        points_earned,
        command.spend,
        now,
        issuance_price_minor_per_point=rate.issuance_price_minor_per_point,
    )
    _check_points_bound(award.points_total, earn_basis_field(command))
    entry = JournalEntry(
        kind="earn",
        partner_id=partner_id,
        member_id=member_id,
        request_id=command.request_id,
        occurred_at=occurred_at,
        postings=award.postings(),
        rate_version_id=rate.rate_version_id,
        amount_minor=command.spend.amount_minor if command.spend else None,
        currency=command.spend.currency if command.spend else None,
        native_points=command.native_points,
        partner_reference=command.partner_reference,
        lot=NewLot(
            partner_id,
            award.points_total,
            rules.lot_expiry(occurred_at, partner.points_validity_months),
        ),
        bonuses=award.ledger_bonuses(),
        qualifying_points=award.points_total,
        qualifying_month_of=occurred_at,
    )
    record = journal.post(uow, entry, now)
    promotions.after_earn(uow, programme, award, record, now)
    referral_rewards.reward_after_earn(uow, programme, record, now)  # one primary-key read if none
    return record


def reverse(
    uow: UnitOfWork, partner_id: str, command: ReverseCommand, now: datetime
) -> LedgerResult:
    """The reversal under its request id (idempotency.apply_once), or its replay; the claim
    is kept with the member it posts to, found before the claim and used by the reversal."""
    request = KeyedRequest(partner_id, command.request_id, "reverse", _fingerprint(command), now)
    found: list[str] = []  # the member the reversal posts to, once read

    def member_of() -> str:
        if uow.is_citus:
            # The parent is looked up on every shard, and giving a promotion's grants back
            # then writes its (reference) row: Citus allows that over one connection per node.
            citus.one_connection_per_node(uow.connection)
        found.append(_reversal_member(uow, partner_id, command))
        return found[0]

    return apply_once(
        uow,
        request,
        lambda: _reverse(uow, partner_id, command, now, found[0] if found else None),
        lambda result_id: _replay(uow, result_id),
        member_of=member_of,
    )


def _reversal_member(uow: UnitOfWork, partner_id: str, command: ReverseCommand) -> str:
    """The member a reversal posts to: the parent's, or its survivor. A merge since the
    parent moved its member's points and lots there (the lock refuses a merge that commits
    while the reversal waits)."""
    parent = _own_transaction(uow, partner_id, command.transaction_id)
    return surviving_member_id(uow, parent.member_id)


def _reverse(
    uow: UnitOfWork,
    partner_id: str,
    command: ReverseCommand,
    now: datetime,
    member_id: str | None,
) -> LedgerResult:
    """`member_id`: the member the reversal posts to, when read before the claim."""
    member_id = member_id or _reversal_member(uow, partner_id, command)
    journal.lock_member_balance(uow, member_id)
    # Read again under the member lock: every reversal of this parent takes that lock.
    parent = _own_transaction(uow, partner_id, command.transaction_id)
    points_reversed = _points_to_reverse(parent, command.points)
    sign = -1 if parent.kind == "earn" else 1  # the member's side of the reversal
    counter_account = (
        partner_issuance_account_id(partner_id)
        if parent.kind == "earn"
        else partner_redemption_account_id(partner_id)
    )
    counter_postings: tuple[Posting, ...] = (Posting(counter_account, -sign * points_reversed),)
    qualifying_points = 0
    lot_moves: tuple[LotMove, ...] = ()
    if parent.kind == "burn":
        lot_moves = lots.restitution(uow, member_id, parent.transaction_id, points_reversed)
    if parent.kind == "earn":
        lots.take_from_earned_lot(uow, member_id, parent.transaction_id, points_reversed)
        # Reversed earn points stop counting towards tiers, in the month the earn happened,
        # for the member holding them now (after a merge: the survivor).
        qualifying_points = -points_reversed
        counter_postings = promotions.earn_reversal_postings(uow, parent, points_reversed)
        promotions.give_back_grants(uow, parent, points_reversed)
    entry = JournalEntry(
        kind="reverse",
        partner_id=partner_id,
        member_id=member_id,
        request_id=command.request_id,
        occurred_at=now,
        postings=(
            Posting(member_account_id(member_id), sign * points_reversed),
            *counter_postings,
        ),
        rate_version_id=parent.rate_version_id,
        parent_transaction_id=parent.transaction_id,
        reason=command.reason,
        qualifying_points=qualifying_points,
        qualifying_month_of=parent.occurred_at,
        lot_moves=lot_moves,
    )
    record = journal.post(uow, entry, now, result_of=(partner_id, command.request_id))
    return _commit(uow, record)


def quote(uow: UnitOfWork, partner_id: str, command: QuoteCommand, now: datetime) -> QuoteResult:
    with uow:
        terms = partner_terms(uow, partner_id)
        partner = terms.partner
        # A quote writes nothing, so it may preview a rate version scheduled for the future;
        # the past is bounded as for the operation it previews.
        quoted_at = command.occurred_at or now
        if quoted_at <= now:
            quoted_at = _occurred_at(command.occurred_at, now, partner)
        rate = terms.rate_at(quoted_at)
        if command.is_burn:
            points = _points_burned(
                partner, rate, command.burn_points, command.burn_value, "burn_value"
            )
        else:
            points = _points_earned(
                partner,
                rate,
                command.earn_spend,
                command.earn_native_points,
                allow_zero=True,
                spend_field="earn_spend",
                native_points_field="earn_native_points",
            )
        value = Money(rules.value_minor_of_points(points, rate), partner.currency)
        balance_points = sufficient = None
        if command.member is not None:
            member_id = resolve(uow, partner_id, command.member)
            balance_points = availability.available_points(uow, member_id, now).spendable_points
            sufficient = balance_points >= points if command.is_burn else None
        return QuoteResult(points, value, rate.rate_version_id, balance_points, sufficient)


def get_balance(
    uow: UnitOfWork,
    partner_id: str,
    member: MemberReference,
    as_of: datetime | None,
    now: datetime,
) -> Balance:
    """The balance now (from the cache) or as of a past instant (from the postings)."""
    with uow:
        member_id = resolve(uow, partner_id, member)
        if as_of is None:
            # Due hold releases and lot expiries count as posted (ledger/availability.py).
            available = availability.available_points(uow, member_id, now)
            return Balance(member_id, available.spendable_points, now, available.held_points)
        if as_of > now:
            raise InvalidArgument(
                [FieldViolation("as_of", "must not be in the future")], reason="AS_OF_IN_FUTURE"
            )
        balance_points = uow.connection.execute(
            select(func.coalesce(func.sum(postings.c.points), 0)).where(
                postings.c.account_id == member_account_id(member_id),
                postings.c.create_time <= as_of,
            )
        ).scalar_one()
        held_points = holds.held_points_as_of(uow, member_id, as_of)
        return Balance(member_id, int(balance_points), as_of, held_points)


def list_transactions(
    uow: UnitOfWork,
    partner_id: str,
    member: MemberReference | None,
    before_transaction_id: int | None,
    limit: int,
) -> list[TransactionRecord]:
    """The caller's transactions, newest first, strictly before the cursor when one is given."""
    assert 0 < limit <= 1000
    with uow:
        statement = journal.select_transactions().where(
            journal_transactions.c.partner_id == partner_id
        )
        if member is not None:
            member_id = resolve(uow, partner_id, member)
            statement = statement.where(journal_transactions.c.member_id == member_id)
        if before_transaction_id is not None:
            statement = statement.where(
                journal_transactions.c.transaction_id < before_transaction_id
            )
        statement = statement.order_by(journal_transactions.c.transaction_id.desc()).limit(limit)
        return journal.records_from_rows(uow, uow.connection.execute(statement))


def _commit(uow: UnitOfWork, record: TransactionRecord) -> LedgerResult:
    """Commit the request (the writer recorded its result on its claim) and answer it."""
    uow.commit()
    return LedgerResult(record, abs(record.points_delta), record.balance_points_after, False)


def _replay(uow: UnitOfWork, result_id: str) -> LedgerResult:
    """The response as first sent: when it was new, nothing of it was reversed yet."""
    record = journal.find_transaction(uow, int(result_id))
    assert record is not None, f"idempotency key points at missing transaction {result_id}"
    record = replace(record, points_reversed=0)
    return LedgerResult(record, abs(record.points_delta), record.balance_points_after, True)


def _fingerprint(
    command: EarnCommand | BurnCommand | ReverseCommand,
) -> dict[str, str | int | None]:
    """The request's meaningful fields, flattened, for field-by-field comparison on a retry:
    a nested value (member, spend, value) as `field.subfield` for its set subfields. Read
    field by field, never copied (`dataclasses.asdict` cost a batch item more than its SQL)."""
    names = _field_names(type(command))
    assert names is not None, "commands are dataclasses"
    flattened: dict[str, str | int | None] = {}
    for name in names:
        if name == "request_id":
            continue
        value = getattr(command, name)
        parts = _field_names(type(value))
        if parts is not None:
            for part in parts:
                part_value = getattr(value, part)
                assert _field_names(type(part_value)) is None, "requests nest one level deep"
                if part_value is not None:
                    flattened[f"{name}.{part}"] = part_value
        elif isinstance(value, datetime):
            flattened[name] = value.isoformat()
        else:
            flattened[name] = value
    return flattened


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    """A dataclass's field names, in order, looked up once per class (None: no dataclass)."""
    if cls not in _FIELD_NAMES:
        _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
    return _FIELD_NAMES[cls]


def _occurred_at(occurred_at: datetime | None, now: datetime, partner: Partner) -> datetime:
    return occurred_at_of(occurred_at, now, partner.partner_id, partner.backdating_days_max)


def _check_currency(partner: Partner, money: Money, field: str) -> None:
    if money.currency != partner.currency:
        raise InvalidArgument(
            [
                FieldViolation(
                    f"{field}.currency",
                    f"must be {partner.currency}, the currency of partner {partner.partner_id}",
                )
            ],
            reason="CURRENCY_MISMATCH",
        )


def _points_earned(
    partner: Partner,
    rate: RateVersion,
    spend: Money | None,
    native_points: int | None,
    allow_zero: bool = False,
    spend_field: str = "spend",
    native_points_field: str = "native_points",
) -> int:
    """Points for a spend or for native points; `*_field` name them in errors."""
    if spend is not None:
        _check_currency(partner, spend, spend_field)
        points = rules.points_for_spend(spend.amount_minor, spend.currency, rate)
    else:
        assert native_points is not None
        if rate.native_points_rate is None:
            raise FailedPrecondition(
                "NATIVE_CONVERSION_NOT_OFFERED",
                f"partner {partner.partner_id} offers no conversion of native points under "
                f"rate version {rate.rate_version_id}",
                {"partner_id": partner.partner_id, "rate_version_id": rate.rate_version_id},
            )
        points = rules.points_for_native_points(native_points, rate.native_points_rate)
    if points == 0 and not allow_zero:
        raise FailedPrecondition(
            "NO_POINTS_EARNED",
            f"the purchase earns no points at rate version {rate.rate_version_id}",
            {"rate_version_id": rate.rate_version_id},
        )
    _check_points_bound(
        points, f"{spend_field}.amount_minor" if spend is not None else native_points_field
    )
    return points


def _points_burned(
    partner: Partner, rate: RateVersion, points: int | None, value: Money | None, field: str
) -> int:
    if points is not None:
        return points
    assert value is not None
    _check_currency(partner, value, field)
    points_needed = rules.points_for_value(value.amount_minor, rate)
    _check_points_bound(points_needed, f"{field}.amount_minor")
    return points_needed


def require_available(member_id: str, balance_points: int, points_needed: int) -> None:
    """Refuse a debit the member's available balance cannot cover (checked under its lock)."""
    if balance_points < points_needed:
        raise FailedPrecondition(
            "INSUFFICIENT_POINTS",
            f"member {member_id} has {balance_points} points available, {points_needed} needed",
            {
                "member_id": member_id,
                "balance_points": balance_points,
                "points_requested": points_needed,
            },
        )


def earn_basis_field(command: EarnCommand) -> str:
    """The request field an earn's points come from, named in errors about them."""
    return "spend.amount_minor" if command.spend is not None else "native_points"


def _check_points_bound(points: int, field: str) -> None:
    if points > rules.POINTS_PER_OPERATION_MAX:
        raise InvalidArgument(
            [FieldViolation(field, f"moves more than {rules.POINTS_PER_OPERATION_MAX} points")],
            reason="POINTS_LIMIT_EXCEEDED",
        )


def _own_transaction(uow: UnitOfWork, partner_id: str, transaction_id: int) -> TransactionRecord:
    record = journal.find_transaction(uow, transaction_id)
    # Another partner's transaction is reported as missing: its existence is not ours to know.
    if record is None or record.partner_id != partner_id:
        raise NotFound(
            "TRANSACTION_NOT_FOUND",
            f"transaction {transaction_id} does not exist",
            {"transaction_id": transaction_id},
        )
    return record


def _points_to_reverse(parent: TransactionRecord, points_requested: int) -> int:
    if parent.kind not in ("earn", "burn"):
        raise FailedPrecondition(
            "TRANSACTION_NOT_REVERSIBLE",
            f"transaction {parent.transaction_id} is a {parent.kind}; "
            "only earns and burns can be reversed",
            {"transaction_id": parent.transaction_id, "kind": parent.kind},
        )
    points_left = abs(parent.points_delta) - parent.points_reversed
    assert points_left >= 0, f"transaction {parent.transaction_id} reversed beyond its points"
    if points_left == 0:
        raise FailedPrecondition(
            "ALREADY_FULLY_REVERSED",
            f"transaction {parent.transaction_id} is already fully reversed",
            {"transaction_id": parent.transaction_id},
        )
    if points_requested > points_left:
        raise FailedPrecondition(
            "REVERSAL_EXCEEDS_REMAINING",
            f"transaction {parent.transaction_id} has {points_left} points left to reverse, "
            f"{points_requested} requested",
            {
                "transaction_id": parent.transaction_id,
                "points_left": points_left,
                "points_requested": points_requested,
            },
        )
    return points_requested or points_left

"""Mapping service results to protobuf messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from coalition.domain.points import Money
from coalition.ledger.journal import TransactionRecord
from coalition.v1 import common_pb2

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRANSACTION_KINDS = {
    "earn": common_pb2.TRANSACTION_KIND_EARN,
    "burn": common_pb2.TRANSACTION_KIND_BURN,
    "reverse": common_pb2.TRANSACTION_KIND_REVERSE,
    "expire": common_pb2.TRANSACTION_KIND_EXPIRE,
    "hold": common_pb2.TRANSACTION_KIND_HOLD,
    "capture": common_pb2.TRANSACTION_KIND_CAPTURE,
    "void": common_pb2.TRANSACTION_KIND_VOID,
}


def timestamp(moment: datetime) -> Timestamp:
    """An aware datetime as a Timestamp (what `Timestamp.FromDatetime` gives, computed without
    its calendar conversion: every answer carries two)."""
    assert moment.tzinfo is not None, "naive datetimes never leave the hub"
    since = moment - _UNIX_EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000)


def money(value: Money | None) -> common_pb2.Money | None:
    if value is None:
        return None
    return common_pb2.Money(amount_minor=value.amount_minor, currency=value.currency)


def transaction(record: TransactionRecord, balance_visible: bool) -> common_pb2.Transaction:
    """The transaction, with the member's balance only when the caller may see it."""
    amount = (
        common_pb2.Money(amount_minor=record.amount_minor, currency=record.currency)
        if record.amount_minor is not None and record.currency is not None
        else None
    )
    return common_pb2.Transaction(
        transaction_id=str(record.transaction_id),
        kind=TRANSACTION_KINDS[record.kind],
        partner_id=record.partner_id,
        member_id=record.member_id,
        points_delta=record.points_delta,
        occurred_at=timestamp(record.occurred_at),
        create_time=timestamp(record.create_time),
        request_id=record.request_id,
        rate_version_id=record.rate_version_id or "",
        parent_transaction_id=str(record.parent_transaction_id or ""),
        amount=amount,
        native_points=record.native_points or 0,
        partner_reference=record.partner_reference or "",
        points_reversed=record.points_reversed,
        reason=record.reason or "",
        balance_points_after=record.balance_points_after if balance_visible else 0,
        balance_withheld=not balance_visible,
    )

"""EventService: a server stream of the caller partner's own events, from a resume cursor.

A stream holds one server thread, so a hub process serves at most SUBSCRIPTIONS_MAX streams
at once, at most SUBSCRIPTIONS_PER_PARTNER_MAX of one partner (the rest of its threads stay
free for requests, and one partner's streams never refuse everyone else's), and ends each
stream after STREAM_LIFETIME_SECONDS with status OK; clients resume from their last cursor.
Between reads the stream sleeps at most POLL_INTERVAL_SECONDS, and it stops within that time
when the client cancels or the hub shuts down. Each read is a short read-only unit of work:
no database connection is held while waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc

from coalition.api import responses
from coalition.api.admission import Admission
from coalition.api.interceptors import caller_partner_id, recheck_key
from coalition.domain.errors import CoalitionError, ErrorCode, FieldViolation, InvalidArgument
from coalition.events.stream import Cursor, Event, parse_cursor, read_events
from coalition.identity import privacy
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import event_service_pb2 as messages
from coalition.v1 import event_service_pb2_grpc

POLL_INTERVAL_SECONDS = 0.25
STREAM_LIFETIME_SECONDS = 600.0
SUBSCRIPTIONS_MAX = 6
# One partner's streams never take every slot of a process from the others.
SUBSCRIPTIONS_PER_PARTNER_MAX = 2
EVENTS_PER_READ = 100

EVENT_KINDS = {
    "earned": messages.EVENT_KIND_EARNED,
    "burned": messages.EVENT_KIND_BURNED,
    "reversed": messages.EVENT_KIND_REVERSED,
    "expired": messages.EVENT_KIND_EXPIRED,
    "held": messages.EVENT_KIND_HELD,
    "captured": messages.EVENT_KIND_CAPTURED,
    "voided": messages.EVENT_KIND_VOIDED,
    "merged": messages.EVENT_KIND_MERGED,
    "tier_changed": messages.EVENT_KIND_TIER_CHANGED,
}


class TooManySubscriptions(CoalitionError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class EventServicer(event_service_pb2_grpc.EventServiceServicer):
    def __init__(
        self,
        unit_of_work: Callable[..., UnitOfWork],
        stopping: threading.Event,
        poll_interval_seconds: float = POLL_INTERVAL_SECONDS,
        lifetime_seconds: float = STREAM_LIFETIME_SECONDS,
    ) -> None:
        assert 0 < poll_interval_seconds <= 5 and 0 < lifetime_seconds <= 3600
        self._unit_of_work = unit_of_work
        self._stopping = stopping
        self._poll_interval_seconds = poll_interval_seconds
        self._lifetime_seconds = lifetime_seconds
        self._slots = Admission(SUBSCRIPTIONS_MAX, SUBSCRIPTIONS_PER_PARTNER_MAX, _no_slot)

    def Subscribe(
        self, request: messages.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[messages.SubscribeResponse]:
        cursor = parse_cursor(request.cursor)
        if cursor is None:
            raise InvalidArgument(
                [FieldViolation("cursor", "not a cursor from an event of this stream")]
            )
        partner_id = caller_partner_id()
        release = self._slots.enter(partner_id)
        context.add_callback(release)  # also when the client goes away mid-wait
        try:
            yield from self._stream(partner_id, cursor, context)
        finally:
            release()

    def _stream(
        self, partner_id: str, cursor: Cursor, context: grpc.ServicerContext
    ) -> Iterator[messages.SubscribeResponse]:
        deadline = time.monotonic() + self._lifetime_seconds
        while context.is_active() and not self._stopping.is_set():
            if time.monotonic() >= deadline:
                return
            recheck_key()  # a revoked key's stream ends as soon as its unary calls are refused
            with self._unit_of_work(read_only=True) as uow:
                batch = read_events(uow, partner_id, cursor, EVENTS_PER_READ)
                seen = privacy.sights(uow, partner_id, {event.member_id for event in batch})
            for event in batch:
                cursor = event.cursor  # also past an event withheld from this partner
                sight = seen[event.member_id]
                if event.kind != "tier_changed" or sight.sees(privacy.TIER):
                    shown = event_message(event, sight.sees(privacy.BALANCE))
                    yield messages.SubscribeResponse(event=shown)
            if len(batch) < EVENTS_PER_READ:
                self._stopping.wait(self._poll_interval_seconds)


def _no_slot(partner_id: str | None) -> TooManySubscriptions:
    if partner_id is None:
        return TooManySubscriptions(
            "TOO_MANY_SUBSCRIPTIONS",
            f"this hub process already serves {SUBSCRIPTIONS_MAX} event streams; retry",
            {"subscriptions_max": SUBSCRIPTIONS_MAX},
        )
    return TooManySubscriptions(
        "TOO_MANY_SUBSCRIPTIONS",
        f"partner {partner_id} already has {SUBSCRIPTIONS_PER_PARTNER_MAX} event streams on "
        "this hub process; retry on another or when one ends",
        {"partner_id": partner_id, "subscriptions_per_partner_max": SUBSCRIPTIONS_PER_PARTNER_MAX},
    )


def event_message(event: Event, balance_visible: bool) -> messages.Event:
    """The event as the partner may see it now (docs/identity.md, "Privacy between
    partners"): the balance after it only while the member shares it with the partner."""
    return messages.Event(
        cursor=event.cursor.text(),
        kind=EVENT_KINDS[event.kind],
        member_id=event.member_id,
        create_time=responses.timestamp(event.create_time),
        transaction_id=str(event.transaction_id or ""),
        points_delta=event.points_delta or 0,
        balance_points_after=(event.balance_points_after or 0) if balance_visible else 0,
        balance_withheld=not balance_visible and event.balance_points_after is not None,
        tier_id_before=event.tier_id_before or "",
        tier_id_after=event.tier_id_after or "",
    )

"""Admission: how many of a hub process's worker threads one kind of work may hold.

Every call holds one thread until it answers, and a call waiting on a database lock holds its
thread for as long as it waits. Without a bound, calls piling up on one locked member (or the
streams of one partner) take every thread, and unrelated calls, health checks included, queue
behind them. So each call is admitted under two counts: the calls in flight on this process,
and the calls in flight on the one contended thing it names (a member, a hold, a transaction;
or, for event streams, the partner). A call over either bound is refused at once, before it
takes a database connection, and the threads above the bounds stay free for the rest
(health checks and reflection are never counted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from coalition.domain.errors import CoalitionError

# The fields of a request naming what it contends for, most specific first.
_CONTENDED_FIELDS = (
    "member",
    "member_id",
    "survivor_member_id",
    "duplicate_member_id",
    "hold_id",
    "transaction_id",
)


class Admission:
    """Counts of calls in flight, in total and per key, each under its bound."""

    def __init__(
        self,
        calls_max: int,
        calls_per_key_max: int,
        refusal: Callable[[str | None], CoalitionError],
    ) -> None:
        assert 0 < calls_per_key_max <= calls_max
        self._calls_max = calls_max
        self._calls_per_key_max = calls_per_key_max
        self._refusal = refusal  # the error for a call over the total (None) or a key's bound
        self._lock = threading.Lock()
        self._calls = 0
        self._calls_by_key: dict[str, int] = {}

    @contextmanager
    def admitted(self, key: str | None) -> Iterator[None]:
        self._enter(key)
        try:
            yield
        finally:
            self._leave(key)

    def enter(self, key: str | None) -> Callable[[], None]:
        """Admit a call; returns its release, which may be called more than once (a stream
        is released by its end or by the client going away, whichever comes first)."""
        self._enter(key)
        released = threading.Event()
        lock = threading.Lock()

        def release() -> None:
            with lock:
                if not released.is_set():
                    released.set()
                    self._leave(key)

        return release

    def _enter(self, key: str | None) -> None:
        with self._lock:
            if self._calls >= self._calls_max:
                raise self._refusal(None)
            if key is not None:
                calls_of_key = self._calls_by_key.get(key, 0)
                if calls_of_key >= self._calls_per_key_max:
                    raise self._refusal(key)
                self._calls_by_key[key] = calls_of_key + 1
            self._calls += 1

    def _leave(self, key: str | None) -> None:
        with self._lock:
            self._calls -= 1
            if key is None:
                return
            remaining = self._calls_by_key[key] - 1
            if remaining:
                self._calls_by_key[key] = remaining
            else:
                del self._calls_by_key[key]  # the map holds only keys in flight: it is bounded


def contended_key(request: Any, partner_id: str | None) -> str | None:
    """What a request would wait on if it were locked: the member it names (by coalition id,
    whoever calls, or by the caller's customer id), else the hold or transaction it acts on."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:  # a client stream: its messages are read later
        return None
    for field in _CONTENDED_FIELDS:
        if field not in descriptor.fields_by_name:
            continue
        if field == "member":
            if not request.HasField("member"):
                continue
            reference = request.member
            if reference.member_id:
                return f"member_id:{reference.member_id}"
            if reference.partner_customer_id:
                return f"customer:{partner_id}:{reference.partner_customer_id}"
            continue
        value = getattr(request, field)
        if value:
            kind = "member_id" if field.endswith("member_id") else field
            return f"{kind}:{value}"
    return None

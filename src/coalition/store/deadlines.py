"""The deadline of the call a unit of work serves, so that its waits end with the call.

A client that gave up on a call has stopped listening: a transaction still queued on a row lock
for it holds a worker thread and a database connection for nobody. On PostgreSQL each unit of
work therefore sets `lock_timeout` and `statement_timeout` to the time the call has left, and a
wait beyond it ends in an error that rolls the transaction back (nothing is applied). The API
sets the deadline around each call; work without one (the CLI, jobs) waits as before.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

# PostgreSQL reads 0 as "no timeout": a call already past its deadline still gets a bound.
TIMEOUT_MILLISECONDS_MIN = 1
# SQLSTATEs of a wait that outlived its timeout: lock_not_available, query_canceled.
TIMEOUT_SQLSTATES = frozenset({"55P03", "57014"})

_deadline_monotonic: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "call_deadline", default=None
)


@contextmanager
def call_deadline(seconds_remaining: float | None) -> Iterator[None]:
    """Units of work begun inside serve a call with `seconds_remaining` left (None: none)."""
    deadline = None if seconds_remaining is None else time.monotonic() + seconds_remaining
    token = _deadline_monotonic.set(deadline)
    try:
        yield
    finally:
        _deadline_monotonic.reset(token)


def milliseconds_remaining() -> int | None:
    """What is left of the current call's deadline, or None outside a call with one."""
    deadline = _deadline_monotonic.get()
    if deadline is None:
        return None
    left_milliseconds = math.floor((deadline - time.monotonic()) * 1000)
    return max(TIMEOUT_MILLISECONDS_MIN, left_milliseconds)

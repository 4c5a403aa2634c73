"""The call being served, per thread of the gRPC server: read by metrics and log lines.

The interceptor of `metrics.py` opens a `CallContext` around every RPC; the authenticating
interceptor (api/interceptors.py) names the caller's partner in it once it knows the key.
Nothing here ever holds a credential or personal data: method, partner id, the partner's
request_id (an idempotency key of its own choosing) and a call id the hub draws.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

NO_PARTNER = "-"


@dataclass
class CallContext:
    call_id: str
    method: str
    request_id: str = ""
    partner_id: str = NO_PARTNER


_current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "coalition_call", default=None
)


def current_call() -> CallContext | None:
    return _current_call.get()


def enter_call(call: CallContext) -> contextvars.Token[CallContext | None]:
    return _current_call.set(call)


def leave_call(token: contextvars.Token[CallContext | None]) -> None:
    _current_call.reset(token)


def note_partner(partner_id: str | None) -> None:
    """Called by authentication: label this call's metrics and logs with the partner."""
    call = _current_call.get()
    if call is not None and partner_id:
        call.partner_id = partner_id

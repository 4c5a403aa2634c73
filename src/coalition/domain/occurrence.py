"""When an operation happened per the partner (`occurred_at`), and how far it may differ
from when the hub records it.

A transaction is priced at the rate version in force at its `occurred_at` and its lot
expires a validity period after it, so an unbounded `occurred_at` would let a partner pick
its rate version (backdate to before a price rise) or issue lots that are already expired.
Both directions are bounded: at most OCCURRED_AT_FUTURE_SKEW_MAX ahead (clock skew), and at
most the partner's `backdating_days_max` behind (its manifest, default
BACKDATING_DAYS_MAX_DEFAULT: a POS that syncs late, not a choice of prices). See
docs/programme.md, "Backdating".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from coalition.domain.errors import FieldViolation, InvalidArgument

OCCURRED_AT_FUTURE_SKEW_MAX = timedelta(minutes=5)
BACKDATING_DAYS_MAX_DEFAULT = 7
BACKDATING_DAYS_MAX_LIMIT = 3_660  # about ten years: what a manifest may declare at most


def occurred_at_not_ahead(occurred_at: datetime | None, now: datetime) -> datetime:
    """`occurred_at`, or `now` when unset; refused when further ahead than clocks drift
    (a consent decision, which has no price and no lot, needs no lower bound)."""
    if occurred_at is None:
        return now
    if occurred_at > now + OCCURRED_AT_FUTURE_SKEW_MAX:
        minutes = OCCURRED_AT_FUTURE_SKEW_MAX // timedelta(minutes=1)
        raise InvalidArgument(
            [FieldViolation("occurred_at", f"is more than {minutes} minutes in the future")],
            reason="OCCURRED_AT_IN_FUTURE",
        )
    return occurred_at


def occurred_at_of(
    occurred_at: datetime | None, now: datetime, partner_id: str, backdating_days_max: int
) -> datetime:
    """`occurred_at`, or `now` when unset; refused when outside the partner's bounds."""
    if occurred_at is None:
        return now
    occurred_at_not_ahead(occurred_at, now)
    earliest = now - timedelta(days=backdating_days_max)
    if occurred_at < earliest:
        raise InvalidArgument(
            [
                FieldViolation(
                    "occurred_at",
                    f"is more than {backdating_days_max} days in the past: partner "
                    f"{partner_id} may backdate to {earliest.isoformat()} at the earliest",
                )
            ],
            reason="OCCURRED_AT_TOO_FAR_IN_PAST",
            metadata={
                "partner_id": partner_id,
                "backdating_days_max": backdating_days_max,
                "occurred_at_min": earliest.isoformat(),
            },
        )
    return occurred_at

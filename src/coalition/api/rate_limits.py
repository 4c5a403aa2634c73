"""Per-partner rate limits: one token bucket per principal in each hub process.

The limit is per process on purpose: hub processes share nothing but the database, and a
counter row there would serialise every request of a partner (see DESIGN.md, hot accounts).
With N processes behind a balancer a partner gets at most N times the configured rate.
Memory is bounded: at most `buckets_max` buckets; beyond that the least recently used
bucket is dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from coalition.domain.errors import CoalitionError, ErrorCode
from coalition.settings import RateLimit

BUCKETS_MAX = 10_000


__all__ = ["BUCKETS_MAX", "RateLimit", "RateLimiter", "ResourceExhausted"]


class ResourceExhausted(CoalitionError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class RateLimiter:
    """Token buckets keyed by principal; `take` raises ResourceExhausted when one is empty."""

    def __init__(
        self,
        limit: RateLimit,
        buckets_max: int = BUCKETS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._buckets_max = buckets_max
        self._clock = clock
        # principal id -> (tokens, last refill instant); most recently used last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, principal_id: str) -> None:
        """Spend one token of the principal's bucket, or raise RATE_LIMITED when it is empty."""
        tokens = self._spend(principal_id, spend_tokens=1.0)
        if tokens < 1.0:
            raise self._refusal(tokens)

    def require_token(self, key: str) -> None:
        """Raise RATE_LIMITED when the bucket is empty, spending nothing."""
        tokens = self._spend(key, spend_tokens=0.0)
        if tokens < 1.0:
            raise self._refusal(tokens)

    def spend(self, key: str) -> None:
        """Spend one token when there is one, never raising."""
        self._spend(key, spend_tokens=1.0)

    def _spend(self, key: str, spend_tokens: float) -> float:
        """The bucket's tokens before spending; spends only when there is a whole token."""
        now = self._clock()
        with self._lock:
            tokens, refilled_at = self._buckets.pop(key, (self._limit.burst_requests, now))
            tokens = min(
                float(self._limit.burst_requests),
                tokens + (now - refilled_at) * self._limit.requests_per_second,
            )
            self._buckets[key] = (tokens - spend_tokens if tokens >= 1.0 else tokens, now)
            self._evict()
        return tokens

    def _refusal(self, tokens: float) -> ResourceExhausted:
        retry_after_seconds = (1.0 - tokens) / self._limit.requests_per_second
        return ResourceExhausted(
            "RATE_LIMITED",
            f"more than {self._limit.requests_per_second:g} requests per second; "
            f"retry after {retry_after_seconds:.3f} s",
            {
                "requests_per_second": f"{self._limit.requests_per_second:g}",
                "retry_after_seconds": f"{retry_after_seconds:.3f}",
            },
        )

    def bucket_count(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _evict(self) -> None:
        # The least recently used bucket has been idle longest: usually it is full anyway.
        while len(self._buckets) > self._buckets_max:
            self._buckets.popitem(last=False)

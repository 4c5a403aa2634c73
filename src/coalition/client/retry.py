"""Bounded retries with exponential backoff and full jitter, for UNAVAILABLE and
DEADLINE_EXCEEDED only (the codes after which the same request may be sent again)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts_max: int = 4  # the first attempt included; 1 means no retry
    backoff_initial_seconds: float = 0.1
    backoff_max_seconds: float = 2.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        assert 1 <= self.attempts_max <= 10, "retries are bounded"
        assert 0 < self.backoff_initial_seconds <= self.backoff_max_seconds

    def backoff_seconds(self, attempt: int, generator: random.Random) -> float:
        """The pause after failed attempt number `attempt` (from 1): full jitter, so that
        clients refused together do not come back together."""
        ceiling = self.backoff_initial_seconds * self.backoff_multiplier ** (attempt - 1)
        return generator.uniform(0, min(ceiling, self.backoff_max_seconds))


NO_RETRY = RetryPolicy(attempts_max=1)

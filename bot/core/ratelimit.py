"""Per-learner command rate limits: a token bucket each (memory only; a restart refills)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.core.errors import RateLimited

PRUNE_AT = 10_000  # buckets kept before full ones are forgotten


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``burst`` commands at once, then ``per_minute`` sustained; ``per_minute`` ≤ 0: off."""
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> None:
        """Spend one token of ``key``'s bucket; raises :class:`RateLimited` when it is empty."""
        if self.rate <= 0:
            return
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= PRUNE_AT:
                self._prune(now)
            b = self._buckets[key] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens < 1.0:
            raise RateLimited((1.0 - b.tokens) / self.rate)
        b.tokens -= 1.0

    def _prune(self, now: float) -> None:
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]

"""Events a second per key: a token bucket per key name, in this process, the clock an argument."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: a key's bucket holds at least this many events, so one full Segment batch always fits
MIN_BURST = 500


@dataclass
class Bucket:
    rate: float
    capacity: float
    tokens: float
    at: float

    def take(self, n: int, now: float) -> float:
        """Take `n` events; 0 when allowed, else the seconds to wait before trying again."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (min(n, self.capacity) - self.tokens) / self.rate


@dataclass
class RateLimits:
    """One bucket per key name: `rate` events a second, a burst of a second's worth."""

    default_rate: float
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def take(self, key: str, n: int, now: float, rate: float | None = None) -> int:
        """0 when the key may send `n` events now, else the whole seconds to wait (≥ 1)."""
        bucket = self.buckets.get(key)
        if bucket is None:
            r = rate or self.default_rate
            capacity = max(r, MIN_BURST)
            bucket = self.buckets[key] = Bucket(r, capacity, capacity, now)
        wait = bucket.take(n, now)
        return 0 if wait == 0 else max(1, math.ceil(wait))

"""Events a second per key: a token bucket per key name, shared by every API process through
Redis (one small hash per key, changed by one script), the arithmetic pure and mirrored here.

A request takes as many tokens as it carries events (a batch of 100 takes 100). A request
larger than the whole bucket can never pass and is refused as such (saying the limit), not
let through because the bucket happened to be full. When Redis cannot be reached the API
limits on its own, per process (logged), rather than refusing ingestion Redis is not needed
for; `/readyz` says Redis is unavailable meanwhile.

    limits = RateLimits(default_rate=1000, redis=client)
    verdict = await limits.take("web-shop", 100, rate=10)    # Verdict(wait_s=0, ...)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import redis
from redis.asyncio import Redis as AsyncRedis

from streams import keyspace

log = logging.getLogger(__name__)

#: a key's bucket holds at least this many events, so one full Segment batch always fits
MIN_BURST = 500


def capacity_of(rate: float) -> float:
    """A bucket holds a second's worth of events, and at least `MIN_BURST`."""
    return max(rate, MIN_BURST)


@dataclass(frozen=True)
class Verdict:
    """What a request of `n` events may do: pass (`wait_s` 0), wait `wait_s` seconds, or
    never pass as it is (`too_large`: more events than the bucket holds)."""

    wait_s: int
    rate: float
    capacity: float
    too_large: bool = False

    @property
    def allowed(self) -> bool:
        return self.wait_s == 0 and not self.too_large


def refill(tokens: float, at: float, now: float, rate: float, capacity: float) -> float:
    return min(capacity, tokens + max(0.0, now - at) * rate)


def take(tokens: float, n: int, rate: float, capacity: float) -> tuple[float, float]:
    """(tokens left, seconds to wait): the wait is 0 when `n` were taken, -1 when `n` is
    larger than the bucket (no wait will do)."""
    if n > capacity:
        return tokens, -1.0
    if n <= tokens:
        return tokens - n, 0.0
    return tokens, (n - tokens) / rate


def verdict(wait: float, rate: float, capacity: float) -> Verdict:
    if wait < 0:
        return Verdict(max(1, math.ceil(capacity / rate)), rate, capacity, too_large=True)
    return Verdict(0 if wait == 0 else max(1, math.ceil(wait)), rate, capacity)


@dataclass
class Bucket:
    rate: float
    capacity: float
    tokens: float
    at: float

    def take(self, n: int, now: float) -> float:
        """As `take` above, on this process's own bucket."""
        self.tokens = refill(self.tokens, self.at, now, self.rate, self.capacity)
        self.at = max(self.at, now)
        self.tokens, wait = take(self.tokens, n, self.rate, self.capacity)
        return wait


#: the same arithmetic in one script: refill, take or refuse, remember; the clock is the
#: caller's (ms), never older than what the bucket saw last
TAKE = """
local rate, cap, n, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1]) or cap
local at = tonumber(held[2]) or now
if now < at then now = at end
tokens = math.min(cap, tokens + (now - at) / 1000 * rate)
local wait = 0
if n > cap then wait = -1
elseif n <= tokens then tokens = tokens - n
else wait = (n - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(wait)
"""


@dataclass
class RateLimits:
    """One bucket per key name: in Redis when a client is given, else in this process."""

    default_rate: float
    redis: AsyncRedis | None = None
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def take_here(self, key: str, n: int, now: float, rate: float | None = None) -> Verdict:
        """This process's own bucket (no Redis, or Redis unavailable)."""
        r = rate or self.default_rate
        bucket = self.buckets.get(key)
        if bucket is None or bucket.rate != r:
            bucket = self.buckets[key] = Bucket(r, capacity_of(r), capacity_of(r), now)
        return verdict(bucket.take(n, now), r, bucket.capacity)

    async def take(self, key: str, n: int, rate: float | None = None) -> Verdict:
        r = rate or self.default_rate
        if self.redis is None:
            return self.take_here(key, n, time.monotonic(), r)
        capacity = capacity_of(r)
        # the bucket is forgotten once it would be full again anyway
        ttl_ms = int(math.ceil(capacity / r * 1000)) + 1000
        try:
            wait = await self.redis.eval(
                TAKE, 1, keyspace.api_rate(key), r, capacity, n, int(time.time() * 1000), ttl_ms
            )
        except (redis.RedisError, OSError) as exc:
            log.warning("rate limit: Redis unavailable, limiting in this process: %r", exc)
            return self.take_here(key, n, time.monotonic(), r)
        return verdict(float(wait), r, capacity)

"""Which failures are a service being away (wait, then redo the same work), not the data's fault.

A batch that raises because Redis or the broker is unreachable would raise for every event in
it: splitting it to find a poison event would dead-letter good events for nothing. So the
worker asks `outage_of(exc)` first; for an outage it waits (`Backoff`), says what it waits
for, and redoes the same work. Redoing is harmless because every unit is recognised by its
source offsets (streams/redis_store.py). Anything else is the data's or the code's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis
from aiokafka import errors as kafka_errors

from streams.redis_store import UnitConflict

log = logging.getLogger(__name__)

#: Redis refused or could not answer, whatever was asked: down, loading its AOF, a replica
#: after a failover (READONLY, MOVED), out of memory, a cluster without a master for a slot.
REDIS_AWAY: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # also BusyLoadingError
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,  # also MovedError: a failover moved the slot; ask again
)


def outage_of(exc: BaseException) -> str | None:
    """The service `exc` says is away ('Redis', 'Kafka'), or None when it is no outage."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # Faust wraps Kafka errors
        seen.add(id(current))
        if isinstance(current, REDIS_AWAY):
            return "Redis"
        if isinstance(current, kafka_errors.KafkaError) and (
            current.retriable or isinstance(current, kafka_errors.KafkaTimeoutError)
        ):
            return "Kafka"
        current = current.__cause__
    return None


@dataclass
class Backoff:
    """Waits that double from `first` up to `cap` seconds; `reset()` after a success."""

    first: float = 0.1
    cap: float = 5.0
    _next: float = 0.0

    def next(self) -> float:
        self._next = min(self.cap, self._next * 2) if self._next else self.first
        return self._next

    def reset(self) -> None:
        self._next = 0.0


async def until_committed(unit: Callable[[], Awaitable[None]], what: str = "the batch") -> None:
    """Run `unit` (a Redis unit) until it commits. A conflict redoes it on fresh data; an
    outage redoes it after a wait that grows; anything else is the work's own and propagates."""
    conflicts = 0
    backoff = Backoff()
    while True:
        try:
            await unit()
            return
        except UnitConflict:
            conflicts += 1
            log.warning("%s conflicted with another writer; redoing (%d)", what, conflicts)
            await asyncio.sleep(min(0.05 * conflicts, 2.0))
        except Exception as exc:
            service = outage_of(exc)
            if service is None:
                raise
            wait = backoff.next()
            log.warning(
                "waiting for %s (%s: %s); redoing %s in %.1fs",
                service,
                type(exc).__name__,
                exc,
                what,
                wait,
            )
            await asyncio.sleep(wait)

"""Where a partition's reading stands: what the broker holds, where Redis says reading
resumed, and the event-time clock that holds events until every source of the partition has
reached them (agents/profile/event_time.py).

The keeper is given a `BrokerView` (the worker builds it from its consumer) or none: without
one (the tests that drive the keeper with their own clock, the backtest) events are applied
in the order given and the clock is the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from agents.profile.event_time import EventClock
from streams import keyspace
from streams.app import INPUT_TOPICS
from streams.outages import REDIS_AWAY, Backoff
from streams.redis_store import Unit
from streams.settings import Settings

if TYPE_CHECKING:
    from agents.profile.incoming import Incoming
    from streams.redis_store import RedisStore

log = logging.getLogger(__name__)

#: (topic, partition)s -> their offsets, as the broker answers
Offsets = Callable[[list[tuple[str, int]]], Awaitable[dict[tuple[str, int], int]]]


@dataclass(frozen=True)
class BrokerView:
    """What the keeper may ask of the broker (the worker's consumer)."""

    #: (topic, partition) -> the broker's end offset as the consumer last saw it (None when
    #: unknown: not assigned here, or not fetched from yet)
    highwater: Callable[[str, int], int | None]
    #: asks the broker for the end offsets of (topic, partition)s. A partition the consumer
    #: has not fetched from yet has no known end, and the event-time clock must hold
    #: everything until it has one: a rarely used topic (points, tags) would otherwise hold a
    #: whole backlog until the busy topics are drained
    end_offsets: Offsets | None = None
    #: asks the broker for the first offsets still held of (topic, partition)s, to tell
    #: events retention deleted from units Redis lost (`Positions.contiguous`)
    start_offsets: Offsets | None = None


class WatermarkBehind(Exception):  # noqa: N818 - a state of Redis, not an error of the data
    """Redis's watermark of a source is behind what this worker read past: Redis lost units it
    had acknowledged (a failover to a replica they had not reached, an append-only file that
    lost its tail). Applying on would skip the events in between, so the worker stops; started
    again, it reads each partition from Redis's watermark + 1 (streams/resume.py)."""


@dataclass
class Positions:
    """The partitions' event-time clocks, the broker's ends and Redis's watermarks."""

    settings: Settings
    store: RedisStore
    broker: BrokerView | None = None
    _event_clock: EventClock | None = None
    _ends: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def event_clock(self) -> EventClock | None:
        """The partitions' event-time clocks and held events (None without a broker)."""
        if self._event_clock is None and self.broker is not None:
            topics = tuple(self.settings.topic(name) for name in INPUT_TOPICS)
            self._event_clock = EventClock(topics, self._end_of)
        return self._event_clock

    def _end_of(self, topic: str, partition: int) -> int | None:
        """The consumer's end offset; until it has fetched there, the broker's, if asked."""
        end = self.broker.highwater(topic, partition) if self.broker is not None else None
        return end if end is not None else self._ends.get((topic, partition))

    async def know(self, partitions: Iterable[int]) -> None:
        """Where reading resumed and where the broker ends, for these partitions."""
        partitions = list(partitions)
        await self.know_positions(partitions)
        await self.know_ends(partitions)

    async def know_ends(self, partitions: Iterable[int]) -> None:
        """Ask the broker once for the ends the consumer does not know yet."""
        clock = self.event_clock
        asks = self.broker.end_offsets if self.broker is not None else None
        if clock is None or asks is None:
            return
        unknown = [
            (t, p)
            for p in partitions
            for t in clock.topics
            if (t, p) not in self._ends and self._end_of(t, p) is None
        ]
        if unknown:
            try:
                self._ends.update(await asks(unknown))
            except Exception as exc:  # noqa: BLE001 - the consumer's own fetch will tell later
                log.info("end offsets of %d partitions not known yet: %s", len(unknown), exc)

    async def know_positions(self, partitions: Iterable[int]) -> None:
        """Where reading resumed for the sources of these partitions not read from yet:
        Redis's watermark + 1 (the worker seeks there on assignment). Waits an outage out:
        a batch cannot be placed without them."""
        clock = self.event_clock
        if clock is None:
            return
        missing = [
            (topic, p) for p in partitions for topic in clock.topics if not clock.known(topic, p)
        ]
        if not missing:
            return
        store = self.store
        for p in sorted({p for _, p in missing}):  # one slot each
            mine = [(t, q) for t, q in missing if q == p]
            names = [keyspace.offset(store.cluster_id, t, q) for t, q in mine]
            names.append(keyspace.event_clock(store.cluster_id, p))
            backoff = Backoff()
            while True:
                try:
                    values = await (await store.for_partition(p)).mget(names)
                    break
                except REDIS_AWAY as exc:
                    store.partition_clients.forget()
                    wait = backoff.next()
                    log.warning(
                        "waiting for Redis to read watermarks (%s); again in %.1fs", exc, wait
                    )
                    await asyncio.sleep(wait)
            for (topic, q), raw in zip(mine, values[:-1], strict=True):
                clock.start_at(topic, q, int(raw) + 1 if raw is not None else 0)
            mark = values[-1]
            if mark is not None:
                clock.resume(
                    p, datetime.fromisoformat(mark if isinstance(mark, str) else mark.decode())
                )

    def rebalanced(self) -> None:
        """Partitions moved: the consumer re-reads from the committed offsets, so whatever
        was held is read again, and each partition's clock starts over."""
        if self._event_clock is not None:
            self._event_clock.reset()
        self._ends.clear()

    def clock_for(self, partition: int, wall: datetime) -> tuple[datetime | None, bool]:
        """(the time a partition's wakes may act on, live). Live, the wall clock; while a
        backlog is read, its event-time watermark (None: not known yet, no one wakes)."""
        clock = self.event_clock
        return (wall, True) if clock is None else clock.clock(partition, wall)

    async def contiguous(self, unit: Unit, fresh: Sequence[Incoming]) -> None:
        """WatermarkBehind if the first fresh event of a source does not follow Redis's
        watermark: what the consumer accounts for (`source.first`, which includes offsets the
        broker skipped) must start at watermark + 1, unless retention deleted the offsets in
        between (the partition now starts past the watermark)."""
        asks = self.broker.start_offsets if self.broker is not None else None
        if asks is None:
            return  # driven without a consumer (tests, the backtest): offsets as given
        first: dict[tuple[str, int], int] = {}
        for item in fresh:
            source = item.source
            if not hasattr(source, "first"):
                continue
            key = (item.topic, item.partition)
            first[key] = min(first.get(key, source.first), source.first)
        # no watermark at all: Redis may have lost a source's first units too
        gaps = {
            key: (unit.offsets.get(key, -1), start)
            for key, start in first.items()
            if start > unit.offsets.get(key, -1) + 1
        }
        if not gaps:
            return
        held = await asks(list(gaps))
        for (topic, partition), (watermark, start) in gaps.items():
            if held.get((topic, partition), 0) <= watermark + 1:
                raise WatermarkBehind(
                    f"{topic}[{partition}]: Redis's watermark is {watermark} but this worker "
                    f"read on from {start}: Redis lost acknowledged units (a failover to a "
                    "replica they had not reached?). Stopping rather than skip events; "
                    "started again, the worker reads from the watermark"
                )


def keep_clock(unit: Unit, cluster: str, partition: int, items: Sequence[Incoming]) -> None:
    """The partition's clock moves with its watermarks, so a restart resumes both."""
    marks = [i.mark for i in items if i.mark is not None]
    if marks:
        unit.put(keyspace.event_clock(cluster, partition), max(marks).isoformat().encode())

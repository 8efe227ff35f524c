"""The event-time clock of each partition, and the events held back until it reaches them.

A partition's events arrive on several topics (orders, cart, favorites, browse, campaigns),
each read at its own pace. Live, they all keep up and the wall clock rules. On a backlog —
a start, a worker catching up after downtime, a shop connecting topics that hold weeks of
traffic — one topic can be read days ahead of another. Applying events as they are read
would then let an order be seen before the cart it followed, and a timer declare the cart
abandoned at wall-clock time although the order that cancels it is still unread.

So, as Kafka Streams does with `max.task.idle.ms`, the partition's clock is the event-time
watermark over its input topic-partitions: the minimum, over those that still have unread
messages, of the latest event time read there (a topic-partition whose end offset is not
known yet counts as unread). An event is applied only once the clock has reached it, in
offset order per topic-partition (the Redis watermark of a source only moves over a
prefix); the rest is held, unacknowledged, so a crash re-reads it. A topic-partition read to
its end stops holding the clock back, so an idle topic never freezes it. When every input
topic-partition is read to its end the partition is *live*: its clock is the wall clock.

No I/O: the worker feeds it what it read and the broker's end offsets; tests drive it alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class Read(Protocol):
    """What the clock needs of one consumed message (agents/profile/keeper.py `Incoming`)."""

    topic: str
    partition: int
    offset: int

    @property
    def at(self) -> datetime | None: ...


#: (topic, partition) -> the broker's end offset as the consumer last saw it, None if unknown
EndOffsets = Callable[[str, int], int | None]


@dataclass
class _Source:
    """One input topic-partition as this worker has read it since it was assigned."""

    #: the next offset to read (every offset below was read: applied, held or skipped)
    position: int = 0
    #: latest event time read here (never past the wall clock)
    latest: datetime | None = None
    held: deque[Read] = field(default_factory=deque)


@dataclass
class EventClock:
    """Per-partition event-time clocks over the input topics, and the held events."""

    topics: tuple[str, ...]
    end_offsets: EndOffsets
    _sources: dict[tuple[str, int], _Source] = field(default_factory=dict)
    _clock: dict[int, datetime] = field(default_factory=dict)

    def reset(self) -> None:
        """After a rebalance the consumer re-reads from the committed offsets: forget all."""
        self._sources.clear()
        self._clock.clear()

    def start_at(self, topic: str, partition: int, position: int) -> None:
        """Where reading resumes (Redis's watermark + 1), for a source nothing was read from."""
        source = self._source(topic, partition)
        source.position = max(source.position, position)

    def known(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._sources

    def read(self, items: Iterable[Read], wall: datetime) -> None:
        """Messages as consumed: each is held until the clock reaches it."""
        for item in items:
            source = self._source(item.topic, item.partition)
            source.position = max(source.position, item.offset + 1)
            at = item.at
            if at is not None:
                at = min(at, wall)  # a future-dated event must not run the clock ahead
                if source.latest is None or at > source.latest:
                    source.latest = at
            source.held.append(item)

    def clock(self, partition: int, wall: datetime) -> tuple[datetime | None, bool]:
        """(the partition's clock, live). Live: the wall clock. Behind: the watermark, or
        None while a behind source has given no event time yet (nothing may happen then)."""
        behind: list[datetime | None] = []
        for topic in self.topics:
            source = self._sources.get((topic, partition))
            end = self.end_offsets(topic, partition)
            position = source.position if source is not None else 0
            if end is None or position < end:
                behind.append(source.latest if source is not None else None)
        if not behind:
            return wall, True
        previous = self._clock.get(partition)
        if any(t is None for t in behind):
            return previous, False
        mark = min(t for t in behind if t is not None)
        if previous is not None and previous > mark:
            mark = previous  # the clock never goes back
        self._clock[partition] = mark
        return mark, False

    def release(self, partition: int, wall: datetime) -> list[Read]:
        """The held events of a partition the clock has reached, in offset order per source."""
        now, live = self.clock(partition, wall)
        out: list[Read] = []
        for topic in self.topics:
            source = self._sources.get((topic, partition))
            if source is None:
                continue
            held = source.held
            while held:
                at = held[0].at
                # a future-dated event is decided at the wall clock whenever it comes, so it
                # does not wait (and does not hold its topic back) until the backlog is read
                if not live and at is not None and at <= wall and (now is None or at > now):
                    break
                out.append(held.popleft())
        return out

    def partitions(self) -> set[int]:
        """Partitions with held events."""
        return {p for (_, p), s in self._sources.items() if s.held}

    def held(self) -> int:
        return sum(len(s.held) for s in self._sources.values())

    def _source(self, topic: str, partition: int) -> _Source:
        key = (topic, partition)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = _Source()
        return source

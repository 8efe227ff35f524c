"""The order in which a partition's events are decided, and the events held until their turn.

A partition's events arrive on several topics (orders, cart, favorites, browse, campaigns),
each read at its own pace. Live, they all keep up. On a backlog — a start, a worker catching
up after downtime or a lost Redis write, a shop connecting topics that hold weeks of
traffic — one topic can be read days ahead of another; and a storefront sends some events
late within one topic (a phone that was offline, a retry, an import). Deciding events as
they are read would make the decisions depend on how the batches fell.

So the order of decision is defined by the records alone (docs/operations.md, "Decision
order"), the way a merge sort merges sorted runs:

1. Within one input topic-partition, offset order — whatever the event times say.
2. Across the partition's input topics, a merge: of the next undecided record of each
   topic-partition, the one with the earliest event time goes first (ties: the order of
   `topics`; a record that is not a valid event has no time and goes first).
3. A record is decided only once the next record of every other input topic-partition is
   read, or that topic-partition is read to its end (an end offset not known yet counts as
   unread). The rest is held, unacknowledged, so a crash re-reads it.
4. Each decided record gets the partition's *clock* as its `mark`: the latest event time
   decided so far (never past the wall clock, so a future-dated event does not run it
   ahead). A customer's timers that fall due before the mark are stepped before the record
   (agents/customer_step.py), and the keeper's sweep steps timers up to it. So a record
   older than the clock (late in its topic) is decided at its position, after what was
   already decided, and changes none of it.

What was decided before a restart is not read again: the clock is kept in Redis with the
watermarks (`resume`), so the decisions after a restart are those of a run that never
stopped. Once every input topic-partition is read to its end the partition is *live*: its
sweep clock is the wall clock (the rule above then decides records as they arrive).

No I/O: the worker feeds it what it read and the broker's end offsets; tests drive it alone.
`decision_order` is the same rule over records already at hand (the backtest).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar


class Read(Protocol):
    """What the clock needs of one consumed message (agents/profile/keeper.py `Incoming`)."""

    topic: str
    partition: int
    offset: int
    #: set when it is released: the partition's clock as it is decided
    mark: datetime | None

    @property
    def at(self) -> datetime | None: ...


#: (topic, partition) -> the broker's end offset as the consumer last saw it, None if unknown
EndOffsets = Callable[[str, int], int | None]

#: the sort key of a record without an event time: before any that has one
_NO_TIME = datetime.min.replace(tzinfo=UTC)


def merge_key(at: datetime | None, rank: int, offset: int) -> tuple[bool, datetime, int, int]:
    """Which of the next records of the topics is decided first (rule 2)."""
    return (at is not None, at or _NO_TIME, rank, offset)


def marked(mark: datetime | None, at: datetime | None, wall: datetime | None) -> datetime | None:
    """The clock after a record with event time `at` (rule 4)."""
    if at is None:
        return mark
    if wall is not None:
        at = min(at, wall)
    return at if mark is None or at > mark else mark


R = TypeVar("R")


def decision_order(
    runs: Sequence[Iterable[R]],
    at: Callable[[R], datetime | None],
    mark: datetime | None = None,
    wall: datetime | None = None,
) -> Iterator[tuple[R, datetime | None]]:
    """Every record of one partition's topic-partitions (`runs`, one per topic in the order
    of `topics`, each in offset order, all read to their end) as (record, its mark), in the
    order the keeper decides them. Lazy: a run is read one record ahead."""
    iters = [iter(run) for run in runs]
    heap: list[tuple[tuple[bool, datetime, int, int], int, R]] = []  # one head per run

    def push(rank: int) -> None:
        """The run's next record, if any, becomes its head."""
        for record in iters[rank]:
            heapq.heappush(heap, (merge_key(at(record), rank, 0), rank, record))
            return

    for rank in range(len(iters)):
        push(rank)
    while heap:
        _, rank, record = heapq.heappop(heap)
        mark = marked(mark, at(record), wall)
        yield record, mark
        push(rank)


@dataclass
class _Source:
    """One input topic-partition as this worker has read it since it was assigned."""

    #: the next offset to read (every offset below was read: applied, held or skipped)
    position: int = 0
    held: deque[Read] = field(default_factory=deque)


@dataclass
class EventClock:
    """Per-partition decision order over the input topics: the held events and the clock."""

    topics: tuple[str, ...]
    end_offsets: EndOffsets
    _sources: dict[tuple[str, int], _Source] = field(default_factory=dict)
    #: partition -> its clock: the latest event time decided (rule 4)
    _clock: dict[int, datetime] = field(default_factory=dict)

    def reset(self) -> None:
        """After a rebalance the consumer re-reads from the committed offsets: forget all."""
        self._sources.clear()
        self._clock.clear()

    def start_at(self, topic: str, partition: int, position: int) -> None:
        """Where reading resumes (Redis's watermark + 1), for a source nothing was read from."""
        source = self._source(topic, partition)
        source.position = max(source.position, position)

    def resume(self, partition: int, mark: datetime | None) -> None:
        """The clock as Redis kept it with the watermarks (the last unit's latest mark)."""
        if mark is not None:
            self._clock[partition] = marked(self._clock.get(partition), mark, None) or mark

    def known(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._sources

    def read(self, items: Iterable[Read], wall: datetime) -> None:
        """Messages as consumed: each is held until its turn."""
        for item in items:
            source = self._source(item.topic, item.partition)
            source.position = max(source.position, item.offset + 1)
            source.held.append(item)

    def live(self, partition: int) -> bool:
        """Every input topic-partition is read to its end."""
        return not any(self._behind(topic, partition) for topic in self.topics)

    def clock(self, partition: int, wall: datetime) -> tuple[datetime | None, bool]:
        """(the partition's clock, live). Live: the wall clock. Behind: the latest event time
        decided, or None while nothing was (nothing may happen then)."""
        if self.live(partition):
            return wall, True
        return self._clock.get(partition), False

    def release(self, partition: int, wall: datetime) -> list[Read]:
        """The held events of a partition whose turn has come, in the order of decision, each
        with its `mark` set."""
        heads: list[tuple[tuple[bool, datetime, int, int], int]] = []
        behind_empty = 0  # behind sources with nothing held: while any, nothing can go
        sources: list[_Source | None] = []
        for rank, topic in enumerate(self.topics):
            source = self._sources.get((topic, partition))
            sources.append(source)
            if source is not None and source.held:
                head = source.held[0]
                heads.append((merge_key(head.at, rank, head.offset), rank))
            elif self._behind(topic, partition):
                behind_empty += 1
        heapq.heapify(heads)
        mark = self._clock.get(partition)
        out: list[Read] = []
        while heads and not behind_empty:
            _, rank = heapq.heappop(heads)
            source = sources[rank]
            assert source is not None
            item = source.held.popleft()
            mark = marked(mark, item.at, wall)
            item.mark = mark
            out.append(item)
            if source.held:
                head = source.held[0]
                heapq.heappush(heads, (merge_key(head.at, rank, head.offset), rank))
            elif self._behind(self.topics[rank], partition):
                behind_empty += 1
        if mark is not None:
            self._clock[partition] = mark
        return out

    def partitions(self) -> set[int]:
        """Partitions with held events."""
        return {p for (_, p), s in self._sources.items() if s.held}

    def held(self) -> int:
        return sum(len(s.held) for s in self._sources.values())

    def _behind(self, topic: str, partition: int) -> bool:
        """Unread messages are left there (or its end is not known yet)."""
        source = self._sources.get((topic, partition))
        end = self.end_offsets(topic, partition)
        return end is None or (source.position if source is not None else 0) < end

    def _source(self, topic: str, partition: int) -> _Source:
        key = (topic, partition)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = _Source()
        return source

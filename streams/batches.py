"""Whole fetched batches from Kafka to ecrm, through Faust's own transport registry.

Faust hands every message down a per-message chain (drain loop, conductor, channel queue,
stream, agent, one ack each): some 200 µs a message on a small machine, two thirds of
ecrm's time (docs/benchmarks.md). ecrm applies events in batches anyway, so the
`ecrm+kafka://` broker scheme registers a transport whose drain loop puts each `getmany`
result for the subscribed topics, all partitions, on a small bounded queue as one
`FetchedBatch`. The queue is the back-pressure: while ecrm is behind, the drain loop waits.

Faust keeps everything else: group membership, assignment, fetch positions, the seek to
committed offsets after every rebalance, offset tracking and commits. Topics nobody
subscribed here (a table's changelog) still go message by message through Faust.

Why it stays correct (the keeper's Redis watermark is "highest offset applied", so a
partition must never see a later offset applied while an earlier one was skipped):
- `BatchChannel.ack(batch)`, called once the batch is in Redis, marks its offsets acked in
  Faust's tracker, in bulk; Faust commits only runs of consecutive acked offsets. Offsets
  the broker skipped between two batches (transaction markers, compaction) are acked with
  the batch after them, as Faust's own drain loop records them as gaps.
- A batch is dropped, never applied, when a rebalance came between its fetch and its turn
  (another generation, or the flow stopped). Every rebalance ends with Faust seeking each
  partition back to its committed offset, so the dropped offsets are read again; a fetch
  that spans a whole rebalance (seek included) seeks back itself before it is dropped.
- Before Faust gives partitions away it waits for the batch being applied (`wait_empty`),
  commits it, and discards the batches queued behind it.
- Faust's "stream idle" monitor is fed per partition when a batch is taken.

This leans on the shape of faust-streaming 0.15.3's consumer (`_wait_next_records`,
`_read_offset`, `_acked`, `_acked_index`, `_committed_offset`, `_n_acked`), so
pyproject.toml pins that version exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

import faust
from aiokafka.structs import ConsumerRecord
from faust.transport import drivers
from faust.transport.consumer import CONSUMER_FETCHING, ensure_TP
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, TopicT
from faust.types.tuples import ack_lock
from mode import Service, ServiceT
from mode.utils.futures import notify

from schemas.errors import ConfigError
from streams.resume import ResumingConsumer

log = logging.getLogger(__name__)

#: The broker URL scheme of this transport: `ecrm+kafka://host:port`.
SCHEME = "ecrm+kafka"
#: Kafka's per-partition fetch size (Faust's default is 1 MiB): one fetch brings a whole
#: batch of small JSON events from a partition instead of a fraction of one.
MAX_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
#: Batches fetched ahead of the one being applied (the drain loop holds one more).
QUEUED_BATCHES = 1


def register_batch_transport() -> None:
    """Teach Faust the `ecrm+kafka://` broker scheme; call before the app is created."""
    drivers.TRANSPORTS.aliases[SCHEME] = "streams.batches:BatchTransport"


@dataclass(frozen=True, slots=True)
class Part:
    """The records of one partition in a batch, in offset order."""

    tp: TP
    records: list[ConsumerRecord]
    #: first offset this part accounts for: its first record's, or lower when the broker
    #: skipped offsets since the previous batch
    ack_from: int

    @classmethod
    def of(cls, tp: TP, records: list[ConsumerRecord], expected: int | None) -> Part | None:
        """The fetched records of `tp` not read yet, `expected` being the next offset the
        consumer expects (None: unknown, e.g. a group's first read); None if all were."""
        if expected is not None and records and records[0].offset < expected:
            records = [r for r in records if r.offset >= expected]
        if not records:
            return None
        return cls(tp, records, records[0].offset if expected is None else expected)

    def offsets(self, committed: int | None) -> range:
        """The offsets this part marks done: those it accounts for, less what is committed."""
        start = self.ack_from if committed is None else max(self.ack_from, committed)
        return range(start, self.records[-1].offset + 1)


@dataclass(frozen=True, slots=True)
class Offsets:
    """The offsets one record accounts for: its own, and any the broker skipped before it
    since the previous record of its partition. Acked once the record's effect is durable."""

    tp: TP
    first: int
    last: int
    generation: int


@dataclass(frozen=True, slots=True)
class FetchedBatch:
    """One `getmany` result of the subscribed topics, all partitions, one generation."""

    generation: int
    parts: list[Part]

    def records(self) -> Iterator[ConsumerRecord]:
        for part in self.parts:
            yield from part.records

    def offsets(self) -> Iterator[tuple[ConsumerRecord, Offsets]]:
        """Each record with the offsets it accounts for (see `Offsets`)."""
        for part in self.parts:
            first = part.ack_from
            for record in part.records:
                yield record, Offsets(part.tp, first, record.offset, self.generation)
                first = record.offset + 1

    def __len__(self) -> int:
        return sum(len(part.records) for part in self.parts)


class BatchChannel:
    """The bounded queue between the drain loop and ecrm. Iterate it for batches; `ack`
    each one once its effects are durable."""

    def __init__(self, app: AppT, maxsize: int = QUEUED_BATCHES) -> None:
        self.app = app
        self.topics: set[str] = set()
        self._queue: asyncio.Queue[FetchedBatch] = asyncio.Queue(maxsize)
        self._in_flight: FetchedBatch | None = None
        self._taker: asyncio.Task[Any] | None = None
        self._released = asyncio.Event()

    def subscribe(self, topic: TopicT) -> None:
        """Deliver `topic`'s messages here; Faust's conductor subscribes the group to it."""
        self.topics.update(topic.topics)
        self.app.topics.add(topic)

    def __aiter__(self) -> AsyncIterator[FetchedBatch]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[FetchedBatch]:
        consumer = self.app.consumer
        while True:
            self._release()
            batch = await self._queue.get()
            if not consumer.flow_active or batch.generation != self.app.consumer_generation_id:
                log.info("dropped a batch of %d fetched before a rebalance", len(batch))
                continue
            inbound = self.app.monitor.stream_inbound_time
            now = monotonic()
            for part in batch.parts:
                inbound[part.tp] = now
            self._in_flight, self._taker = batch, asyncio.current_task()
            yield batch

    def ack(self, batch: FetchedBatch) -> bool:
        """Mark the batch's offsets processed, so Faust may commit them. False when a
        rebalance came in between: its offsets will be read again."""
        try:
            return cast(BatchConsumer, self.app.consumer).ack_batch(batch)
        finally:
            self._release()

    def ack_offsets(self, done: Iterable[Offsets]) -> None:
        """Mark these records' offsets processed (records of a batch may be applied later
        than their batch: held until their partition's event-time clock reaches them);
        those of an earlier generation are read again after the rebalance's seek."""
        cast(BatchConsumer, self.app.consumer).ack_offsets(done)

    def finished(self, batch: FetchedBatch) -> None:
        """The batch taken last is dealt with (applied, or held for later)."""
        self._release()

    async def put(self, batch: FetchedBatch) -> None:
        await self._queue.put(batch)

    def discard_queued(self) -> int:
        n = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            n += 1
        return n

    async def wait_idle(self, stopping: Callable[[], bool]) -> None:
        """Until no batch is being applied (or the task applying it has ended)."""
        while self._in_flight is not None and not stopping():
            if self._taker is None or self._taker.done():
                return
            self._released.clear()
            try:
                await asyncio.wait_for(self._released.wait(), timeout=1.0)
            except TimeoutError:
                pass

    def _release(self) -> None:
        self._in_flight, self._taker = None, None
        self._released.set()


class BatchConsumer(ResumingConsumer):
    """Faust's aiokafka consumer, delivering the channel's topics a fetch at a time (and,
    after an assignment, reading each input partition from Redis's watermark, see
    streams/resume.py)."""

    @property
    def batches(self) -> BatchChannel:
        return cast(BatchTransport, self.transport).batches

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        channel = self.batches
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                generation = self.app.consumer_generation_id
                records, active = await self._wait_next_records(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    break
                if records:
                    await self._hand_over(channel, generation, records, active)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _hand_over(
        self, channel: BatchChannel, generation: int, records: Any, active: set[TP] | None
    ) -> None:
        if not self.flow_active:
            return  # a rebalance is under way; it ends with a seek that reads these again
        if self.app.consumer_generation_id != generation:
            # the fetch spanned a whole rebalance, seek included: seek back ourselves
            await self._seek_back()
            return
        parts: list[Part] = []
        for key, recs in records.items():
            tp = ensure_TP(key)
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            if tp.topic in channel.topics:
                part = Part.of(tp, recs, self._read_offset[tp])
                if part is not None:
                    parts.append(part)
            else:
                await self._deliver_each(tp, recs)
        if not parts:
            return
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        put = channel.put(FetchedBatch(generation, parts))
        if put not in (await self.wait_first(put, self.suspend_flow.wait())).done:
            return  # the flow stopped for a rebalance: dropped, read again after its seek
        for part in parts:
            # the next offset expected, as Faust's own seeks record it
            self._read_offset[part.tp] = part.records[-1].offset + 1
            self.app.monitor.track_tp_end_offset(part.tp, self.highwater(part.tp))

    async def _deliver_each(self, tp: TP, records: list[ConsumerRecord]) -> None:
        """Faust's own per-message path, for topics not subscribed to the channel."""
        for record in records:
            offset = record.offset
            last = self._read_offset[tp]
            if last is not None and offset < last:
                continue
            if last and offset - last > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, last + 1, offset)
            await self.wait_first(
                self.callback(self._to_message(tp, record)), self.suspend_flow.wait()
            )
            self._read_offset[tp] = offset

    async def _seek_back(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:  # noqa: BLE001 - Faust's drain loop does the same
            log.warning("seek back to committed offsets failed: %r", exc)

    def ack_offsets(self, done: Iterable[Offsets]) -> None:
        """`Consumer.ack` for these records' offsets (and the skipped ones before them)."""
        generation = self.app.consumer_generation_id
        acks_enabled_for = self.app.topics.acks_enabled_for
        with ack_lock:
            for o in done:
                tp = o.tp
                if o.generation != generation or not acks_enabled_for(tp.topic):
                    continue
                committed = self._committed_offset[tp]
                start = o.first if committed is None else max(o.first, committed)
                acked = self._acked_index[tp]
                fresh = [n for n in range(start, o.last + 1) if n not in acked]
                acked.update(fresh)
                self._acked[tp].extend(fresh)
                self._n_acked += len(fresh)
            notify(self._waiting_for_ack)

    def ack_batch(self, batch: FetchedBatch) -> bool:
        """`Consumer.ack` for every offset of the batch at once."""
        if batch.generation != self.app.consumer_generation_id:
            return False
        acks_enabled_for = self.app.topics.acks_enabled_for
        with ack_lock:
            for part in batch.parts:
                tp = part.tp
                if not acks_enabled_for(tp.topic):
                    continue
                acked = self._acked_index[tp]
                fresh = [o for o in part.offsets(self._committed_offset[tp]) if o not in acked]
                acked.update(fresh)
                self._acked[tp].extend(fresh)
                self._n_acked += len(fresh)
            notify(self._waiting_for_ack)
        return True

    async def hold_inputs(self, hold: bool) -> int:
        """Stop (or start again) fetching the channel's topics on every partition assigned
        now; how many partitions that is. A partition assigned later starts fetching, so
        the caller holds again after a rebalance (streams/backpressure.py). aiokafka drops
        what it had fetched ahead for a paused partition without moving its position: those
        records are fetched again on release, and nothing is skipped."""
        topics = self.batches.topics
        thread = self._thread

        async def apply() -> int:
            consumer = thread._ensure_consumer()
            tps = [tp for tp in consumer.assignment() if tp.topic in topics]
            if tps:
                (consumer.pause if hold else consumer.resume)(*tps)
            return len(tps)

        return cast(int, await thread.call_thread(apply))

    async def wait_empty(self) -> None:
        """Before partitions are given away: drop queued batches, let the batch being
        applied finish (its ack lands before Faust's commit), then Faust's own wait."""
        dropped = self.batches.discard_queued()
        if dropped:
            log.info("discarded %d queued batches for a rebalance", dropped)
        await self.batches.wait_idle(lambda: self.should_stop)
        await super().wait_empty()


class BatchTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the batch-delivering consumer."""

    Consumer = BatchConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = BatchChannel(self.app)


def subscribe_batches(app: faust.App, topic: TopicT) -> BatchChannel:
    """The channel that delivers `topic` a fetched batch at a time (before the app starts)."""
    transport = app.transport
    if not isinstance(transport, BatchTransport):
        raise ConfigError(f"batches need the broker URL scheme {SCHEME}://, not {app.conf.broker}")
    transport.batches.subscribe(topic)
    return transport.batches

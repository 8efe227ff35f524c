"""Where a worker starts reading a source partition it is handed: Redis's watermark + 1.

Redis commits each source partition's watermark (the last offset applied) in the same MULTI
as the state it produced (streams/redis_store.py), so Redis, not Kafka's committed offset,
knows what was applied. Faust seeks every assigned partition to its committed offset
(`Consumer.perform_seek`, after every assignment, before any message flows); the
`ResumingConsumer` below (the base of streams/batches.py's consumer, so of the
`ecrm+kafka://` transport), then
moves each source partition to where Redis says (`plan`):

- back, when Redis is behind Kafka — it lost its last writes (an AOF not fsynced, a failover
  to a replica that lagged): the lost events are read again instead of skipped;
- forward only when the group has no committed offset (a new group id): otherwise Faust
  would never commit across offsets it did not read, and the few events in between (at most
  a commit interval's worth) are read again and recognised as applied by their offset;
- a watermark at or above the partition's end offset cannot be right (the topic was
  recreated, or the broker lost its volume while Redis kept its own). It is logged as an
  error with the numbers, counted (`watermark_resets` in ecrm:stats) and deleted, and the
  partition is read from its start: new events are never skipped as "already applied".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP

from schemas.errors import RedisStoreError
from streams import keyspace
from streams.kafka_auth import PLAINTEXT, KafkaAuth
from streams.outages import Backoff, outage_of
from streams.redis_store import RedisStore

log = logging.getLogger(__name__)

#: How long placing the partitions may wait for Redis before the assignment fails (Faust
#: gives the whole step `broker_request_timeout`, 90 s by default).
PLACE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Partition:
    """What is known of one source partition right after Faust's own seek."""

    watermark: int | None  # the last offset Redis applied (None: nothing yet)
    position: int  # where Faust put the consumer
    committed: bool  # the group has a committed offset here, so Faust tracks commits from it
    start: int  # the log start offset
    end: int  # the end offset: the next offset to be written


@dataclass(frozen=True)
class Plan:
    seek: int | None  # where to move the consumer, None: stay
    reset: bool  # the watermark is impossible (past the end) and must go


def plan(p: Partition) -> Plan:
    """Where to read `p` from, by what Redis applied (see module docstring)."""
    reset = p.watermark is not None and p.watermark >= p.end
    watermark = None if reset else p.watermark
    target = p.start if watermark is None else max(watermark + 1, p.start)
    if target < p.position or (target > p.position and not p.committed):
        return Plan(target, reset)
    return Plan(None, reset)


class SourcePositions:
    """Places the input partitions of one app where its Redis store says (see `plan`)."""

    def __init__(
        self,
        store: Callable[[], RedisStore],
        topics: Iterable[str],
        bootstrap: str,
        auth: KafkaAuth = PLAINTEXT,
    ) -> None:
        self.store = store
        self.topics = frozenset(topics)
        self.bootstrap = bootstrap
        self.auth = auth

    async def place(self, consumer: Any, committed: dict[TP, int | None]) -> None:
        """Seek every assigned source partition; waits for Redis (up to PLACE_TIMEOUT_S)."""
        tps = sorted(tp for tp in consumer.assignment() if tp.topic in self.topics)
        if not tps:
            return
        backoff, deadline = Backoff(), time.monotonic() + PLACE_TIMEOUT_S
        while True:
            try:
                await self._place(consumer, tps, committed)
                return
            except Exception as exc:
                service = outage_of(exc) or ("Redis" if isinstance(exc, redis.WatchError) else None)
                if service is None or time.monotonic() > deadline:
                    raise
                if service == "Redis":
                    self.store().partition_clients.forget()  # a failover moved a slot?
                wait = backoff.next()
                log.warning("waiting for %s to place the assigned partitions: %s", service, exc)
                await asyncio.sleep(wait)

    async def _place(self, consumer: Any, tps: list[TP], committed: dict[TP, int | None]) -> None:
        store = self.store()
        keys = [keyspace.offset(store.cluster_id, tp.topic, tp.partition) for tp in tps]
        raw = [
            await (await store.for_partition(tp.partition)).get(key)
            for tp, key in zip(tps, keys, strict=True)
        ]
        starts = await consumer.earliest_offsets(*tps)
        ends = dict(await consumer.highwaters(*tps))
        beyond = {
            tp: int(value)
            for tp, value in zip(tps, raw, strict=True)
            if value is not None and int(value) >= ends[tp]
        }
        if beyond:  # rare on Kafka; a ListOffsets that lags (Tansu's) must not look like it
            ends.update(await fetched_ends(self.bootstrap, beyond, self.auth))
        for tp, key, value in zip(tps, keys, raw, strict=True):
            position = await consumer.position(tp)
            known = Partition(
                watermark=None if value is None else int(value),
                position=starts[tp] if position is None else position,
                committed=bool(committed.get(tp)),
                start=starts[tp],
                end=ends[tp],
            )
            todo = plan(known)
            if todo.reset:
                log.error(
                    "%s[%d]: Redis's watermark %d is past the partition's end offset %d "
                    "(topic recreated, or the broker lost its data while Redis kept its own); "
                    "forgetting it and reading the partition from offset %d",
                    tp.topic,
                    tp.partition,
                    known.watermark,
                    known.end,
                    known.start,
                )
                await forget_watermark(store, key, value, tp.partition)
            if todo.seek is not None:
                log.info(
                    "%s[%d]: resuming at %d, Redis's watermark + 1 (consumer was at %d)",
                    tp.topic,
                    tp.partition,
                    todo.seek,
                    known.position,
                )
                await consumer.seek(tp, todo.seek)


async def fetched_ends(
    bootstrap: str, watermarks: dict[TP, int], auth: KafkaAuth = PLAINTEXT
) -> dict[TP, int]:
    """End offsets as a fetch at each watermark reports them (a broker's ListOffsets may lag
    its fetch high watermark: Tansu's does by up to a batch). A partition whose watermark is
    out of its range, or that could not be read, keeps the listed end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import OffsetOutOfRangeError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="none",
        **auth.aiokafka(),
    )
    await consumer.start()
    ends: dict[TP, int] = {}
    try:
        for tp, watermark in watermarks.items():
            ktp = TopicPartition(tp.topic, tp.partition)
            consumer.assign([ktp])
            consumer.seek(ktp, watermark)
            try:
                await consumer.getmany(ktp, timeout_ms=2000)
            except OffsetOutOfRangeError:
                continue  # past the end: the listed end is right enough to say so
            end = consumer.highwater(ktp)
            if end is not None:
                ends[tp] = end
    finally:
        await consumer.stop()
    return ends


async def forget_watermark(store: RedisStore, key: str, seen: bytes, partition: int) -> None:
    """Delete a watermark still at `seen` and count it; WatchError if it moved meanwhile."""
    client = await store.for_partition(partition)
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        if await pipe.get(key) != seen:
            raise redis.WatchError(f"{key} changed while it was being reset")
        pipe.multi()
        pipe.delete(key)
        pipe.hincrby(keyspace.stats(partition), "watermark_resets", 1)
        await pipe.execute()


class ResumingConsumer(faust_kafka.Consumer):
    """Faust's Kafka consumer, whose seek after an assignment ends where Redis says."""

    async def perform_seek(self) -> None:
        await super().perform_seek()  # to the committed offsets, with Faust's bookkeeping
        sources: SourcePositions | None = getattr(self.app, "sources", None)
        if sources is None:
            raise RedisStoreError("the app has no `sources` to place its input partitions")
        await sources.place(self, dict(self._committed_offset))

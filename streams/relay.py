"""Relays Kafka-bound messages (segment changes, dead letters, actions) from a Redis outbox.

Agents never send to Kafka directly: a message is written to the `ecrm:outbox:kafka`
stream in the same MULTI as the state that caused it, so it can neither be lost nor sent
for a change that was never committed. The relay sends and then acknowledges; entries a
crashed relay had read are claimed again after `claim_idle_ms`.

A relay killed after the broker took a message but before acknowledging the entry would
send it twice. So entries taken over from another relay are first looked for in the tail
of their topic (`already_sent`), and only those not found are sent: each message reaches
its topic once, with no idempotent or transactional producer needed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from streams.outbox import KAFKA_OUTBOX

RELAY_GROUP = "kafka-relay"

log = logging.getLogger(__name__)

Send = Callable[[str, bytes | None, bytes], Awaitable[Any]]
Message = tuple[str, bytes | None, bytes]
AlreadySent = Callable[[list[Message]], Awaitable[set[Message]]]


class KafkaRelay:
    """Drains the Kafka outbox through `send` (which returns once the broker has the message)."""

    def __init__(
        self,
        client: aioredis.Redis,
        send: Send,
        *,
        already_sent: AlreadySent | None = None,
        stream: str = KAFKA_OUTBOX,
        consumer: str | None = None,
        batch: int = 500,
        claim_idle_ms: int = 5_000,
    ) -> None:
        self.client = client
        self.send = send
        self.already_sent = already_sent
        self.skipped = 0
        self.stream = stream
        self.consumer = consumer or f"{socket.gethostname()}-{id(self):x}"
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.sent = 0
        self._group_ready = False

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.stream, RELAY_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def relay_once(self, block_ms: int = 100) -> int:
        """Send one batch; returns how many messages went out."""
        await self._ensure_group()
        claimed = await self.client.xautoclaim(
            self.stream, RELAY_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = [(e, f) for e, f in claimed[1] if f]
        messages = [_message(f) for _, f in entries]
        if entries and self.already_sent is not None:
            # another relay read these and died: some may be on the topic already
            sent = await self.already_sent(messages)
            self.skipped += sum(1 for m in messages if m in sent)
            messages = [m for m in messages if m not in sent]
        if not entries:
            reply = await self.client.xreadgroup(
                RELAY_GROUP, self.consumer, {self.stream: ">"}, count=self.batch, block=block_ms
            )
            for _stream, items in reply or []:
                entries.extend((e, f) for e, f in items if f)
            messages = [_message(f) for _, f in entries]
        if not entries:
            return 0
        pending = [await self.send(*m) for m in messages]
        await asyncio.gather(*[p for p in pending if asyncio.isfuture(p) or asyncio.iscoroutine(p)])
        ids = [eid for eid, _ in entries]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, RELAY_GROUP, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()
        self.sent += len(ids)
        return len(ids)

    async def pending(self) -> int:
        return int(await self.client.xlen(self.stream))


def _message(fields: dict[bytes, bytes]) -> Message:
    return fields[b"topic"].decode(), fields.get(b"key"), fields[b"value"]


def tail_reader(bootstrap: str, depth: int = 10_000) -> AlreadySent:
    """`already_sent` that reads the last `depth` messages of each partition of the topics
    concerned and reports which of the given messages are there, byte for byte."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def already_sent(messages: list[Message]) -> set[Message]:
        wanted = set(messages)
        found: set[Message] = set()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()  # loads the partition metadata
            for topic in {m[0] for m in messages}:
                parts = consumer.partitions_for_topic(topic) or set()
                tps = [TopicPartition(topic, p) for p in parts]
                if not tps:
                    continue
                consumer.assign(tps)
                ends = await consumer.end_offsets(tps)
                starts = await consumer.beginning_offsets(tps)
                for tp in tps:
                    consumer.seek(tp, max(starts[tp], ends[tp] - depth))
                remaining = {tp for tp in tps if ends[tp] > starts[tp]}
                while remaining:
                    batch = await consumer.getmany(*remaining, timeout_ms=1000)
                    if not batch:
                        break
                    for tp, records in batch.items():
                        for r in records:
                            message = (topic, r.key, r.value)
                            if message in wanted:
                                found.add(message)
                            if r.offset + 1 >= ends[tp]:
                                remaining.discard(tp)
        finally:
            await consumer.stop()
        return found

    return already_sent

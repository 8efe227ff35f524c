"""Reads a topic's end for the Kafka relay: end offsets for its marks, and which messages
are already there, so a message the relay may have sent is looked for before it is sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from streams.kafka_auth import PLAINTEXT, KafkaAuth
from streams.relay_takeover import Marks

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition

T = TypeVar("T")

Message = tuple[str, bytes | None, bytes]


class TopicTail:
    """One group-less consumer, started on first use and started again after a failure.

    Every call either answers fully or raises: a search cut short would report a sent
    message as unsent, and the relay would send it twice. A request that gets no answer
    within `timeout_s`, or a search that stops moving for that long, raises TimeoutError.
    """

    def __init__(
        self, bootstrap: str, timeout_s: float = 30.0, auth: KafkaAuth = PLAINTEXT
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.auth = auth
        self._consumer: AIOKafkaConsumer | None = None

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset of each partition of `topic`; empty if the topic does not exist."""

        async def ends(consumer: AIOKafkaConsumer) -> dict[int, int]:
            tps = await self._partitions(consumer, topic)
            found = await self._answer(consumer.end_offsets(tps)) if tps else {}
            return {tp.partition: offset for tp, offset in found.items()}

        return await self._using(ends)

    async def already_sent(self, messages: list[Message], since: Marks) -> set[Message]:
        """Which of `messages` are on their topic at or after the `since` marks, byte for byte.
        Topics without marks are not searched: the relay never sent anything there."""
        wanted = set(messages)

        async def search(consumer: AIOKafkaConsumer) -> set[Message]:
            found: set[Message] = set()
            for topic in sorted({m[0] for m in messages if m[0] in since}):
                found |= await self._search(consumer, topic, since[topic], wanted)
            return found

        return await self._using(search)

    async def _search(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        marks: dict[int, int],
        wanted: set[Message],
    ) -> set[Message]:
        found: set[Message] = set()
        tps = await self._partitions(consumer, topic)
        if not tps:
            return found
        consumer.assign(tps)
        ends = await self._answer(consumer.end_offsets(tps))
        starts = await self._answer(consumer.beginning_offsets(tps))
        remaining = set()
        for tp in tps:
            start = max(starts[tp], marks.get(tp.partition, 0))
            if start < ends[tp]:
                consumer.seek(tp, start)
                remaining.add(tp)
        idle_since = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200)
            if batch:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.timeout_s:
                raise TimeoutError(f"reading {topic} stopped short of its end offsets {ends}")
            for records in batch.values():
                for r in records:
                    if (topic, r.key, r.value) in wanted:
                        found.add((topic, r.key, r.value))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return found

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _using(self, work: Callable[[AIOKafkaConsumer], Awaitable[T]]) -> T:
        try:
            if self._consumer is None:
                from aiokafka import AIOKafkaConsumer

                self._consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    enable_auto_commit=False,
                    **self.auth.aiokafka(),
                )
                await self._answer(self._consumer.start())
            return await work(self._consumer)
        except BaseException:
            await asyncio.shield(self._close_quietly())
            raise

    async def _answer(self, request: Awaitable[T]) -> T:
        # not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives
        # as the request completes, and the relay would then never stop
        async with asyncio.timeout(self.timeout_s):
            return await request

    async def _close_quietly(self) -> None:
        try:
            await self.close()
        except Exception:  # noqa: BLE001 - already failing; the next call starts afresh
            self._consumer = None

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        from aiokafka import TopicPartition

        await self._answer(consumer.topics())  # refreshes the partition metadata
        parts = consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(parts)]

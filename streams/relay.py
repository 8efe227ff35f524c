"""Relays Kafka-bound messages (segment changes, dead letters, actions) from a Redis outbox.

Agents never send to Kafka directly: a message is written to the `ecrm:outbox:kafka`
stream in the same MULTI as the state that caused it, so it can neither be lost nor sent
for a change that was never committed. The relay sends and then acknowledges; entries a
crashed relay had read are claimed again after `claim_idle_ms`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

KAFKA_OUTBOX = "ecrm:outbox:kafka"
RELAY_GROUP = "kafka-relay"

log = logging.getLogger(__name__)

Send = Callable[[str, bytes | None, bytes], Awaitable[Any]]


def kafka_entry(topic: str, key: bytes | str | None, value: bytes) -> dict[str, bytes]:
    """The XADD fields of one message to send."""
    if isinstance(key, str):
        key = key.encode()
    entry = {"topic": topic.encode(), "value": value}
    if key is not None:
        entry["key"] = key
    return entry


class KafkaRelay:
    """Drains the Kafka outbox through `send` (which returns once the broker has the message)."""

    def __init__(
        self,
        client: aioredis.Redis,
        send: Send,
        *,
        stream: str = KAFKA_OUTBOX,
        consumer: str | None = None,
        batch: int = 500,
        claim_idle_ms: int = 15_000,
    ) -> None:
        self.client = client
        self.send = send
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
        entries: list[tuple[bytes, dict[bytes, bytes]]] = list(claimed[1])
        if not entries:
            reply = await self.client.xreadgroup(
                RELAY_GROUP, self.consumer, {self.stream: ">"}, count=self.batch, block=block_ms
            )
            for _stream, items in reply or []:
                entries.extend(items)
        entries = [(eid, fields) for eid, fields in entries if fields]
        if not entries:
            return 0
        pending = [
            await self.send(f[b"topic"].decode(), f.get(b"key"), f[b"value"]) for _, f in entries
        ]
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

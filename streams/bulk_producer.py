"""Producing a bulk load fast: keyed messages packed into per-partition record batches.

kafka-python's `send()` costs ~100 µs a message, which would make a 1M-row import a matter
of minutes; aiokafka's batch API builds record batches in C. The caller's thread packs
messages into one open batch per partition (partition = murmur2(key), the same as every
other producer of the contract's topics, so a customer's events stay on one partition);
full batches go, in order, to an aiokafka producer running on its own event-loop thread.
Delivery is checked: `close()` says how many messages were not acknowledged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka.partitioner.default import murmur2

from schemas.errors import KafkaError
from streams.kafka_auth import PLAINTEXT, KafkaAuth

T = TypeVar("T")
BATCH_BYTES = 1024 * 1024
#: customer ids whose partition is remembered (a bulk load sends each many times)
KEYS_CACHED = 200_000
START_TIMEOUT_S = 30.0


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, kafka-python, aiokafka) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Delivery:
    """How a bulk load ended: messages acknowledged, not acknowledged, and why."""

    sent: int
    failed: int
    first_error: str | None


class BulkProducer:
    """Keyed messages to one topic in large batches; `close()` waits for every ack."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        batch_bytes: int = BATCH_BYTES,
        auth: KafkaAuth = PLAINTEXT,
    ) -> None:
        self.topic = topic
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bulk-producer", daemon=True
        )
        self._thread.start()
        self._producer = self._call(_producer(bootstrap, batch_bytes, auth))
        try:
            self._call(self._producer.start(), START_TIMEOUT_S)
            found = self._call(self._producer.partitions_for(topic), START_TIMEOUT_S)
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            self._stop()
            raise KafkaError(f"cannot produce to {topic} at {bootstrap}: {exc}") from exc
        self._partitions = len(found)
        self._open: dict[int, Any] = {}
        self._counts: dict[int, int] = {}
        self._pending: list[tuple[asyncio.Future[Any], int]] = []
        self._keys: dict[bytes, int] = {}
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None

    def send(self, key: bytes, value: bytes) -> None:
        partition = self._keys.get(key)
        if partition is None:
            if len(self._keys) >= KEYS_CACHED:
                self._keys.clear()
            partition = self._keys[key] = partition_for(key, self._partitions)
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
            self._counts[partition] = 0
        if batch.append(key=key, value=value, timestamp=None) is None:
            self._ship(partition)
            batch = self._open[partition] = self._producer.create_batch()
            self._counts[partition] = 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                self._failed(1, f"a message of {len(value)} bytes does not fit a batch")
                return
        self._counts[partition] += 1

    def close(self, timeout: float = 120.0) -> Delivery:
        """Ship the open batches, wait for every acknowledgement, stop the producer."""
        try:
            for partition in list(self._open):
                self._ship(partition)
            for future, count in self._pending:
                try:
                    self._call(_settled(future), timeout)
                except (AIOKafkaError, OSError, TimeoutError) as exc:
                    self._failed(count, f"{type(exc).__name__}: {exc}")
                else:
                    self.sent += count
            self._pending.clear()
        finally:
            self._stop()
        return Delivery(self.sent, self.failed, self.first_error)

    def _ship(self, partition: int) -> None:
        batch, count = self._open.pop(partition), self._counts.pop(partition)
        if count == 0:
            return
        batch.close()
        try:
            # returns once the batch is queued (waits while the producer's buffer is full)
            future = self._call(self._producer.send_batch(batch, self.topic, partition=partition))
        except (AIOKafkaError, OSError) as exc:
            self._failed(count, f"{type(exc).__name__}: {exc}")
            return
        self._pending.append((future, count))  # a few hundred for a million messages

    def _failed(self, count: int, why: str) -> None:
        self.failed += count
        self.first_error = self.first_error or why

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop(self) -> None:
        if self._thread.is_alive():
            try:
                self._call(self._producer.stop(), 30)
            except (AIOKafkaError, OSError, TimeoutError):
                pass  # what was not acknowledged is already counted as failed
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        self._loop.close()


async def _producer(bootstrap: str, batch_bytes: int, auth: KafkaAuth) -> AIOKafkaProducer:
    """Made on the loop it will run on, as aiokafka requires."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="ecrm-import",
        max_batch_size=batch_bytes,
        max_request_size=batch_bytes + 64 * 1024,
        **auth.aiokafka(),
        # the record timestamp stays "now": an order's own (old) time would make the
        # broker's time-based retention delete it at once
    )


async def _settled(future: asyncio.Future[Any]) -> Any:
    return await future

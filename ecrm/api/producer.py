"""The API's Kafka producer: an answer of 200 means the broker acknowledged (acks=all).

Started lazily and started again after a failure, so an API that came up while the broker
was away serves as soon as it is back; until then every send raises `BrokerUnavailable`,
which the API answers with 503 and Retry-After (never a silent drop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError

from schemas.errors import KafkaError
from streams.kafka_auth import PLAINTEXT, KafkaAuth

log = logging.getLogger(__name__)

#: how long one request waits for the broker's acknowledgements before answering 503
SEND_TIMEOUT_S = 10.0


class BrokerUnavailable(KafkaError):
    """The broker did not acknowledge: the client should retry later."""


class AckedProducer:
    """Sends messages and returns once the broker acknowledged all of them."""

    def __init__(
        self, bootstrap: str, *, timeout_s: float = SEND_TIMEOUT_S, auth: KafkaAuth = PLAINTEXT
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.auth = auth
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self, timeout_s: float | None = None) -> AIOKafkaProducer:
        timeout_s = timeout_s or self.timeout_s
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap.split(","),
                acks="all",
                # the embedded broker has no InitProducerId; event ids make retries harmless
                enable_idempotence=False,
                linger_ms=2,
                request_timeout_ms=int(self.timeout_s * 1000),
                max_request_size=1_048_576,
                **self.auth.aiokafka(),
            )
            try:
                await asyncio.wait_for(producer.start(), timeout_s)
            except (AioKafkaError, OSError, TimeoutError) as exc:
                await _quietly_stop(producer)
                raise BrokerUnavailable(f"Kafka at {self.bootstrap} unavailable: {exc!r}") from exc
            except asyncio.CancelledError:
                await _quietly_stop(producer)
                raise
            self._producer = producer
            return producer

    async def send_all(self, messages: Sequence[tuple[str, bytes, bytes]]) -> None:
        """(topic, key, value) each; returns once every one is acknowledged."""
        if not messages:
            return
        producer = await self._started()
        try:
            futures = [await producer.send(t, value=v, key=k) for t, k, v in messages]
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s)
        except (AioKafkaError, OSError, TimeoutError) as exc:
            log.warning("Kafka send failed, restarting the producer: %r", exc)
            await self._reset(producer)
            raise BrokerUnavailable(
                f"Kafka at {self.bootstrap} did not acknowledge: {exc!r}"
            ) from exc

    async def reachable(self, timeout_s: float = 3.0) -> bool:
        """Whether the broker answers a metadata request within `timeout_s` (readiness)."""

        async def ask() -> bool:
            producer = await self._started(timeout_s)
            return bool(await producer.client.force_metadata_update())

        try:
            return await asyncio.wait_for(ask(), timeout_s)
        except (BrokerUnavailable, AioKafkaError, OSError, TimeoutError):
            return False

    async def _reset(self, producer: AIOKafkaProducer) -> None:
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        await _quietly_stop(producer)

    async def stop(self) -> None:
        if self._producer is not None:
            await _quietly_stop(self._producer)
            self._producer = None


async def _quietly_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except (AioKafkaError, OSError, TimeoutError) as exc:
        log.debug("stopping the producer: %r", exc)

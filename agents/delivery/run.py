"""`ecrm deliver` as a process: a consumer group on `ecrm.actions` (run several: Kafka shares
the partitions), the retry queues, the relay of receipts to `ecrm.deliveries` and
`ecrm.delivery-failures`, and the delivery file re-read when it changes.

The offset of a batch is committed once every action in it is claimed and finished or
rescheduled: from the claim on, Redis holds the action (records.py), so a committed offset
never loses one, and an uncommitted one only replays actions the records already know.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.delivery.book import DeliveryBook
from agents.delivery.deliverer import Deliverer
from streams import keyspace
from streams.kafka_auth import KafkaAuth
from streams.redis_client import PartitionClients, async_client
from streams.relay import KafkaRelay, run_relays
from streams.relay_tail import TopicTail
from streams.settings import Settings
from streams.topics import ensure_topics

log = logging.getLogger(__name__)
# httpx logs each request's URL at INFO: WeChat's carry the app secret or the access token in
# the query string, and no credential may reach a log
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

DELIVERY_TOPICS = ("actions", "deliveries", "delivery-failures")
#: actions of one batch handled side by side (each waits on its provider)
CONCURRENCY = 32


def deliver_group(settings: Settings) -> str:
    """The consumer group of every `ecrm deliver` of an install."""
    return f"{settings.app_id}-deliver"


class DeliverProcess:
    def __init__(self, settings: Settings, *, poll_ms: int = 200) -> None:
        self.settings = settings
        self.poll_ms = poll_ms
        self.client = async_client(settings.redis_url, settings.redis_cluster)
        self.book = DeliveryBook(settings.delivery_file, redis=self.client)
        self.deliverer = Deliverer(settings, self.book, self.client)
        self.stopping = asyncio.Event()
        self.consumer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        s = self.settings
        auth = KafkaAuth.of(s)
        await asyncio.to_thread(
            ensure_topics,
            s.kafka_bootstrap,
            [s.topic(t) for t in DELIVERY_TOPICS],
            s.partitions,
            auth=auth,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", **auth.aiokafka()
        )
        await producer.start()

        async def send(topic: str, key: bytes | None, value: bytes) -> Any:
            return await producer.send(topic, value, key=key)

        # a relay's MULTI needs the node that serves its stream (one client on one server)
        nodes = PartitionClients(s.redis_url, s.redis_cluster)
        relays = [
            KafkaRelay(
                await nodes.get(p),
                send,
                stream=keyspace.delivery_outbox(p),
                tail=TopicTail(s.kafka_bootstrap, auth=auth),
                topics=frozenset({s.topic("deliveries"), s.topic("delivery-failures")}),
                partitions=s.partitions,
                heartbeat_ttl_s=s.relay_heartbeat_ttl_s,
                retry_max_s=s.relay_retry_max_s,
                lookup=self.client,
            )
            for p in range(s.partitions)
        ]
        tasks = [
            asyncio.create_task(self._consume(auth), name="deliver actions"),
            asyncio.create_task(self._retries(), name="deliver retries"),
            asyncio.create_task(self._reload(), name="delivery file reload"),
            asyncio.create_task(
                run_relays(relays, self.stopping.is_set, block_ms=100), name="receipts relay"
            ),
        ]
        try:
            await self.stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await producer.stop()
            await self.book.close()
            await self.client.aclose()
            await nodes.aclose()

    async def _consume(self, auth: KafkaAuth) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            s.topic("actions"),
            bootstrap_servers=s.kafka_bootstrap,
            group_id=deliver_group(s),
            client_id=f"ecrm-deliver-{self.consumer_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **auth.aiokafka(),
        )
        await consumer.start()
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(raw: bytes) -> None:
            async with gate:
                await self._until_done(raw, retry=False)

        try:
            while not self.stopping.is_set():
                batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=500)
                if not batches:
                    continue
                # every partition's actions side by side; the offsets once all are recorded
                await asyncio.gather(
                    *(one(m.value) for ms in batches.values() for m in ms if m.value is not None)
                )
                await consumer.commit({tp: ms[-1].offset + 1 for tp, ms in batches.items()})
        finally:
            await consumer.stop()

    async def _until_done(self, raw: bytes, *, retry: bool) -> None:
        """Handle one action; an error of Redis or a bug is logged and tried again (the claim
        makes a second try harmless), so the batch's offset never passes an unclaimed action."""
        backoff = 0.2
        while True:
            try:
                await self.deliverer.handle(raw, retry=retry)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop boundary: nothing is lost, everything is retried
                log.exception("delivering an action failed; again in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _retries(self) -> None:
        while not self.stopping.is_set():
            for p in range(self.settings.partitions):
                try:
                    await self.deliverer.retry_due(p)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("the retry queue of partition %d failed; again soon", p)
            await asyncio.sleep(self.poll_ms / 1000)

    async def _reload(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.settings.rules_reload_s)
            self.book.reload_if_changed()


def run_deliver(settings: Settings) -> int:
    """Runs until interrupted (Ctrl-C or SIGTERM)."""
    import signal

    async def main() -> None:
        process = DeliverProcess(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, process.stop)
        log.warning(
            "ecrm deliver: %s, group %s, delivery file %s",
            settings.topic("actions"),
            deliver_group(settings),
            settings.delivery_file,
        )
        await process.run()

    asyncio.run(main())
    return 0

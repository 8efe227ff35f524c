"""Messages queued in the Redis outbox reach Kafka once: through relays killed mid-batch,
relays that are slow but alive, a broker that fails for a while, and messages too large."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams import keyspace
from streams.outbox import kafka_entry
from streams.relay import RELAY_GROUP, KafkaRelay
from streams.relay_rejects import list_rejects, relay_stats
from streams.relay_tail import TopicTail
from streams.relay_takeover import heartbeat_key
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

STREAM = keyspace.kafka_outbox(0)
MiB = 1024 * 1024


def read_all(settings, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1500,
    )
    values = [m.value for m in consumer]
    consumer.close()
    return values


def on_topic(settings, topic: str) -> int:
    """How many messages the topic holds (its end offsets, summed)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def queue(rds, topic: str, values: list[bytes], key_prefix: str = "c") -> None:
    for i, value in enumerate(values):
        rds.xadd(STREAM, kafka_entry(topic, f"{key_prefix}{i}", value))


def actions(n: int, prefix: str = "a") -> list[bytes]:
    return [f'{{"action_id": "{prefix}{i}"}}'.encode() for i in range(n)]


async def until(condition: Callable[[], Awaitable[Any]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class Scene:
    """A Redis client, a real producer and the relays of one scenario, stopped at the end."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.client = aioredis.Redis.from_url(settings.redis_url)
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Scene:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.producer.stop()
        await self.client.aclose()

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        return await self.producer.send(topic, value=value, key=key)

    def relay(self, send: Any = None, **options: Any) -> KafkaRelay:
        options.setdefault("tail", TopicTail(self.settings.kafka_bootstrap))
        return KafkaRelay(self.client, send or self.send, stream=STREAM, **options)

    def start(self, relay: KafkaRelay) -> asyncio.Task[None]:
        task = asyncio.create_task(relay.run())
        self.tasks.append(task)
        return task

    async def drained(self) -> bool:
        return await self.client.xlen(STREAM) == 0

    async def pending_of(self, consumer: str) -> list[dict[str, Any]]:
        try:
            return await self.client.xpending_range(STREAM, RELAY_GROUP, "-", "+", 1000, consumer)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []  # no relay has started yet
            raise


def test_a_message_larger_than_the_limit_is_set_aside_and_the_rest_go_once(settings, rds):
    topic = settings.topic("actions")
    values = actions(30)
    huge = b'{"action_id": "huge", "blob": "' + b"x" * (MiB + 100) + b'"}'
    queue(rds, topic, values[:10] + [huge] + values[10:])

    async def scenario() -> KafkaRelay:
        async with Scene(settings) as scene:
            relay = scene.relay()  # the default limit: 1 MiB, like Kafka's
            task = scene.start(relay)
            await until(scene.drained, "the outbox drained")
            assert not task.done()
            return relay

    relay = asyncio.run(scenario())
    assert sorted(read_all(settings, topic)) == sorted(values)  # each once, the huge one not
    [reject] = list_rejects(rds, [STREAM])
    assert (reject.topic, reject.key, reject.value) == (topic, b"c10", huge)
    assert reject.size == len(huge) + len(b"c10")
    assert f"limit of {MiB} bytes" in reject.reason
    assert reject.relay == relay.consumer
    assert relay_stats(rds, [STREAM]) == {"sent": 30, "rejected": 1}
    assert rds.xlen(keyspace.relay_rejects(STREAM)) == 1

    # an operator sees it without Redis tooling
    shown = subprocess.run(
        [sys.executable, "-m", "ecrm", "relay", "rejects"],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "relay: rejected 1, sent 30" in shown
    assert f"{topic} key=c10 {len(huge) + 3:,} B: message of" in shown


def test_a_message_kafka_refuses_as_too_large_is_set_aside_with_kafkas_reason(settings, rds):
    topic = settings.topic("actions")
    values = actions(20)
    big = b'{"action_id": "big", "blob": "' + b"y" * 100_000 + b'"}'
    queue(rds, topic, values[:5] + [big] + values[5:])

    async def scenario() -> None:
        async with Scene(settings) as scene:
            # a producer whose requests are limited below the message, as a broker's would be
            strict = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap, max_request_size=64 * 1024
            )
            await strict.start()

            async def send(t: str, key: bytes | None, value: bytes) -> Any:
                return await strict.send(t, value=value, key=key)

            try:
                scene.start(scene.relay(send))
                await until(scene.drained, "the outbox drained")
            finally:
                await strict.stop()

    asyncio.run(scenario())
    assert sorted(read_all(settings, topic)) == sorted(values)
    [reject] = list_rejects(rds, [STREAM])
    assert reject.value == big and reject.key == b"c5"
    assert "MessageSizeTooLargeError" in reject.reason
    assert relay_stats(rds, [STREAM])["rejected"] == 1


def test_a_broker_that_fails_for_a_while_gets_every_message_once(settings, rds, caplog):
    """The relay's `send` fails for some calls: three 'broker down' errors, then three sends
    the broker takes but whose answer is lost (a timeout), then an unexpected error."""
    topic = settings.topic("actions")
    values = actions(30)
    queue(rds, topic, values)
    calls = Counter[str]()

    async def scenario() -> KafkaRelay:
        async with Scene(settings) as scene:

            async def flaky(t: str, key: bytes | None, value: bytes) -> Any:
                calls["all"] += 1
                n = calls["all"]
                if n <= 3:
                    raise kafka_errors.KafkaConnectionError("broker down")
                if n <= 6:
                    await (await scene.send(t, key, value))  # taken, but the answer is lost
                    raise kafka_errors.RequestTimedOutError()
                if n == 7:
                    raise ValueError("a bug in send")
                return await scene.send(t, key, value)

            relay = scene.relay(flaky, retry_max_s=1.0)
            task = scene.start(relay)
            await until(scene.drained, "the outbox drained")
            assert not task.done()
            return relay

    with caplog.at_level(logging.WARNING, logger="streams.relay"):
        relay = asyncio.run(scenario())
    assert sorted(read_all(settings, topic)) == sorted(values)  # each once
    assert relay.skipped == 3  # the three whose answer was lost were found on the topic
    assert relay_stats(rds, [STREAM])["retries"] == 7
    log = caplog.text
    assert "waiting for the broker, retrying in 0.1 s" in log
    assert "retrying in 0.8 s" in log  # the wait grows while the failures go on
    assert "unexpected error" in log and "ValueError: a bug in send" in log


def test_a_slow_relay_that_still_heartbeats_keeps_its_entries(settings, rds):
    topic = settings.topic("actions")
    first, second = actions(20, "slow"), actions(20, "fast")
    queue(rds, topic, first, "s")

    async def scenario() -> tuple[KafkaRelay, KafkaRelay]:
        async with Scene(settings) as scene:
            released = asyncio.Event()

            async def stuck(t: str, key: bytes | None, value: bytes) -> Any:
                await released.wait()
                return await scene.send(t, key, value)

            slow = scene.relay(stuck, consumer="slow", heartbeat_ttl_s=1.0)
            scene.start(slow)

            async def slow_holds_all() -> bool:
                return len(await scene.pending_of("slow")) == len(first)

            await until(slow_holds_all, "the slow relay holding the first batch")
            queue(rds, topic, second, "f")
            fast = scene.relay(consumer="fast", heartbeat_ttl_s=1.0)
            scene.start(fast)

            async def long_past_the_ttl() -> bool:
                held = await scene.pending_of("slow")
                return (
                    fast.sent == len(second) and min(e["time_since_delivered"] for e in held) > 3000
                )

            await until(long_past_the_ttl, "the slow relay's entries idle for 3 heartbeat TTLs")
            assert len(await scene.pending_of("slow")) == len(first)  # not taken
            assert fast.taken_over == 0
            released.set()
            await until(scene.drained, "the outbox drained")
            return slow, fast

    slow, fast = asyncio.run(scenario())
    assert (slow.sent, fast.sent) == (len(first), len(second))
    assert sorted(read_all(settings, topic)) == sorted(first + second)


DOOMED_RELAY = """
import asyncio, sys

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from streams.relay import KafkaRelay
from streams.relay_tail import TopicTail

redis_url, bootstrap, stream, sends = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


async def main() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    calls = 0

    async def send(topic, key, value):
        nonlocal calls
        calls += 1
        if calls > sends:
            await asyncio.Event().wait()  # stuck here until killed
        return await producer.send_and_wait(topic, value=value, key=key)

    relay = KafkaRelay(
        aioredis.Redis.from_url(redis_url), send, tail=TopicTail(bootstrap), stream=stream,
        consumer="doomed", batch=10, heartbeat_ttl_s=2.0,
    )
    await relay.run()


asyncio.run(main())
"""


def test_a_killed_relays_entries_are_taken_over_and_reach_the_topic_once(
    settings, rds, tmp_path: Path
):
    """Killed halfway through its third batch of ten, with more written to the topic since
    than a fixed-depth tail would look at (10,000 a partition): each entry still appears once."""
    topic = settings.topic("actions")
    values = actions(40)
    queue(rds, topic, values)
    script = tmp_path / "doomed_relay.py"
    script.write_text(textwrap.dedent(DOOMED_RELAY))
    doomed = subprocess.Popen(
        [sys.executable, str(script), settings.redis_url, settings.kafka_bootstrap, STREAM, "25"],
        start_new_session=True,
    )
    try:
        wait_for(lambda: on_topic(settings, topic) == 25, timeout=60, what="25 sent")
        assert rds.xpending(STREAM, RELAY_GROUP)["pending"] == 10
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)

    filler = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    for p in sorted(filler.partitions_for(topic)):
        for i in range(10_001):
            filler.send(topic, value=b"filler %d" % i, partition=p)
    filler.flush()
    filler.close()

    async def scenario() -> KafkaRelay:
        async with Scene(settings) as scene:
            heir = scene.relay(consumer="heir", heartbeat_ttl_s=2.0)
            scene.start(heir)
            await until(scene.drained, "the outbox drained", timeout=120)

            async def doomed_forgotten() -> bool:
                consumers = await scene.client.xinfo_consumers(STREAM, RELAY_GROUP)
                return [c["name"] for c in consumers] == [b"heir"]

            await until(doomed_forgotten, "the dead relay removed from the group")
            assert not await scene.client.exists(heartbeat_key(STREAM, "doomed"))
            return heir

    heir = asyncio.run(scenario())
    # the third batch of ten was taken over: five of it were found on the topic, five sent,
    # and the fourth batch, never read by the dead relay, sent as usual
    assert (heir.taken_over, heir.skipped, heir.sent) == (10, 5, 15)
    relayed = Counter(v for v in read_all(settings, topic) if not v.startswith(b"filler"))
    assert relayed == Counter(values)  # each exactly once

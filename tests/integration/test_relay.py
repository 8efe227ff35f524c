"""Messages queued in the Redis outbox reach Kafka once, even when a relay dies mid-way."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer

from streams.outbox import kafka_entry
from streams.relay import RELAY_GROUP, KafkaRelay, tail_reader

pytestmark = pytest.mark.integration


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


def test_a_relay_that_died_after_sending_part_of_a_batch_is_finished_without_duplicates(
    settings, rds
):
    topic = settings.topic("actions")
    stream = "test:outbox"
    values = [f'{{"action_id": "a{i}"}}'.encode() for i in range(40)]
    for i, value in enumerate(values):
        rds.xadd(stream, kafka_entry(topic, f"c{i}", value))

    async def scenario() -> int:
        client = aioredis.Redis.from_url(settings.redis_url)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()

        async def send(t: str, key: bytes | None, value: bytes) -> object:
            return await producer.send(t, value=value, key=key)

        # relay A reads the whole batch, gets half of it onto Kafka, and dies before acking
        dead = KafkaRelay(client, send, stream=stream, consumer="dead")
        await dead._ensure_group()
        reply = await client.xreadgroup(RELAY_GROUP, "dead", {stream: ">"}, count=100)
        entries = reply[0][1]
        assert len(entries) == len(values)
        for _, fields in entries[:20]:
            await (await send(fields[b"topic"].decode(), fields[b"key"], fields[b"value"]))

        # relay B takes the entries over and completes the batch
        heir = KafkaRelay(
            client,
            send,
            stream=stream,
            consumer="heir",
            claim_idle_ms=0,
            already_sent=tail_reader(settings.kafka_bootstrap),
        )
        sent = await heir.relay_once(block_ms=10)
        await producer.stop()
        assert heir.skipped == 20
        left = await client.xlen(stream)
        await client.aclose()
        return sent + left

    assert asyncio.run(scenario()) == 40  # all 40 acknowledged, nothing left in the outbox
    on_topic = read_all(settings, topic)
    assert sorted(on_topic) == sorted(values)  # each exactly once

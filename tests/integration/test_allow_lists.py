"""Write access to Redis is not write access to everything the drainers can reach: the Kafka
relay sends only to ecrm's output topics and the ClickHouse sink inserts only into ecrm's
tables, whatever an outbox entry says; a forged entry is set aside with the reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from streams import keyspace
from streams.app import OUTPUT_TOPICS
from streams.clickhouse import connect, migrate
from streams.outbox import ErasureRequest, erasure_entry, kafka_entry, outbox_entry
from streams.relay import KafkaRelay
from streams.relay_rejects import list_rejects
from streams.settings import Settings
from streams.sink import ClickHouseSink
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def test_the_relay_sends_to_ecrms_output_topics_only(settings: Settings, rds) -> None:
    KAFKA_OUTBOX = keyspace.kafka_outbox(0)
    actions = settings.topic("actions")
    rds.xadd(KAFKA_OUTBOX, kafka_entry(actions, "c1", b'{"action_id": "a1"}'))
    rds.xadd(KAFKA_OUTBOX, kafka_entry(settings.topic("orders"), "c1", b'{"forged": "order"}'))
    rds.xadd(KAFKA_OUTBOX, kafka_entry("__consumer_offsets", "c1", b"forged"))
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        sent.append((topic, key, value))

    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        topics = frozenset(settings.topic(t) for t in OUTPUT_TOPICS)
        relay = KafkaRelay(client, send, stream=KAFKA_OUTBOX, topics=topics)
        try:
            while await client.xlen(KAFKA_OUTBOX):
                await relay.relay_once(block_ms=50)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert sent == [(actions, b"c1", b'{"action_id": "a1"}')]
    rejects = sorted((r.topic, r.reason) for r in list_rejects(rds, [KAFKA_OUTBOX]))
    assert rejects == [
        ("__consumer_offsets", "topic '__consumer_offsets' is not one of ecrm's outputs"),
        (
            settings.topic("orders"),
            f"topic '{settings.topic('orders')}' is not one of ecrm's outputs",
        ),
    ]


def test_the_sink_inserts_into_ecrms_tables_only(settings: Settings, rds, tmp_path: Path) -> None:
    CLICKHOUSE_OUTBOX = keyspace.clickhouse_outbox(settings.partitions - 1)
    forged = [{"version": 999, "name": "999_forged", "applied_at": "2024-01-01T00:00:00Z"}]
    rds.xadd(CLICKHOUSE_OUTBOX, outbox_entry("schema_migrations", forged))
    change = {
        "customer_id": "c1",
        "from_segment": "prospect",
        "to_segment": "general_develop",
        "at": "2024-01-01T00:00:00Z",
        "cause": "event",
        "event_id": "e1",
    }
    rds.xadd(CLICKHOUSE_OUTBOX, outbox_entry("segment_changes", [change]))
    ch = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        migrate(ch)
        sink = ClickHouseSink.from_settings(settings, ch)
        wait_for(lambda: (sink.drain_once(50), sink.pending() == 0)[1], what="the sink drained")
        assert ch.query("SELECT count() AS n FROM schema_migrations WHERE version = 999") == [
            {"n": 0}
        ]
        assert ch.query("SELECT customer_id FROM segment_changes") == [{"customer_id": "c1"}]
    finally:
        ch.close()
    [(_, fields)] = rds.xrange(f"{CLICKHOUSE_OUTBOX}:rejects")
    assert fields[b"reason"] == b"table 'schema_migrations' is not one of ecrm's tables"
    assert orjson.loads(fields[b"rows"]) == forged  # no personal data: kept whole to inspect


def test_an_erasure_waits_for_rows_queued_before_it_that_another_sink_holds(
    settings: Settings, rds, tmp_path: Path
) -> None:
    """Rows of the customer queued before the erasure, in another partition's outbox and still
    being inserted by another sink, must not land after the delete: the erasure waits until
    they are in, then deletes them."""
    from datetime import UTC, datetime

    assert settings.partitions > 1
    home = keyspace.home("gone", settings.partitions)
    other = (home + 1) % settings.partitions
    change = {
        "customer_id": "gone",
        "from_segment": "prospect",
        "to_segment": "general_develop",
        "at": "2024-01-01T00:00:00Z",
        "cause": "event",
        "event_id": "e1",
    }
    rds.xadd(keyspace.clickhouse_outbox(other), outbox_entry("segment_changes", [change]))
    ch = connect(f"chdb://{tmp_path / 'ch'}")
    try:
        migrate(ch)
        slow = ClickHouseSink(
            settings.redis_url, ch, partitions=settings.partitions, consumer="slow", claim_idle_ms=0
        )
        slow.streams[other]._ensure_group()
        # the slow sink has read the entry and not inserted it yet
        assert slow.streams[other]._read_new(10, 0)
        request = ErasureRequest("gone", "er-1", "test", datetime.now(UTC))
        rds.xadd(keyspace.clickhouse_outbox(home), erasure_entry(request).fields)
        quick = ClickHouseSink(
            settings.redis_url, ch, partitions=settings.partitions, consumer="quick"
        )
        quick.drain_once(50)
        assert rds.hget(keyspace.erasures_done(home), "er-1") is None  # it waits
        assert ch.query("SELECT count() AS n FROM segment_changes") == [{"n": 0}]
        # the slow sink finishes its entry, then (claiming what waited) carries out the
        # erasure: the row went in first and was deleted after, never the other way round
        wait_for(
            lambda: (slow.drain_once(50), rds.hexists(keyspace.erasures_done(home), "er-1"))[1],
            what="the erasure carried out",
        )
        report = orjson.loads(rds.hget(keyspace.erasures_done(home), "er-1"))
        assert report["rows"]["segment_changes"] == 1
        assert ch.query("SELECT count() AS n FROM segment_changes") == [{"n": 0}]
        assert ch.query("SELECT rows_deleted FROM erasures") == [{"rows_deleted": 1}]
        assert quick.pending() == 0
        # the quick sink had postponed it: it sees it was taken over and does not redo it
        quick.drain_once(50)
        assert orjson.loads(rds.hget(keyspace.erasures_done(home), "er-1")) == report
        assert (slow.erasures, quick.erasures) == (1, 0)
        slow.close()
        quick.close()
    finally:
        ch.close()

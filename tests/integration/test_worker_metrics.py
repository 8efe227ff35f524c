"""A worker started with ECRM_METRICS_PORT serves Prometheus metrics: messages by topic, dead
letters by reason, batch latency, lag, the sweep's slices, and the workers' shared counters
from Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from streams import keyspace
from streams.outbox import kafka_entry, outbox_entry
from streams.worker_metrics import RedisCounters
from tests.integration.api_server import free_port
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def test_a_workers_metrics_count_what_it_read_and_refused(settings, start_worker, produce, rds):
    rds.zadd(keyspace.wakes(0), {"c-due": 1})  # a customer whose wake time is long past
    port = free_port()
    start_worker(settings.model_copy(update={"metrics_port": port}))
    now = datetime.now(UTC).isoformat()
    order = {
        "event_id": "o-1",
        "customer_id": "c-1",
        "ts": now,
        "order_id": "o-1",
        "status": "paid",
        "amount": "120.00",
    }
    produce("orders", order)
    produce("orders", {**order, "event_id": "o-2", "order_id": "o-2", "amount": "-5"})
    produce.flush()

    def scraped() -> str | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        # the shared counters are committed with the batch, the worker's own just after it
        both = (
            'ecrm_cluster_messages{kind="dead_letters"} 1.0',
            'ecrm_worker_messages_total{topic="orders"} 2.0',
            "ecrm_sweep_customers_woken_total 1.0",
        )
        return text if all(line in text for line in both) else None

    text = wait_for(scraped, timeout=90, what="the worker's metrics")
    assert 'ecrm_worker_dead_letters_total{reason="amount"} 1.0' in text
    assert 'ecrm_cluster_messages{kind="events"} 1.0' in text
    assert "ecrm_worker_batch_seconds_count" in text
    assert 'ecrm_outbox_depth{outbox="clickhouse"}' in text
    assert "ecrm_worker_consumer_lag{partition=" in text
    assert "ecrm_sweep_seconds_count" in text  # the slice that stepped c-due


def test_the_shared_counters_and_outbox_depths_add_up_every_partition(settings, rds):
    rds.hset(keyspace.stats(0), mapping={"events": 3, "dead_letters": 1})
    rds.hset(keyspace.stats(settings.partitions - 1), mapping={"events": 4})
    rds.hset(keyspace.rule_stats(1), mapping={"cart|fired": 2})
    rds.hset(keyspace.rule_stats(2), mapping={"cart|fired": 5})
    for p in (0, settings.partitions - 1):
        rds.xadd(keyspace.clickhouse_outbox(p), outbox_entry("events", [{"event_id": "e"}]))
    rds.xadd(keyspace.kafka_outbox(1), kafka_entry("ecrm.actions", "c", b"{}"))
    rds.zadd(keyspace.wakes(2), {"c-2": 1})

    collector = RedisCounters(settings.redis_url, settings.partitions)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert samples[("ecrm_cluster_messages", (("kind", "events"),))] == 7
    assert samples[("ecrm_cluster_messages", (("kind", "dead_letters"),))] == 1
    rule = ("ecrm_cluster_rule_decisions", (("outcome", "fired"), ("rule", "cart")))
    assert samples[rule] == 7
    assert samples[("ecrm_outbox_depth", (("outbox", "clickhouse"),))] == 2
    assert samples[("ecrm_outbox_depth", (("outbox", "kafka"),))] == 1
    assert samples[("ecrm_customers_waking", (("partition", "2"),))] == 1
    assert samples[("ecrm_customers_waking", (("partition", "0"),))] == 0

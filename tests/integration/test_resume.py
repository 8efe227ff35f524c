"""Redis, not Kafka's committed offset, decides where a worker resumes (streams/resume.py), and
a Redis that goes away holds the worker back without stopping it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from agents.worker import kafka_cluster_id
from streams import keyspace
from streams.embedded import _start_valkey, free_port
from tests.integration.conftest import consumed, stats, wait_for
from tests.integration.test_pipeline import assert_profiles_match, distinct_ids, storefront

pytestmark = pytest.mark.integration


def produce_all(produce: Any, events: list[tuple[str, dict[str, Any]]]) -> None:
    for kind, value in events:
        produce(kind, value)
    produce.flush()


def snapshot(client: redis.Redis) -> dict[bytes, tuple[bytes, int]]:
    """Every key of the database, as DUMP and its TTL."""
    return {k: (client.dump(k), max(client.pttl(k), 0)) for k in client.scan_iter(count=1000)}


def restore(client: redis.Redis, keys: dict[bytes, tuple[bytes, int]]) -> None:
    client.flushdb()
    for key, (dump, ttl) in keys.items():
        client.restore(key, ttl, dump)


def test_a_redis_that_lost_its_last_writes_has_them_read_again(
    settings, start_worker, produce, rds
):
    events = storefront(customers=200, n=5000, seed=5)
    first, then = events[:3000], events[3000:]
    produce_all(produce, first)
    worker = start_worker()
    wait_for(lambda: consumed(rds) >= len(first), timeout=120, what="the first part")
    worker.stop()  # Faust commits its offsets on the way out
    before = snapshot(rds)

    produce_all(produce, then)
    worker = start_worker()
    wait_for(lambda: consumed(rds) >= len(events), timeout=120, what="the second part")
    worker.stop()  # Kafka's committed offsets are now past the second part
    restore(rds, before)  # ... and Redis forgot it: state, offsets, outbox, counters

    worker = start_worker()
    wait_for(lambda: consumed(rds) >= len(events), timeout=120, what="the second part again")
    assert stats(rds)["events"] == distinct_ids(events)
    assert_profiles_match(settings, events)
    assert "Redis's watermark + 1" in worker.log_path.read_text()
    assert worker.proc.poll() is None, worker.log_tail()


def test_a_watermark_past_the_end_of_its_partition_is_reset_and_new_events_applied(
    settings, start_worker, produce, rds
):
    events = storefront(customers=300, n=3000, seed=6)
    first, then = events[:1000], events[1000:]
    produce_all(produce, first)
    worker = start_worker()
    wait_for(lambda: consumed(rds) >= len(first), timeout=120, what="the first part")
    worker.stop()
    # as if the topic had been recreated: Redis remembers offsets it never had
    key = keyspace.offset(kafka_cluster_id(settings.kafka_bootstrap), settings.topic("cart"), 0)
    assert rds.get(key) is not None
    rds.set(key, 1_000_000)

    produce_all(produce, then)
    worker = start_worker()
    wait_for(lambda: stats(rds)["events"] >= distinct_ids(events), timeout=120, what="every event")
    assert stats(rds)["events"] == distinct_ids(events)
    assert stats(rds)["watermark_resets"] == 1
    assert_profiles_match(settings, events)
    log = worker.log_path.read_text()
    assert f"{settings.topic('cart')}[0]: Redis's watermark 1000000 is past" in log
    assert worker.proc.poll() is None, worker.log_tail()


def test_a_worker_waits_out_a_redis_restart_and_applies_everything_once(
    settings, start_worker, produce, tmp_path: Path
):
    valkey_dir, port = tmp_path / "valkey", free_port()
    valkey = _start_valkey(valkey_dir, port)
    s = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        events = storefront(customers=300, n=12000, seed=7)
        produce_all(produce, events)
        worker = start_worker(s)
        wait_for(lambda: consumed(client) > 1000, timeout=120, what="a first part")
        valkey.stop()
        wait_for(
            lambda: "waiting for Redis" in worker.log_path.read_text(),
            timeout=60,
            what="the worker to wait for Redis",
        )
        valkey = _start_valkey(valkey_dir, port)
        wait_for(lambda: consumed(client) >= len(events), timeout=180, what="every event")
        assert worker.proc.poll() is None, worker.log_tail()
        assert stats(client)["events"] == distinct_ids(events)
        assert_profiles_match(s, events)
    finally:
        client.close()
        valkey.stop()

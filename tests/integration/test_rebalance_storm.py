"""A rebalance storm: workers are killed and started every few seconds while traffic flows,
and still every profile is what the events make it, every action is sent once and ClickHouse
holds every event once."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.counters import kafka_outboxes, stream_lengths
from streams.settings import Settings
from streams.topics import contract_topics, ensure_topics
from tests.integration.conftest import WorkerProcess, consumed, stats, wait_for
from tests.integration.test_pipeline import (
    assert_profiles_match,
    distinct_ids,
    sink_all,
    storefront,
)

pytestmark = pytest.mark.integration

THANKS_FOR_EVERY_ORDER = """
rules:
  - id: order-thanks
    when: {event: orders, where: {status: paid}}
    action: {kind: points, params: {points: 10, template: thanks}}
"""
STORM_S = 120
CHANGE_EVERY_S = 4
#: a backlog waiting when the workers start, so that rebalances find full batches in flight,
#: then steady traffic through the storm
BACKLOG, STEADY = 30_000, 24_000


def thanks_id(customer_id: str, event_id: str) -> str:
    """docs/rules.md: an event rule's action id is SHA-256("rule|customer|event:<id>")."""
    return hashlib.sha256(f"order-thanks|{customer_id}|event:{event_id}".encode()).hexdigest()[:32]


def produce_steadily(s: Settings, events: list[tuple[str, dict[str, Any]]], seconds: float) -> None:
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=5)
    t0 = time.monotonic()
    for i, (kind, value) in enumerate(events):
        key = value["customer_id"].encode()
        producer.send(s.topic(kind), key=key, value=orjson.dumps(value))
        ahead = t0 + seconds * (i + 1) / len(events) - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    producer.flush()
    producer.close()


def actions_on_topic(s: Settings, want: int) -> list[dict[str, Any]]:
    """Every action on the topic: read until `want` came, then a second more for extras."""
    consumer = KafkaConsumer(
        s.topic("actions"), bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest"
    )
    got: list[dict[str, Any]] = []
    deadline, settled = time.monotonic() + 60, None
    try:
        while time.monotonic() < (settled or deadline):
            for records in consumer.poll(timeout_ms=100).values():
                got.extend(orjson.loads(r.value) for r in records)
            if settled is None and len(got) >= want:
                settled = time.monotonic() + 1
    finally:
        consumer.close()
    return got


def test_workers_killed_and_started_every_few_seconds_lose_nothing_and_send_each_action_once(
    settings, rds, tmp_path: Path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(THANKS_FOR_EVERY_ORDER)
    # three times the partitions of the other tests: more to move at every rebalance
    s = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}storm.",
            "partitions": 12,
            "rules_file": rules,
        }
    )
    ensure_topics(s.kafka_bootstrap, list(contract_topics(s).values()), s.partitions)
    events = storefront(customers=400, n=BACKLOG + STEADY, seed=7, span=timedelta(hours=1))
    backlog, steady = events[:BACKLOG], events[BACKLOG:]
    produce_steadily(s, backlog, seconds=0)
    rng = random.Random(11)
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        started.append(WorkerProcess(s, tmp_path / f"worker-{len(started) + 1}.log"))
        return started[-1]

    live = [start() for _ in range(3)]
    traffic = threading.Thread(target=produce_steadily, args=(s, steady, STORM_S))
    try:
        traffic.start()
        handled_at_kills: list[int] = []
        starts = 0
        storm_end = time.monotonic() + STORM_S
        while time.monotonic() < storm_end:
            time.sleep(CHANGE_EVERY_S)
            if len(live) >= 3:
                handled_at_kills.append(consumed(rds))
                live.pop(rng.randrange(len(live))).kill()
            else:
                live.append(start())
                starts += 1
        traffic.join()
        assert len(handled_at_kills) >= 5 and starts >= 5, (handled_at_kills, starts)
        # kills that came while workers were busy, not before they started or after the work
        busy = [n for n in handled_at_kills if 0 < n < len(events)]
        assert len(busy) >= 3, handled_at_kills

        wait_for(
            lambda: consumed(rds) >= len(events),
            timeout=120,
            what="every event handled after the storm",
        )
        assert stats(rds)["events"] == distinct_ids(events)
        assert_profiles_match(s, events)

        outboxes = kafka_outboxes(s.partitions)
        wait_for(lambda: stream_lengths(rds, outboxes) == 0, timeout=60, what="the relay drained")
        expected = {
            thanks_id(v["customer_id"], v["event_id"])
            for kind, v in events
            if kind == "orders" and v["status"] == "paid"
        }
        sent = Counter(a["action_id"] for a in actions_on_topic(s, len(expected)))
        assert [action for action, n in sent.items() if n > 1] == []
        assert set(sent) == expected

        # and ClickHouse holds each event once: as many rows as distinct event ids
        ch = sink_all(s)
        try:
            rows = ch.query("SELECT count() AS n, uniqExact(event_id) AS ids FROM events")
        finally:
            ch.close()
        assert rows == [{"n": distinct_ids(events), "ids": distinct_ids(events)}]
    finally:
        for worker in started:
            worker.stop()

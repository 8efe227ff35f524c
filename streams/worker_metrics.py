"""A worker's Prometheus metrics, served on ECRM_METRICS_PORT (off when unset).

What this process sees is counted here as it happens: messages read by topic, dead letters by
reason, how long each batch took, how far each partition lags. What the workers already count
together in Redis (streams/keyspace.py: `stats(p)`, `rule_stats(p)`, summed over the
partitions by streams/counters.py), the outbox depths (every partition's outboxes together)
and the customers waking are read from Redis at scrape time, so they are the same from every
worker (`ecrm_cluster_*`: take one worker's value, do not sum them).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams import counters, keyspace
from streams.redis_client import sync_client

log = logging.getLogger(__name__)
_NUMBERS = re.compile(r"\d+")
#: a go of the sweep aims at ~50 ms (agents/profile/sweep.py); one over this is logged
SLOW_SLICE_S = 0.2


def dead_letter_reason(error: str) -> str:
    """A bounded label for a dead letter's reason: the field it names (`amount`, `ts`,
    `items.*.qty`) or `message`, never the values in it."""
    where = error.split(":", 1)[0].strip() or "message"
    return _NUMBERS.sub("*", where)[:40]


class RedisCounters(Collector):
    """The workers' shared counters, outbox depths and waking customers, read at scrape time."""

    def __init__(self, redis_url: str, partitions: int, cluster: bool = False) -> None:
        self.client = sync_client(redis_url, cluster, socket_timeout=2)
        self.partitions = partitions

    def collect(self) -> Iterator[Any]:
        try:
            stats = counters.stats(self.client, self.partitions)
            rules = counters.rule_stats(self.client, self.partitions)
            depths = {
                "clickhouse": counters.stream_lengths(
                    self.client, counters.clickhouse_outboxes(self.partitions)
                ),
                "kafka": counters.stream_lengths(
                    self.client, counters.kafka_outboxes(self.partitions)
                ),
            }
            now_ms = int(time.time() * 1000)
            pipe = self.client.pipeline(transaction=False)
            for p in range(self.partitions):
                pipe.zcount(keyspace.wakes(p), "-inf", now_ms)
            waking = [int(n) for n in pipe.execute()]
        except redis.RedisError as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
            return
        handled = GaugeMetricFamily(
            "ecrm_cluster_messages",
            "Input messages all workers handled, by kind (events, duplicates, dead_letters, "
            "poison, batches, segment_changes, identity_merges)",
            labels=["kind"],
        )
        for name, value in stats.items():
            handled.add_metric([name], value)
        yield handled
        decisions = GaugeMetricFamily(
            "ecrm_cluster_rule_decisions",
            "Rule decisions by rule and outcome (suppressed:reason)",
            labels=["rule", "outcome"],
        )
        for name, value in rules.items():
            rule_id, _, outcome = name.partition("|")
            decisions.add_metric([rule_id, outcome], value)
        yield decisions
        outbox = GaugeMetricFamily(
            "ecrm_outbox_depth", "Entries waiting in an outbox", labels=["outbox"]
        )
        for name, depth in depths.items():
            outbox.add_metric([name], depth)
        yield outbox
        wake = GaugeMetricFamily(
            "ecrm_customers_waking",
            "Customers whose wake time (a rule's wait, a deferred action, R ageing) has come",
            labels=["partition"],
        )
        for p, n in enumerate(waking):
            wake.add_metric([str(p)], n)
        yield wake


class WorkerMetrics:
    """This worker's counters; `serve(port)` exposes them with the shared ones."""

    def __init__(self, redis_url: str, partitions: int, cluster: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "ecrm_worker_messages",
            "Input messages read, by topic (rate() gives events a second)",
            ["topic"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "ecrm_worker_dead_letters",
            "Messages refused at decoding, by the field their reason names",
            ["reason"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "ecrm_worker_batch_seconds",
            "Time to apply one fetched batch (Redis unit, rules, outbox)",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.sweep_seconds = Histogram(
            "ecrm_sweep_seconds",
            "Time one go of the sweep held the keeper (a slice of each partition with "
            "customers due, one Redis unit each): the longest an event batch waits for it",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5, 1, 2.5),
        )
        self.customers_woken = Counter(
            "ecrm_sweep_customers_woken",
            "Customers the sweep stepped because their wake time had come",
            registry=self.registry,
        )
        self.lag = Gauge(
            "ecrm_worker_consumer_lag",
            "Messages between the last one read and the partition's end",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.registry.register(RedisCounters(redis_url, partitions, cluster))

    def swept(self, seconds: float, customers: int) -> None:
        """One go of the sweep at the keeper's lock (agents/profile/sweep.py): how long,
        how many customers."""
        self.sweep_seconds.observe(seconds)
        self.customers_woken.inc(customers)
        if seconds > SLOW_SLICE_S:
            log.warning(
                "the sweep held the keeper %.0f ms (%d customers): event batches waited",
                seconds * 1000,
                customers,
            )

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

"""The shop's counters, summed over the partitions that keep them (streams/keyspace.py).

Units count into their own partition's hash (`stats(p)`, `rule_stats(p)`) so that a counter
moves in the same MULTI as what it counts, in the unit's slot. Readers add them up here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from streams import keyspace


def totals(
    client: Any, partitions: int, name: Callable[[int], str] = keyspace.stats
) -> Counter[str]:
    """field -> the sum over every partition's hash `name(p)` (`client`: a synchronous
    Redis or RedisCluster client)."""
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.hgetall(name(p))
    out: Counter[str] = Counter()
    for found in pipe.execute():
        for field, value in found.items():
            out[field.decode() if isinstance(field, bytes) else field] += int(value)
    return out


def stats(client: Any, partitions: int) -> Counter[str]:
    """The input counters (`keyspace.stats`) of all partitions."""
    return totals(client, partitions)


def rule_stats(client: Any, partitions: int) -> Counter[str]:
    """The rule-decision counters (`keyspace.rule_stats`) of all partitions."""
    return totals(client, partitions, keyspace.rule_stats)


def stream_lengths(client: Any, streams: Iterable[str]) -> int:
    """Entries in these streams together (e.g. every partition's ClickHouse outbox)."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
    return sum(int(n) for n in pipe.execute())


def clickhouse_outboxes(partitions: int) -> list[str]:
    return [keyspace.clickhouse_outbox(p) for p in range(partitions)]


def kafka_outboxes(partitions: int) -> list[str]:
    return [keyspace.kafka_outbox(p) for p in range(partitions)]


def messages_handled(client: Any, partitions: int) -> int:
    """Input messages the workers have dealt with: applied, duplicate, dead-lettered or
    forwarded to the customer's home partition (`client` is a synchronous Redis client; for
    progress bars and tests)."""
    counts = stats(client, partitions)
    return sum(counts[name] for name in ("events", "duplicates", "dead_letters", "forwarded"))

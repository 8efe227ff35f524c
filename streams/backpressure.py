"""Back-pressure from the ClickHouse outbox to the worker's fetching.

While ClickHouse is down or slow, every batch the worker applies still adds rows to the
ClickHouse outbox in Redis; left alone it grows until Redis is out of memory. So the worker
watches the outbox's depth and stops fetching its input topics above a limit
(`ECRM_CLICKHOUSE_OUTBOX_MAX_ROWS`), and fetches again once the sink has drained it below
half: Kafka keeps the backlog meanwhile, which is what it is for. Timers and the relay go on
(the sweep adds rows too, but few and bounded by the customers due).

`OutboxGate` is the decision, pure; `outbox_depth` reads what it needs from Redis: every
partition's outbox length and counters (streams/keyspace.py), one key per command so that
it works the same on a Redis Cluster.

Redis itself runs with a `maxmemory` and the `noeviction` policy (compose and embedded):
full, it refuses writes instead of dropping state. `memory_use` says how close it is, and the
worker warns from `MEMORY_WARN_SHARE` of the limit on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import redis

from streams import keyspace
from streams.outbox import QUEUED_ENTRIES, QUEUED_ROWS, depth_from

Change = Literal["hold", "release"]

#: Share of Redis's maxmemory from which the worker warns (and reports it in its stats).
MEMORY_WARN_SHARE = 0.8


@dataclass
class OutboxGate:
    """Hold fetching above `max_rows`; release below half of it (hysteresis, so a depth
    hovering at the limit does not flap the consumer)."""

    max_rows: int
    holding: bool = False

    def update(self, depth: int) -> Change | None:
        """The change to make now that the outbox holds `depth` rows, if any."""
        if not self.holding and depth > self.max_rows:
            self.holding = True
            return "hold"
        if self.holding and depth < self.max_rows / 2:
            self.holding = False
            return "release"
        return None


async def outbox_depth(client: Any, partitions: int) -> int:
    """Rows waiting in every partition's ClickHouse outbox (an estimate per partition: see
    `outbox.depth_from`), summed. `client`: an async Redis or RedisCluster client."""
    return sum(await asyncio.gather(*(partition_depth(client, p) for p in range(partitions))))


async def partition_depth(client: Any, partition: int) -> int:
    """Rows waiting in one partition's ClickHouse outbox (an estimate)."""
    pending, (entries, rows) = await asyncio.gather(
        client.xlen(keyspace.clickhouse_outbox(partition)),
        client.hmget(keyspace.stats(partition), [QUEUED_ENTRIES, QUEUED_ROWS]),
    )
    return depth_from(int(pending or 0), int(entries or 0), int(rows or 0))


async def memory_use(client: Any) -> float | None:
    """Redis's used memory as a share of its maxmemory; None when it has no limit (or when
    this user may not ask: INFO is in the worker's ACL, deploy/redis/users.acl.template)."""
    try:
        info = await client.info("memory")
    except redis.ResponseError:
        return None
    limit = int(info.get("maxmemory") or 0)
    if limit <= 0:
        return None
    return int(info.get("used_memory") or 0) / limit

"""The outbox gate: hold fetching above the limit, release below half, never flap."""

from __future__ import annotations

import asyncio

from streams import keyspace
from streams.backpressure import OutboxGate, outbox_depth
from streams.outbox import QUEUED_ENTRIES, QUEUED_ROWS, clickhouse_entry, depth_from, kafka_message
from streams.redis_store import Hincrby, Unit, Xadd


def test_the_gate_holds_above_the_limit_and_releases_below_half() -> None:
    gate = OutboxGate(max_rows=1000)
    assert gate.update(1000) is None  # at the limit: still fetching
    assert gate.update(1001) == "hold"
    assert gate.holding
    assert gate.update(5000) is None  # already held
    assert gate.update(700) is None  # drained, but not below half: no flapping
    assert gate.update(499) == "release"
    assert not gate.holding
    assert gate.update(900) is None


def test_the_depth_is_the_entries_left_times_the_mean_rows_an_entry_carried() -> None:
    assert depth_from(pending_entries=0, queued_entries=10, queued_rows=500) == 0
    assert depth_from(pending_entries=4, queued_entries=10, queued_rows=500) == 200
    assert depth_from(pending_entries=3, queued_entries=0, queued_rows=0) == 0


def test_a_unit_counts_the_rows_it_queues_for_clickhouse_and_not_kafka_messages() -> None:
    unit = Unit("kafka", partition=3)
    rows = [{"event_id": str(i)} for i in range(3)]
    unit.add(clickhouse_entry("events", rows))
    unit.add(kafka_message("ecrm.actions", "alice", b"coupon"))
    ops = unit.ops()
    assert isinstance(ops[0], Xadd)
    assert ops[1:3] == [
        Hincrby(keyspace.stats(3), "clickhouse_outbox_entries", 1),
        Hincrby(keyspace.stats(3), "clickhouse_outbox_rows", 3),
    ]
    assert isinstance(ops[3], Xadd) and len(ops) == 4


class Counters:
    """What `outbox_depth` reads, per key: outbox lengths and counter hashes."""

    def __init__(self, lengths: dict[str, int], hashes: dict[str, dict[str, int]]) -> None:
        self.lengths, self.hashes = lengths, hashes

    async def xlen(self, name: str) -> int:
        return self.lengths.get(name, 0)

    async def hmget(self, name: str, fields: list[str]) -> list[int | None]:
        return [self.hashes.get(name, {}).get(f) for f in fields]


def test_the_depth_adds_up_every_partitions_outbox_each_by_its_own_mean_rows() -> None:
    redis = Counters(
        lengths={keyspace.clickhouse_outbox(0): 2, keyspace.clickhouse_outbox(1): 1},
        hashes={
            keyspace.stats(0): {QUEUED_ENTRIES: 10, QUEUED_ROWS: 1000},  # 100 rows an entry
            keyspace.stats(1): {QUEUED_ENTRIES: 4, QUEUED_ROWS: 40},  # 10 rows an entry
            keyspace.stats(2): {QUEUED_ENTRIES: 5, QUEUED_ROWS: 50},  # drained
        },
    )
    assert asyncio.run(outbox_depth(redis, partitions=3)) == 2 * 100 + 1 * 10
    assert asyncio.run(outbox_depth(redis, partitions=1)) == 200

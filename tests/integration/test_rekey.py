"""A Redis written by an ecrm from before the partition tags is moved to today's names by
the first worker that starts on it: profiles, rule state, erasures, watermarks, counters and
undelivered outbox entries are all still there, under the new names."""

from __future__ import annotations

import orjson
import pytest
import redis

from agents.rules.budget_booking import SCALE
from streams import keyspace
from streams.rekey import LAYOUT, upgrade
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_an_untagged_redis_is_moved_once_and_nothing_is_lost(
    settings: Settings, rds: redis.Redis
) -> None:
    n = settings.partitions
    rds.set("ecrm:profiles:alice", b'{"v":1,"customer_id":"alice"}')
    rds.set("ecrm:rules:alice", b'{"customer_id":"alice"}')
    rds.set("ecrm:erased:tok123", b'{"erasure_id":"e1"}')
    rds.zadd("ecrm:due:2", {"alice": 1000})
    rds.set("ecrm:offset:kafka:ecrm.orders:3", b"41")
    rds.hset("ecrm:stats", mapping={"events": 7, "duplicates": 1})
    rds.hset("ecrm:stats:rules", "welcome|fired", 2)
    rds.xadd("ecrm:outbox", {"table": b"events", "rows": b"[]"})
    rds.xgroup_create("ecrm:outbox", "sink", id="0")
    rds.set(
        "ecrm:budget:win-back:2026-11-30",
        orjson.dumps({"count": 3, "value": "90.50"}),
        px=3_600_000,
    )
    rds.set("other-program:key", b"untouched")

    moved = upgrade(rds, n)

    assert sum(moved.values()) == 9
    assert rds.get(keyspace.profile("alice", n)) == b'{"v":1,"customer_id":"alice"}'
    assert rds.get(keyspace.rule_state("alice", n)) == b'{"customer_id":"alice"}'
    assert all(rds.get(keyspace.erased("tok123", p)) for p in range(n))
    assert rds.zscore(keyspace.wakes(2), "alice") == 1000
    assert rds.get(keyspace.offset("kafka", "ecrm.orders", 3)) == b"41"
    assert rds.hget(keyspace.stats(0), "events") == b"7"
    assert rds.hget(keyspace.rule_stats(0), "welcome|fired") == b"2"
    assert rds.xlen(keyspace.clickhouse_outbox(0)) == 1
    assert rds.xinfo_groups(keyspace.clickhouse_outbox(0))[0]["name"] == b"sink"
    budget = rds.hgetall("ecrm:budget:win-back:2026-11-30")
    assert budget == {b"count": b"3", b"value": str(int(90.5 * SCALE)).encode()}
    assert rds.pttl("ecrm:budget:win-back:2026-11-30") > 0
    assert rds.get("other-program:key") == b"untouched"
    assert not [k for k in rds.scan_iter(match="ecrm:profiles:*")]
    assert rds.get(LAYOUT) == b"2"
    assert upgrade(rds, n) == {}  # once

"""What every store kind promises the keeper, written once and run against each (`store_kind`):
a unit commits all or nothing, a writer that changed a watched key makes it conflict, source
offsets already applied are recognised, a table read or write outside a unit is refused, and
what a unit will commit can be read as plain operations before it is committed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from streams import keyspace
from streams.app import EcrmApp, create_app
from streams.outbox import kafka_message
from streams.redis_store import Hincrby, OutsideUnit, Set, UnitConflict, Xadd, Zadd
from streams.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(params=["standalone"])
def store_kind(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The store kinds ecrm runs on (standalone Valkey today; Redis Cluster joins here)."""
    return settings


@pytest.fixture
def app(store_kind: Settings) -> EcrmApp:
    return create_app(store_kind)


def run(app: EcrmApp, step: Callable[[], Awaitable[Any]]) -> Any:
    """One step on the store's own event loop, its connections closed after."""

    async def go() -> Any:
        try:
            return await step()
        finally:
            await app.store.stop()

    return asyncio.run(go())


def test_a_unit_commits_its_values_watermarks_and_side_effects_together(app, rds) -> None:
    async def step() -> list[Any]:
        async with app.store.unit([b"alice"], [("orders", 0)]) as unit:
            app.profiles[b"alice"] = b'{"v": 1}'
            unit.advance("orders", 0, 41)
            unit.add(kafka_message("t.actions", "alice", b"coupon"))
            unit.zadd(keyspace.due(0), "alice", 1000)
            unit.hincrby(keyspace.STATS, "events", 1)
            ops = unit.ops()
        return ops

    ops = run(app, step)
    assert ops == [
        Set(keyspace.profile("alice"), b'{"v": 1}'),
        Set(keyspace.offset("kafka", "orders", 0), b"41"),
        Xadd(keyspace.KAFKA_OUTBOX, {"topic": b"t.actions", "value": b"coupon", "key": b"alice"}),
        Zadd(keyspace.due(0), "alice", 1000),
        Hincrby(keyspace.STATS, "events", 1),
    ]
    assert rds.get(keyspace.profile("alice")) == b'{"v": 1}'
    assert rds.get(keyspace.offset("kafka", "orders", 0)) == b"41"
    assert rds.xlen(keyspace.KAFKA_OUTBOX) == 1
    assert rds.zscore(keyspace.due(0), "alice") == 1000


def test_a_unit_that_raises_commits_nothing(app, rds) -> None:
    async def step() -> None:
        async with app.store.unit([b"bob"], [("orders", 0)]) as unit:
            app.profiles[b"bob"] = b"half-done"
            unit.advance("orders", 0, 7)
            unit.hincrby(keyspace.STATS, "events", 1)
            raise RuntimeError("the worker died mid-batch")

    with pytest.raises(RuntimeError):
        run(app, step)
    assert rds.get(keyspace.profile("bob")) is None
    assert rds.get(keyspace.offset("kafka", "orders", 0)) is None
    assert rds.hget(keyspace.STATS, "events") is None


def test_a_value_written_with_a_lifetime_expires_and_one_without_stays(app, rds) -> None:
    from datetime import date

    day = keyspace.budget("win-back", date(2026, 11, 30))

    async def step() -> list[Any]:
        async with app.store.unit([], [], [day]) as unit:
            unit.put(day, b'{"count": 3}', ttl_s=3600)
            app.profiles[b"dave"] = b"{}"
            return unit.ops()

    ops = run(app, step)
    assert Set(day, b'{"count": 3}', 3_600_000) in ops
    assert Set(keyspace.profile("dave"), b"{}") in ops
    assert 3_500_000 < rds.pttl(day) <= 3_600_000
    assert rds.pttl(keyspace.profile("dave")) == -1  # state never expires


def test_another_writer_between_read_and_commit_makes_the_unit_conflict(app, rds) -> None:
    rds.set(keyspace.profile("carol"), b"v1")

    async def step() -> None:
        async with app.store.unit([b"carol"]) as unit:
            assert app.profiles[b"carol"] == b"v1"
            rds.set(keyspace.profile("carol"), b"v2 by another worker")
            app.profiles[b"carol"] = b"v3"
            unit.hincrby(keyspace.STATS, "events", 1)

    with pytest.raises(UnitConflict):
        run(app, step)
    assert rds.get(keyspace.profile("carol")) == b"v2 by another worker"
    assert rds.hget(keyspace.STATS, "events") is None


def test_offsets_at_or_below_the_watermark_are_recognised_as_applied(app, rds) -> None:
    rds.set(keyspace.offset("kafka", "cart", 2), 10)

    async def step() -> list[bool]:
        async with app.store.unit([], [("cart", 2)]) as unit:
            return [unit.applied("cart", 2, o) for o in (9, 10, 11)] + [unit.applied("cart", 3, 0)]

    assert run(app, step) == [True, True, False, False]


def test_a_table_read_or_write_outside_a_unit_is_refused(app) -> None:
    with pytest.raises(OutsideUnit, match="outside a unit"):
        app.profiles[b"dave"] = b"lost"
    with pytest.raises(OutsideUnit, match="outside a unit"):
        _ = app.profiles.get(b"dave")


def test_a_unit_reads_only_what_it_watched(app, rds: redis.Redis) -> None:
    async def step() -> None:
        async with app.store.unit([b"erin"]) as unit:
            unit.get(keyspace.rule_state("someone else"))

    with pytest.raises(Exception, match="not read by this unit"):
        run(app, step)

"""What every store kind promises the keeper, written once and run against each (`store_kind`):
a unit commits all or nothing, a writer that changed a watched key makes it conflict, source
offsets already applied are recognised, a table read or write outside a unit is refused, and
what a unit will commit can be read as plain operations before it is committed. The kinds: one
Valkey server, and a Redis Cluster of three masters with a replica each, where every unit's
keys must stay in its partition's slot (streams/keyspace.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from redis.cluster import key_slot

from agents.rules.budget_booking import Booking, BudgetBooker, BudgetRefused, read_spent
from schemas.rules import RuleSet
from streams import keyspace
from streams.app import EcrmApp, create_app
from streams.outbox import kafka_message
from streams.redis_client import SyncRedis
from streams.redis_store import Hincrby, OutsideUnit, Set, UnitConflict, Xadd, Zadd
from streams.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(params=["standalone", "cluster"])
def store_kind(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The store kinds ecrm runs on: one server, or a Redis Cluster (`ECRM_REDIS_CLUSTER`)."""
    if request.param == "standalone":
        return settings
    cluster = request.getfixturevalue("valkey_cluster")
    on_cluster = settings.model_copy(update={"redis_url": cluster.url, "partitions": 8})
    with on_cluster.redis() as c:
        c.flushall()  # every master
    return on_cluster


@pytest.fixture
def app(store_kind: Settings) -> EcrmApp:
    return create_app(store_kind)


@pytest.fixture
def client(store_kind: Settings) -> Iterator[SyncRedis]:
    c = store_kind.redis()
    yield c
    c.close()


def run(app: EcrmApp, step: Callable[[], Awaitable[Any]]) -> Any:
    """One step on the store's own event loop, its connections closed after."""

    async def go() -> Any:
        try:
            return await step()
        finally:
            await app.store.stop()

    return asyncio.run(go())


def home(app: EcrmApp, customer_id: str) -> int:
    return keyspace.home(customer_id, app.settings.partitions)


def test_a_unit_commits_its_values_watermarks_and_side_effects_together(app, client) -> None:
    p, n = home(app, "alice"), app.settings.partitions

    async def step() -> list[Any]:
        async with app.store.unit([b"alice"], [("orders", p)], partition=p) as unit:
            app.profiles[b"alice"] = b'{"v": 1}'
            unit.advance("orders", p, 41)
            unit.add(kafka_message("t.actions", "alice", b"coupon"))
            unit.zadd(keyspace.wakes(p), "alice", 1000)
            unit.count("events")
            ops = unit.ops()
        return ops

    ops = run(app, step)
    assert ops == [
        Set(keyspace.profile("alice", n), b'{"v": 1}'),
        Set(keyspace.offset("kafka", "orders", p), b"41"),
        Xadd(
            keyspace.kafka_outbox(p), {"topic": b"t.actions", "value": b"coupon", "key": b"alice"}
        ),
        Zadd(keyspace.wakes(p), "alice", 1000),
        Hincrby(keyspace.stats(p), "events", 1),
    ]
    assert len({key_slot(op.key.encode()) for op in ops if isinstance(op, Set)}) == 1
    assert client.get(keyspace.profile("alice", n)) == b'{"v": 1}'
    assert client.get(keyspace.offset("kafka", "orders", p)) == b"41"
    assert client.xlen(keyspace.kafka_outbox(p)) == 1
    assert client.zscore(keyspace.wakes(p), "alice") == 1000


def test_a_unit_that_raises_commits_nothing(app, client) -> None:
    p, n = home(app, "bob"), app.settings.partitions

    async def step() -> None:
        async with app.store.unit([b"bob"], [("orders", p)], partition=p) as unit:
            app.profiles[b"bob"] = b"half-done"
            unit.advance("orders", p, 7)
            unit.count("events")
            raise RuntimeError("the worker died mid-batch")

    with pytest.raises(RuntimeError):
        run(app, step)
    assert client.get(keyspace.profile("bob", n)) is None
    assert client.get(keyspace.offset("kafka", "orders", p)) is None
    assert client.hget(keyspace.stats(p), "events") is None


def test_another_writer_between_read_and_commit_makes_the_unit_conflict(app, client) -> None:
    p, n = home(app, "carol"), app.settings.partitions
    client.set(keyspace.profile("carol", n), b"v1")

    async def step() -> None:
        async with app.store.unit([b"carol"], partition=p) as unit:
            assert app.profiles[b"carol"] == b"v1"
            client.set(keyspace.profile("carol", n), b"v2 by another worker")
            app.profiles[b"carol"] = b"v3"
            unit.count("events")

    with pytest.raises(UnitConflict):
        run(app, step)
    assert client.get(keyspace.profile("carol", n)) == b"v2 by another worker"
    assert client.hget(keyspace.stats(p), "events") is None


def test_offsets_at_or_below_the_watermark_are_recognised_as_applied(app, client) -> None:
    client.set(keyspace.offset("kafka", "cart", 2), 10)

    async def step() -> list[bool]:
        async with app.store.unit([], [("cart", 2)], partition=2) as unit:
            return [unit.applied("cart", 2, o) for o in (9, 10, 11)] + [unit.applied("cart", 3, 0)]

    assert run(app, step) == [True, True, False, False]


def test_a_table_read_or_write_outside_a_unit_is_refused(app) -> None:
    with pytest.raises(OutsideUnit, match="outside a unit"):
        app.profiles[b"dave"] = b"lost"
    with pytest.raises(OutsideUnit, match="outside a unit"):
        _ = app.profiles.get(b"dave")


def test_a_unit_reads_only_what_it_watched(app) -> None:
    p = home(app, "erin")

    async def step() -> None:
        async with app.store.unit([b"erin"], partition=p) as unit:
            unit.get(keyspace.rule_state("someone else", app.settings.partitions))

    with pytest.raises(Exception, match="not read by this unit"):
        run(app, step)


def test_every_partition_commits_on_its_own_slot(app, client) -> None:
    """One unit per partition, each with its customers at home: all of them commit (on a
    cluster they land on different masters), and the counters add up across partitions."""
    n = app.settings.partitions
    by_home: dict[int, list[str]] = {}
    for i in range(200):
        by_home.setdefault(keyspace.home(f"c{i}", n), []).append(f"c{i}")

    async def step() -> None:
        for p, customers in sorted(by_home.items()):
            async with app.store.unit([c.encode() for c in customers], partition=p) as unit:
                for c in customers:
                    app.profiles[c.encode()] = c.encode()
                unit.count("events", len(customers))

    run(app, step)
    assert len(by_home) == n
    assert sum(int(client.hget(keyspace.stats(p), "events") or 0) for p in range(n)) == 200
    assert all(client.get(keyspace.profile(f"c{i}", n)) == f"c{i}".encode() for i in range(200))


# -- budgets, booked across slots (agents/rules/budget_booking.py) ------------------------------

RULES = RuleSet.model_validate(
    {
        "rules": [
            {
                "id": "win-back",
                "when": {"segment_change": {"to": ["important_keep"]}},
                "budget": {"per_day": 3, "value_per_day": 50},
                "action": {
                    "kind": "coupon",
                    "channel": "wechat",
                    "params": {"value": 20, "valid_for": "7d"},
                },
            }
        ]
    }
)
DAY = date(2026, 11, 30)


def book(app: EcrmApp, *moves: Booking) -> BudgetBooker:
    booker = BudgetBooker(app.store.client, RULES, {("win-back", DAY): list(moves)}, 3600)
    run(app, booker.book)
    return booker


def spent(app: EcrmApp) -> tuple[int, Decimal]:
    got = run(app, lambda: read_spent(app.store.client, RULES, [DAY])).get(("win-back", DAY))
    return (got.count, got.value) if got else (0, Decimal(0))


def test_a_budget_is_booked_once_per_move_and_never_past_its_cap(app, client) -> None:
    book(app, Booking("a1:1", 1, Decimal(20)), Booking("a2:1", 1, Decimal(20)))
    assert spent(app) == (2, Decimal(40))
    book(app, Booking("a1:1", 1, Decimal(20)))  # a unit redone after a crash: counted once
    assert spent(app) == (2, Decimal(40))
    with pytest.raises(BudgetRefused):  # 60 > value_per_day 50: none of it is booked
        book(app, Booking("a3:1", 1, Decimal(20)))
    assert spent(app) == (2, Decimal(40))
    book(app, Booking("a2:-1", -1, Decimal(-20)), Booking("a3:1", 1, Decimal(20)))
    assert spent(app) == (2, Decimal(40))  # a withdrawn delivery made room for another
    assert 0 < client.pttl(keyspace.budget("win-back", DAY)) <= 3_600_000


def test_a_unit_that_does_not_commit_gives_its_booking_back(app, client) -> None:
    p, n = home(app, "fay"), app.settings.partitions
    client.set(keyspace.profile("fay", n), b"v1")
    booker = BudgetBooker(
        app.store.client, RULES, {("win-back", DAY): [Booking("f1:1", 1, Decimal(20))]}, 3600
    )

    async def step() -> None:
        async with app.store.unit([b"fay"], partition=p) as unit:
            unit.before_commit.append(booker.book)
            unit.on_abort.append(booker.unbook)
            client.set(keyspace.profile("fay", n), b"v2 by another worker")
            app.profiles[b"fay"] = b"v3"

    with pytest.raises(UnitConflict):
        run(app, step)
    assert spent(app) == (0, Decimal(0))
